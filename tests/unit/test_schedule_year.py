"""A year of ticks of a dozen specs across two daylight saving changes per zone, fired by the
engine under an injected clock with random crashes and restarts, against an independent
computation: every instant fires exactly once (0 missing, 0 duplicate).

The independent computation does not use cronsim nor the engine's mapping: it walks the
calendar minute by minute (the local wall clock for set-time expressions, UTC for the
others), matches fields with its own little matcher, and applies the documented daylight
saving rule (docs/schedules.md) directly with zoneinfo."""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dispatchd import convert, schedule_convert
from dispatchd.engine import Engine, EngineLimits, EngineObserver, JobRecord
from dispatchd.engine.model import NewJob
from dispatchd.engine.schedule_spec import SpecRecord
from dispatchd.engine.schedules import (
    Firing,
    FiringOutcome,
    JobTemplate,
    Overlap,
    SchedulePolicy,
    ScheduleRecord,
)
from dispatchd_client.v1 import dispatcher_pb2 as pb

# 2027-12-01 .. 2028-12-01: a leap day, and both changes in Berlin (Mar 26, Oct 29) and
# New York (Mar 12, Nov 5).
START = datetime(2027, 12, 1, tzinfo=UTC).timestamp()
END = datetime(2028, 12, 1, tzinfo=UTC).timestamp()

# (cron expressions, intervals, zone): set-time and elapsed-time expressions, in and around
# the skipped and the repeated hour, month ends, the leap day, seconds, a combined spec.
SPECS: list[tuple[tuple[str, ...], tuple[tuple[int, int], ...], str]] = [
    (("30 2 * * *",), (), "Europe/Berlin"),
    (("30 1 * * *",), (), "America/New_York"),
    (("*/30 0-4 * * *",), (), "Europe/Berlin"),
    (("0 * * * *",), (), "America/New_York"),
    (("0 0 31 * *",), (), "UTC"),
    (("0 12 29 2 *",), (), "UTC"),
    (("15 2,3 * * 1-5",), (), "Europe/Berlin"),
    (("0 9-17/2 * * *",), (), "America/New_York"),
    (("15 30 1 * * *",), (), "America/New_York"),
    ((), ((7 * 3600, 13 * 60),), ""),
    (("*/20 1-3 * * *",), (), "Europe/Berlin"),
    (("0 6 * * *",), ((12 * 3600, 0),), "UTC"),
    (("0 4 * * 0",), (), "Asia/Kolkata"),
]


# ---- the independent computation ----------------------------------------------------------


def _field(text: str, lo: int, hi: int) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step = part.partition("/")
        if body == "*":
            a, b = lo, hi
        elif "-" in body:
            a, b = (int(x) for x in body.split("-"))
        else:
            a = b = int(body)
        values.update(range(a, b + 1, int(step or 1)))
    return values


def _matcher(expr: str) -> tuple[int, Callable[[datetime], bool]]:
    parts = expr.split()
    second = 0
    if len(parts) == 6:
        second = int(parts[0])
        parts = parts[1:]
    minute, hour, dom, month, dow = (
        _field(parts[0], 0, 59),
        _field(parts[1], 0, 23),
        _field(parts[2], 1, 31),
        _field(parts[3], 1, 12),
        {d % 7 for d in _field(parts[4], 0, 7)},
    )

    def matches(w: datetime) -> bool:
        return (
            w.minute in minute
            and w.hour in hour
            and w.day in dom
            and w.month in month
            and (w.isoweekday() % 7) in dow
        )

    return second, matches


@functools.cache
def _minutes(zone_name: str) -> list[tuple[float, datetime]]:
    """Every real minute of the year with the wall clock it shows in the zone."""
    zone = ZoneInfo(zone_name) if zone_name != "UTC" else UTC
    t = START - START % 60
    out = []
    while t <= END:
        out.append((t, datetime.fromtimestamp(t, zone).replace(tzinfo=None)))
        t += 60
    return out


def _exists(w: datetime, zone: ZoneInfo) -> bool:
    aware = w.replace(tzinfo=zone)
    return aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == w


