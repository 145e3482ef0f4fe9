"""The firing logic in the engine under an injected clock: catch-up (window, ALL, LATEST),
overlap (SKIP, ALLOW, BUFFER_ONE), jitter, calendar corners, bounds, the timer heap,
pause and resume, a new spec, trigger and backfill."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dispatchd.engine import Engine, EngineLimits, EngineObserver, JobState
from dispatchd.engine.errors import AlreadyExists, InvalidArgument
from dispatchd.engine.model import NewJob
from dispatchd.engine.schedule_spec import CompiledSpec, SpecRecord
from dispatchd.engine.schedules import (
    CatchupMode,
    Firing,
    FiringCause,
    FiringOutcome,
    JobTemplate,
    Overlap,
    SchedulePolicy,
    ScheduleRecord,
)

T0 = 1_800_000_000.0  # a whole minute (2027-01-15T08:00:00Z)


class Fired(EngineObserver):
    def __init__(self) -> None:
        self.firings: list[Firing] = []

    def schedule_fired(self, schedule_id: str, queue: str, firing: Firing) -> None:
        self.firings.append(firing)


def _engine() -> tuple[Engine, Fired]:
    fired = Fired()
    return Engine(EngineLimits(), fired), fired


def _every(
    seconds: int,
    overlap: Overlap = Overlap.ALLOW,
    window: float = 3600.0,
    mode: CatchupMode = CatchupMode.ALL,
    schedule_id: str = "s",
    jitter: float = 0.0,
) -> ScheduleRecord:
    return ScheduleRecord(
        id=schedule_id,
        spec=SpecRecord(intervals=((seconds, 0),), jitter=jitter),
        template=JobTemplate(NewJob(queue="q", payload=b"x")),
        policy=SchedulePolicy(overlap=overlap, catchup_window=window, catchup_mode=mode),
    )


def _outcomes(fired: Fired) -> list[FiringOutcome]:
    return [f.outcome for f in fired.firings]


def test_after_downtime_every_tick_in_the_window_fires_oldest_first() -> None:
    engine, fired = _engine()
    engine.create_schedule(_every(60), T0)
    engine.tick(T0 + 600)
    assert [f.tick - T0 for f in fired.firings] == [60.0 * i for i in range(1, 11)]
    assert _outcomes(fired) == [FiringOutcome.SUBMITTED] * 10
    assert len(engine.unfinished_jobs()) == 10
    engine.tick(T0 + 600)  # nothing new is due: nothing fires twice
    assert len(fired.firings) == 10


def test_ticks_older_than_the_window_are_missed_and_counted() -> None:
    engine, fired = _engine()
    engine.create_schedule(_every(60, window=120), T0)
    engine.tick(T0 + 600)
    missed, *rest = fired.firings
    assert missed.outcome is FiringOutcome.MISSED
    assert missed.count == 7
    assert [f.tick - T0 for f in rest] == [480.0, 540.0, 600.0]
    assert engine.get_schedule("s").missed == 7


def test_latest_fires_only_the_newest_missed_tick() -> None:
    engine, fired = _engine()
    engine.create_schedule(_every(60, mode=CatchupMode.LATEST), T0)
    engine.tick(T0 + 600)
    assert _outcomes(fired) == [FiringOutcome.MISSED, FiringOutcome.SUBMITTED]
    assert fired.firings[1].tick == T0 + 600
    assert engine.get_schedule("s").missed == 9


def test_skip_holds_every_tick_back_while_its_job_is_unfinished() -> None:
    engine, fired = _engine()
    engine.create_schedule(_every(60, overlap=Overlap.SKIP), T0)
    engine.tick(T0 + 180)
    assert _outcomes(fired) == [FiringOutcome.SUBMITTED] + [FiringOutcome.SKIPPED] * 2
    (job,) = engine.unfinished_jobs()
    engine.cancel(job.id, T0 + 200)  # finished: the next tick fires again
    engine.tick(T0 + 240)
    assert _outcomes(fired)[-1] is FiringOutcome.SUBMITTED


def test_buffer_one_lets_one_job_wait_behind_the_running_one() -> None:
    engine, fired = _engine()
    engine.create_schedule(_every(60, overlap=Overlap.BUFFER_ONE), T0)
    engine.tick(T0 + 240)
    assert _outcomes(fired) == [FiringOutcome.SUBMITTED] * 2 + [FiringOutcome.SKIPPED] * 2
    jobs = engine.unfinished_jobs()
    assert {j.ordering_key for j in jobs} == {"schedule:s"}
    assert [j.state for j in jobs] == [JobState.PENDING, JobState.PENDING]


def test_jitter_is_fixed_per_tick_and_never_reaches_the_next_one() -> None:
    spec = SpecRecord(intervals=((60, 0),), jitter=3600)
    a, b = CompiledSpec(spec, "s"), CompiledSpec(spec, "s")
    ticks = a.ticks(T0, T0 + 6000, 100)
    fires = [a.fire_time(t) for t in ticks]
    assert fires == [b.fire_time(t) for t in ticks]  # any replica computes the same
    assert all(t <= f < t + 60 for t, f in zip(ticks, fires, strict=True))
    assert len({round(f - t, 3) for t, f in zip(ticks, fires, strict=True)}) > 50
    engine, fired = _engine()
    engine.create_schedule(_every(60, jitter=30), T0)
    due = engine.get_schedule("s").next_fire()
    assert due is not None
    engine.tick(due - 0.001)
    assert fired.firings == []
    engine.tick(due)
    assert [f.tick for f in fired.firings] == [T0 + 60]


def _ticks(expr: str, start: datetime, count: int) -> list[str]:
    spec = CompiledSpec(SpecRecord(cron_expressions=(expr,)), "s")
    found = spec.ticks(start.timestamp(), float("inf"), count)
    return [datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d") for t in found]


def test_the_31st_and_the_leap_day() -> None:
    assert _ticks("0 0 31 * *", datetime(2027, 1, 1, tzinfo=UTC), 7) == [
        "2027-01-31",
        "2027-03-31",
        "2027-05-31",
        "2027-07-31",
        "2027-08-31",
        "2027-10-31",
        "2027-12-31",
    ]
    assert _ticks("0 12 29 2 *", datetime(2025, 1, 1, tzinfo=UTC), 3) == [
        "2028-02-29",
        "2032-02-29",
        "2036-02-29",
    ]
    assert _ticks("0 0 L 2 *", datetime(2027, 1, 1, tzinfo=UTC), 2) == ["2027-02-28", "2028-02-29"]


def test_start_and_end_bound_the_ticks() -> None:
    spec = SpecRecord(intervals=((60, 0),), start=T0 + 120.5, end=T0 + 300)
    compiled = CompiledSpec(spec, "s")
    assert [t - T0 for t in compiled.ticks(T0, T0 + 1000, 10)] == [180.0, 240.0, 300.0]
    assert compiled.next_tick(T0 + 300) is None


def test_the_heap_wakes_the_engine_for_the_earliest_schedule_only() -> None:
    engine, fired = _engine()
    for i in range(10_000):
        rec = _every(86_400, schedule_id=f"s{i:05d}")
        rec.spec = SpecRecord(intervals=((86_400, 3600 + i),))
        rec.recompile()
        engine.create_schedule(rec, T0)
    first = engine.next_wakeup()
    assert first is not None
    assert first == min(r.next_fire() or 0 for r in engine.all_schedules())
    engine.tick(first - 1)
    assert fired.firings == []
    engine.tick(first)
    assert len(fired.firings) == 1
    assert len(engine._schedule_heap) == 10_000


def test_pause_resume_and_a_new_spec_go_on_from_now() -> None:
    engine, fired = _engine()
    engine.create_schedule(_every(60), T0)
    engine.pause_schedule("s", "maintenance", T0 + 10)
    assert engine.get_schedule("s").next_fire_times(3) == []
    engine.tick(T0 + 600)
    assert fired.firings == []
    engine.resume_schedule("s", None, T0 + 600)
    engine.tick(T0 + 600)
    assert fired.firings == []  # the pause's ticks do not catch up
    engine.tick(T0 + 660)
    assert [f.tick for f in fired.firings] == [T0 + 660]
    engine.update_schedule("s", {"spec": SpecRecord(intervals=((10, 0),))}, T0 + 1000)
    engine.tick(T0 + 1020)
    assert [f.tick - T0 for f in fired.firings[1:]] == [1010.0, 1020.0]


def test_trigger_fires_now_and_backfill_refuses_bad_ranges() -> None:
    engine, _ = _engine()
    engine.create_schedule(_every(60), T0)
    engine.pause_schedule("s", "", T0)
    firing = engine.trigger_schedule("s", None, T0 + 5.25)
    assert (firing.cause, firing.outcome, firing.tick) == (
        FiringCause.TRIGGERED,
        FiringOutcome.SUBMITTED,
        T0 + 5.25,
    )
    job = engine.get_job(firing.job_id)
    assert job.idempotency_key == "schedule:s@2027-01-15T08:00:05.250Z"
    with pytest.raises(InvalidArgument):
        engine.backfill_schedule("s", T0, T0 + 7200, None, T0 + 100)  # the future
    with pytest.raises(InvalidArgument):
        engine.backfill_schedule("s", T0 - 86_400 * 2, T0, None, T0)  # > 1,000 ticks
    done = engine.backfill_schedule("s", T0 - 300, T0, None, T0 + 10)
    assert [f.tick - T0 for f in done] == [-300.0, -240.0, -180.0, -120.0, -60.0, 0.0]
    again = engine.backfill_schedule("s", T0 - 300, T0, None, T0 + 10)
    assert {f.outcome for f in again} == {FiringOutcome.DUPLICATE}


def test_a_refused_submit_is_recorded_not_lost_silently() -> None:
    engine, fired = _engine()
    engine.update_queue("q", max_pending=1, create=True)
    engine.create_schedule(_every(60), T0)
    engine.tick(T0 + 120)
    assert _outcomes(fired) == [FiringOutcome.SUBMITTED, FiringOutcome.REFUSED]
    assert "max_pending" in fired.firings[1].message
    assert engine.get_schedule("s").refused == 1
    with pytest.raises(AlreadyExists):
        engine.create_schedule(_every(60), T0)


def test_latest_finds_the_newest_tick_after_a_long_gap_of_fast_ticks() -> None:
    engine, fired = _engine()
    engine.create_schedule(_every(1, window=86_400, mode=CatchupMode.LATEST), T0)
    engine.tick(T0 + 50_000.5)
    assert _outcomes(fired) == [FiringOutcome.MISSED, FiringOutcome.SUBMITTED]
    assert fired.firings[1].tick == T0 + 50_000
    assert engine.get_schedule("s").missed == 10_000  # counted up to the cap
