"""Drain, snapshot round trip (unfinished_jobs + restore), eviction of finished jobs."""

from __future__ import annotations

import copy
import gc
import random

import pytest

from dispatchd.engine import (
    Engine,
    EngineLimits,
    FailedPrecondition,
    JobFailure,
    JobState,
    NewJob,
    NotFound,
    QueueSettings,
    Unavailable,
)
from tests.unit.engine_helpers import let_go

from .engine_helpers import Connect, Dispatch, Submit


def pending_ids(engine: Engine, queue: str = "q") -> list[str]:
    jobs, _ = engine.list_jobs(queue, JobState.PENDING, 1000, "")
    return [j.id for j in jobs]


def drain_order(engine: Engine, queues: list[str]) -> list[str]:
    """The order one worker with credit 1 receives every job, queue by queue."""
    out: list[str] = []
    for name in queues:
        engine.update_queue(name, width=1)
    for name in queues:
        w = engine.connect("drainer", [name], 1, 0.0)
        while True:
            leases = [lease for _, batch in engine.dispatch(0.0) for lease in batch]
            if not leases:
                break
            [lease] = leases
            out.append(lease.job.id)
            engine.complete(w, lease.job.id, lease.lease_id, b"", 0.0)
        engine.disconnect(w, 0.0)
    return out


# ---- drain ------------------------------------------------------------------


def test_begin_drain_stops_dispatch_and_submit(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=3)
    w = connect(credits=1)
    [lease] = dispatch(0.0)
    engine.begin_drain()
    assert engine.draining
    assert w.draining
    assert w.free_credits == 0
    with pytest.raises(Unavailable):
        engine.submit([NewJob("q")], 1.0)
    with pytest.raises(Unavailable):
        engine.connect("w2", ["q"], 1, 1.0)
    assert engine.complete(w, lease.job.id, lease.lease_id, b"done", 2.0) is None
    assert lease.job.state is JobState.SUCCEEDED  # underway jobs may still finish
    assert dispatch(3.0) == []
    assert engine.get_queue("q").pending_count == 2