def expected_instants(
    crons: tuple[str, ...], intervals: tuple[tuple[int, int], ...], tz: str
) -> set[float]:
    zone = ZoneInfo(tz) if tz and tz != "UTC" else None
    out: set[float] = set()
    for expr in crons:
        second, matches = _matcher(expr)
        parts = expr.split()[-5:]
        set_times = not parts[0].startswith("*") and not parts[1].startswith("*")
        if zone is None or not set_times:
            # Elapsed time (UTC is all elapsed time): every real minute whose wall clock
            # matches.
            for t, wall in _minutes(tz or "UTC"):
                if matches(wall) and START < t + second <= END:
                    out.add(t + second)
        else:
            # Each wall-clock match once: its first occurrence, or the first real minute
            # after a skipped one (the jump).
            w = datetime.fromtimestamp(START, zone).replace(tzinfo=None, second=0) - timedelta(
                days=1
            )
            last = datetime.fromtimestamp(END, zone).replace(tzinfo=None) + timedelta(days=1)
            while w <= last:
                if matches(w):
                    real = w
                    while not _exists(real, zone):
                        real = real + timedelta(minutes=1)
                    t = real.replace(tzinfo=zone, fold=0).timestamp()
                    t += second if real == w else 0
                    if START < t <= END:
                        out.add(t)
                w += timedelta(minutes=1)
    for every, offset in intervals:
        t = offset + ((int(START) - offset) // every + 1) * every
        while t <= END:
            out.add(float(t))
            t += every
    return out


# ---- the engine under a clock that jumps, crashing now and then ------------------------------


def _schedule(
    i: int, crons: tuple[str, ...], intervals: tuple[tuple[int, int], ...], tz: str
) -> ScheduleRecord:
    return ScheduleRecord(
        id=f"s{i}",
        spec=SpecRecord(cron_expressions=crons, intervals=intervals, time_zone=tz),
        template=JobTemplate(NewJob(queue=f"q{i}", payload=b"tick")),
        policy=SchedulePolicy(overlap=Overlap.ALLOW, catchup_window=7 * 86_400.0),
    )


class Durable(EngineObserver):
    """What survives a crash. Jobs are durable on their own (a submit is journaled); a
    schedule's state only together with the jobs it fired, since the journal commits both in
    one transaction. The model tears that on purpose too: jobs saved without the cursor move
    that fired them (a crash between "fired" and "recorded"), which the job's idempotency
    key must absorb."""

    def __init__(self) -> None:
        self.jobs: dict[str, bytes] = {}
        self.fresh: list[JobRecord] = []
        self.schedules: list[bytes] = []
        self.outcomes: Counter[FiringOutcome] = Counter()

    def jobs_submitted(self, jobs: Sequence[JobRecord]) -> None:
        self.fresh.extend(jobs)

    def schedule_fired(self, schedule_id: str, queue: str, firing: Firing) -> None:
        self.outcomes[firing.outcome] += 1

    def save_jobs(self) -> None:
        for job in self.fresh:
            self.jobs[job.id] = convert.job_to_pb(job).SerializeToString()
        self.fresh = []

    def save_all(self, engine: Engine) -> None:
        self.save_jobs()
        self.schedules = [
            schedule_convert.schedule_to_pb(s, next_fires=0).SerializeToString()
            for s in engine.all_schedules()
        ]

    def restart(self) -> Engine:
        self.fresh = []
        engine = Engine(EngineLimits(), self)
        jobs: list[JobRecord] = []
        for job_id in sorted(self.jobs):
            msg = pb.Job()
            msg.ParseFromString(self.jobs[job_id])
            jobs.append(convert.job_from_pb(msg))
        engine.restore([], jobs, 0.0)
        stored = []
        for raw in self.schedules:
            stored_msg = pb.Schedule()
            stored_msg.ParseFromString(raw)
            stored.append(schedule_convert.schedule_from_stored(stored_msg))
        engine.restore_schedules(stored)
        return engine


@pytest.mark.timeout(300)
def test_a_year_of_ticks_fires_each_instant_once_through_crashes() -> None:
    rng = random.Random(20)
    durable = Durable()
    engine = Engine(EngineLimits(), durable)
    for i, (crons, intervals, tz) in enumerate(SPECS):
        rec = _schedule(i, crons, intervals, tz)
        engine.create_schedule(rec, START)
    durable.save_all(engine)
    now, crashes = START, 0
    while now < END:
        now = min(END, now + rng.choice((1, 60, 600, 3600, 6 * 3600)) * rng.random())
        engine.tick(now)
        roll = rng.random()
        if roll < 0.2:
            durable.save_all(engine)
        elif roll < 0.4:
            durable.save_jobs()  # the jobs made it to disk, the cursor did not
        elif roll < 0.4015:
            engine = durable.restart()
            crashes += 1
    engine.tick(END)
    assert crashes > 5
    # Crashes lost cursor moves whose jobs were durable: those ticks fired again and found
    # their job by its idempotency key instead of making a second one.
    assert durable.outcomes[FiringOutcome.DUPLICATE] > 0

    jobs = engine.unfinished_jobs()
    for i, (crons, intervals, tz) in enumerate(SPECS):
        want = expected_instants(crons, intervals, tz)
        got = Counter(
            datetime.strptime(j.idempotency_key.split("@")[1], "%Y-%m-%dT%H:%M:%SZ")
            .replace(tzinfo=UTC)
            .timestamp()
            for j in jobs
            if j.queue == f"q{i}"
        )
        missing = sorted(want - set(got))
        extra = sorted(set(got) - want)
        duplicates = [t for t, n in got.items() if n > 1]
        label = f"{crons} {intervals} {tz}"
        assert not missing, f"{label}: missing {[_iso(t) for t in missing[:5]]}"
        assert not extra, f"{label}: unexpected {[_iso(t) for t in extra[:5]]}"
        assert not duplicates, f"{label}: duplicated {[_iso(t) for t in duplicates[:5]]}"
        rec = engine.get_schedule(f"s{i}")
        assert rec.missed == 0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def test_the_rule_on_both_change_days_in_berlin() -> None:
    """02:30 daily: on the day the clock skips 02:00-03:00 it fires at the jump (03:00
    CEST); on the day it repeats 02:00-03:00 it fires once, at the first 02:30 (CEST).
    Every 30 minutes: nothing in the skipped hour, both passes of the repeated one."""
    berlin = ZoneInfo("Europe/Berlin")
    daily = expected_instants(("30 2 * * *",), (), "Europe/Berlin")
    assert datetime(2028, 3, 26, 3, 0, tzinfo=berlin).timestamp() in daily
    autumn = [
        t for t in daily if datetime.fromtimestamp(t, berlin).date().isoformat() == "2028-10-29"
    ]
    assert [datetime.fromtimestamp(t, berlin).isoformat() for t in autumn] == [
        "2028-10-29T02:30:00+02:00"
    ]
    half_hours = expected_instants(("*/30 0-4 * * *",), (), "Europe/Berlin")
    repeated = sorted(
        datetime.fromtimestamp(t, berlin).isoformat()
        for t in half_hours
        if datetime.fromtimestamp(t, berlin).strftime("%Y-%m-%d %H") == "2028-10-29 02"
    )
    assert repeated == [
        "2028-10-29T02:00:00+01:00",
        "2028-10-29T02:00:00+02:00",
        "2028-10-29T02:30:00+01:00",
        "2028-10-29T02:30:00+02:00",
    ]
    engine = Engine(EngineLimits())
    rec = _schedule(0, ("30 2 * * *",), (), "Europe/Berlin")
    engine.create_schedule(rec, datetime(2028, 3, 25, 12, tzinfo=berlin).timestamp())
    fires = engine.get_schedule("s0").next_fire_times(2)
    assert [datetime.fromtimestamp(t, berlin).isoformat() for t in fires] == [
        "2028-03-26T03:00:00+02:00",
        "2028-03-27T02:30:00+02:00",
    ]
    assert rec.recent == []  # nothing fired before its time