def test_reclaim_underway(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    jobs = submit(n=4)
    w = connect(credits=3)
    leases = dispatch(0.0)
    engine.begin_drain()
    assert engine.reclaim_underway() == 3
    assert engine.underway_total() == 0
    assert w.leases == {}
    assert all(j.state is JobState.PENDING for j in jobs)
    assert pending_ids(engine) == [j.id for j in jobs]
    assert [lease.job.attempt for lease in leases] == [1, 1, 1]
    assert engine.get_queue("q").underway_count == 0
    assert engine.reclaim_underway() == 0


def test_unfinished_jobs_order(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    b1 = submit("b")[0]
    a_low = submit("a", priority=0)[0]
    a_high = submit("a", priority=4)[0]
    a_done = submit("a", priority=9)[0]
    engine.cancel(a_done.id, 0.0)
    connect("b", credits=1)
    [lease] = dispatch(0.0)
    assert lease.job is b1
    b2 = submit("b")[0]
    # Submit order per queue (underway ones included): a restore rebuilds ordering-key
    # chains from it, and dispatch order follows from (priority, submit order).
    assert [j.id for j in engine.unfinished_jobs()] == [a_low.id, a_high.id, b1.id, b2.id]


def test_snapshot_round_trip(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    engine.submit(
        [
            NewJob("a", payload=b"1", priority=1, headers={"traceparent": "t1"}),
            NewJob("a", payload=b"2", priority=3, content_type="x/y"),
            NewJob("a", payload=b"3", priority=1, headers={"k": "v"}),
            NewJob("b", payload=b"4", priority=0),
            NewJob("b", payload=b"5", priority=-2),
            NewJob("a", payload=b"6", priority=3),
        ],
        0.0,
    )
    engine.update_queue("a", width=4, lease_seconds=12.0)
    engine.update_queue("b", paused=True)
    w = connect(["a", "b"], credits=2)
    leases = dispatch(1.0)
    assert len(leases) == 2
    engine.expire_leases(100.0)  # attempts counted, back to pending
    let_go(engine, w, 100.5)
    done = dispatch(101.0)
    engine.complete(w, done[0].job.id, done[0].lease_id, b"", 102.0)
    engine.begin_drain()
    engine.reclaim_underway()

    saved = engine.unfinished_jobs()
    assert all(j.state is JobState.PENDING for j in saved)
    settings = [(v.name, v.settings) for v in engine.list_queues()]
    expected_a = pending_ids(engine, "a")

    fresh = Engine(rng=random.Random(1))
    fresh.restore(settings, saved)
    assert [(v.name, v.settings) for v in fresh.list_queues()] == settings
    assert fresh.get_queue("b").settings.paused
    restored = fresh.unfinished_jobs()
    assert [j.id for j in restored] == [j.id for j in saved]
    for old, new in zip(saved, restored, strict=True):
        assert new.state is JobState.PENDING
        assert new.lease is None
        assert (new.queue, new.payload, new.priority, new.headers, new.content_type) == (
            old.queue,
            old.payload,
            old.priority,
            old.headers,
            old.content_type,
        )
        assert new.attempt == old.attempt
        assert new.submit_time == old.submit_time
    assert any(j.attempt > 0 for j in restored)
    assert pending_ids(fresh, "a") == expected_a
    fresh.update_queue("b", paused=False)
    by_dispatch = sorted(enumerate(saved), key=lambda p: (p[1].queue, -p[1].priority, p[0]))
    assert drain_order(fresh, ["a", "b"]) == [j.id for _, j in by_dispatch]


def test_restore_with_underway_jobs(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    """A snapshot taken with jobs still underway restores them as pending."""
    jobs = submit(n=3)
    connect(credits=1)
    [lease] = dispatch(0.0)
    # restore takes ownership of the records it is given: hand it copies.
    saved = [copy.copy(j) for j in engine.unfinished_jobs()]
    fresh = Engine(rng=random.Random(1))
    fresh.restore([("q", engine.get_queue("q").settings)], saved)
    assert {j.id for j in fresh.unfinished_jobs()} == {j.id for j in jobs}
    again = fresh.get_job(lease.job.id)
    assert again.state is JobState.PENDING
    assert again.attempt == 1
    assert again.lease is None
    assert fresh.underway_total() == 0
    # The original engine's record is untouched.
    assert lease.job.state is JobState.UNDERWAY


def test_restore_needs_empty_engine(engine: Engine, submit: Submit) -> None:
    submit()
    with pytest.raises(FailedPrecondition):
        engine.restore([("x", QueueSettings(width=1))], [])


def test_restored_engine_accepts_new_jobs_after_old(engine: Engine, submit: Submit) -> None:
    old = submit(n=2, now=50.0)
    fresh = Engine(rng=random.Random(1))
    fresh.restore([("q", QueueSettings(width=10))], engine.unfinished_jobs())
    [new] = fresh.submit([NewJob("q")], 60.0)
    assert pending_ids(fresh) == [old[0].id, old[1].id, new.id]
    assert new.id not in {j.id for j in old}


# ---- evict_finished ---------------------------------------------------------


def test_evict_by_retention(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch, limits: EngineLimits
) -> None:
    a, b, c = submit(n=3)
    w = connect()
    leases = dispatch(0.0)
    engine.complete(w, a.id, leases[0].lease_id, b"", 10.0)
    engine.complete(w, b.id, leases[1].lease_id, JobFailure("x"), 20.0)
    keep = limits.finished_retention_seconds
    assert engine.evict_finished(10.0 + keep - 0.001) == 0
    assert engine.evict_finished(10.0 + keep) == 1
    with pytest.raises(NotFound):
        engine.get_job(a.id)
    assert engine.get_job(b.id).state is JobState.FAILED
    assert engine.get_job(c.id).state is JobState.UNDERWAY  # unfinished never evicted
    assert engine.evict_finished(1e9) == 1
    with pytest.raises(NotFound):
        engine.get_job(b.id)
    assert engine.get_job(c.id) is c
    listed, _ = engine.list_jobs("q", JobState.UNSPECIFIED, 100, "")
    assert listed == [c]


@pytest.mark.parametrize("limits", [EngineLimits(max_finished_jobs=2)])
def test_evict_by_count(engine: Engine, submit: Submit) -> None:
    jobs = submit(n=5)
    for t, job in enumerate(jobs[:4]):
        engine.cancel(job.id, float(t))
    assert engine.evict_finished(4.0) == 2
    for job in jobs[:2]:
        with pytest.raises(NotFound):
            engine.get_job(job.id)
    for job in jobs[2:]:
        assert engine.get_job(job.id).id == job.id
    cancelled, _ = engine.list_jobs("q", JobState.CANCELLED, 10, "")
    assert [j.id for j in cancelled] == [j.id for j in jobs[2:4]]
    assert engine.evict_finished(4.0) == 0


def test_evict_nothing_when_empty(engine: Engine) -> None:
    assert engine.evict_finished(1e12) == 0


@pytest.mark.parametrize("limits", [EngineLimits(max_finished_jobs=0)])
def test_evicted_cancelled_underway_job_can_still_answer(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    """Evicting a cancelled job whose worker has not answered must keep the slot
    accounting right when the answer (or the expiry) comes."""
    [job] = submit()
    w = connect()
    [lease] = dispatch(0.0)
    engine.cancel(job.id, 1.0)
    assert engine.evict_finished(1.0) == 1
    with pytest.raises(NotFound):
        engine.get_job(job.id)
    assert engine.get_queue("q").underway_count == 1
    assert engine.complete(w, job.id, lease.lease_id, b"", 2.0) is None
    assert engine.get_queue("q").underway_count == 0
    assert engine.underway_total() == 0


def test_finished_jobs_are_not_tracked_by_the_garbage_collector(
    engine: Engine, submit: Submit
) -> None:
    """Retained finished jobs must not lengthen full collections (the p99 target): the
    number of objects the collector tracks must not grow with them."""
    submit(n=1)  # the queue and its indexes exist before the baseline
    gc.collect()
    baseline = len(gc.get_objects())
    jobs = submit(n=1000)
    for job in jobs:
        engine.cancel(job.id, 1.0)
    del jobs
    gc.collect()
    assert len(gc.get_objects()) - baseline < 50
