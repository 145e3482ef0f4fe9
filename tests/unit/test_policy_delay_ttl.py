"""Delayed jobs (not_before, SCHEDULED) and time to live (expire_at, EXPIRED)."""

from __future__ import annotations

import math
import random

import pytest

from dispatchd.engine import (
    Engine,
    InvalidArgument,
    JobFailure,
    JobState,
    NewJob,
    ResourceExhausted,
    RetryPolicy,
)
from tests.unit.engine_helpers import let_go

from .engine_helpers import Add, Connect, Pump, ok, state


def listed(engine: Engine, which: JobState, page_size: int = 1000) -> list[str]:
    """Every job of queue q in ``which``, walking pages of ``page_size``."""
    out: list[str] = []
    token = ""
    while True:
        page, token = engine.list_jobs("q", which, page_size, token)
        out.extend(j.id for j in page)
        if not token:
            return out


# ---- not_before -------------------------------------------------------------------


def test_future_not_before_is_scheduled_until_due(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    connect()
    job = add(not_before=10.0)
    assert job.state is JobState.SCHEDULED
    view = engine.get_queue("q")
    assert (view.scheduled_count, view.pending_count) == (1, 0)
    assert engine.next_wakeup() == 10.0
    assert pump(0.0) == []
    assert pump(9.999) == []
    assert state(engine, job) is JobState.SCHEDULED
    [lease] = pump(10.0)
    assert lease.job is job
    assert job.attempt == 1
    assert engine.get_queue("q").scheduled_count == 0


def test_dispatch_alone_does_not_run_a_scheduled_job(
    engine: Engine, add: Add, connect: Connect
) -> None:
    """The timer heap is drained by tick(), never scanned by dispatch()."""
    connect()
    job = add(not_before=1.0)
    assert engine.dispatch(5.0) == []
    engine.tick(5.0)
    assert state(engine, job) is JobState.PENDING
    assert engine.dispatch(5.0)


@pytest.mark.parametrize("not_before", [None, 0.0, 3.0, 5.0])
def test_past_or_present_not_before_is_pending_at_once(
    engine: Engine, add: Add, not_before: float | None
) -> None:
    job = add(now=5.0, not_before=not_before)
    assert job.state is JobState.PENDING
    assert engine.get_queue("q").scheduled_count == 0


@pytest.mark.parametrize("field", ["not_before", "expire_at"])
@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf, 1e12])
def test_unusable_times_are_rejected(engine: Engine, field: str, value: float) -> None:
    spec = NewJob("q", **{field: value})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=field):
        engine.submit([NewJob("q"), spec], 0.0)
    assert engine.list_queues() == []  # nothing admitted, not even the valid one


def test_scheduled_jobs_are_listed_in_due_order_with_paging(engine: Engine, add: Add) -> None:
    rng = random.Random(3)
    dues = [float(rng.randrange(1, 40)) for _ in range(25)]
    jobs = [add(not_before=d) for d in dues]
    add()  # a pending one, listed apart
    expected = [j.id for j in sorted(jobs, key=lambda j: (j.not_before, j.seq))]
    assert listed(engine, JobState.SCHEDULED) == expected
    for size in (1, 2, 7):
        assert listed(engine, JobState.SCHEDULED, size) == expected
    everything = listed(engine, JobState.UNSPECIFIED, 4)
    assert everything[1:] == expected  # pending first, then scheduled


def test_paging_survives_jobs_becoming_due(engine: Engine, add: Add) -> None:
    jobs = [add(not_before=float(t)) for t in (5, 1, 4, 2, 3)]
    page, token = engine.list_jobs("q", JobState.SCHEDULED, 2, "")
    assert [j.not_before for j in page] == [1.0, 2.0]
    engine.tick(3.0)  # 1, 2, 3 become pending
    page, token = engine.list_jobs("q", JobState.SCHEDULED, 2, token)
    assert [j.not_before for j in page] == [4.0, 5.0]
    assert token == ""
    assert len(jobs) == 5


def test_due_jobs_run_by_priority_then_submit_order(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    low = add(not_before=2.0, priority=0)
    high = add(not_before=5.0, priority=9)
    mid = add(not_before=1.0, priority=5)
    connect(credits=1)
    engine.update_queue("q", width=1)
    assert pump(6.0)[0].job is high
    assert listed(engine, JobState.PENDING) == [mid.id, low.id]


def test_reprioritize_and_cancel_a_scheduled_job(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    a = add(not_before=5.0)
    b = add(not_before=5.0)
    c = add(not_before=5.0)
    engine.reprioritize(b.id, 7)
    assert b.state is JobState.SCHEDULED
    _, worker = engine.cancel(c.id, 1.0)
    assert worker is None
    assert state(engine, c) is JobState.CANCELLED
    assert listed(engine, JobState.SCHEDULED) == [a.id, b.id]
    connect(credits=1)
    engine.update_queue("q", width=1)
    assert pump(5.0)[0].job is b
    assert listed(engine, JobState.PENDING) == [a.id]


def test_scheduled_jobs_count_toward_max_pending(engine: Engine, add: Add) -> None:
    engine.update_queue("q", max_pending=2, create=True)
    add(not_before=100.0)
    add()
    with pytest.raises(ResourceExhausted, match="max_pending"):
        add(not_before=50.0)


# ---- expire_at ----------------------------------------------------------------------


def test_pending_job_expires_at_tick_and_never_runs(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", width=0, create=True)
    job = add(expire_at=5.0)
    other = add()
    connect()
    assert engine.next_wakeup() == 5.0
    assert pump(4.999) == []
    assert state(engine, job) is JobState.PENDING
    assert pump(5.0) == []
    done = engine.get_job(job.id)
    assert done.state is JobState.EXPIRED
    assert done.finish_time == 5.0
    assert done.attempt == 0
    engine.update_queue("q", width=10)
    [lease] = pump(6.0)
    assert lease.job is other
    assert listed(engine, JobState.EXPIRED) == [job.id]


def test_scheduled_job_expires_before_it_is_due(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    connect()
    job = add(not_before=10.0, expire_at=6.0)
    assert pump(6.0) == []
    assert state(engine, job) is JobState.EXPIRED
    assert engine.get_queue("q").scheduled_count == 0
    assert pump(10.0) == []


def test_expire_at_in_the_past_expires_at_submit(
    engine: Engine, connect: Connect, pump: Pump
) -> None:
    connect()
    [(job, repeated)] = engine.submit_many([NewJob("q", expire_at=3.0)], 5.0)
    assert not repeated
    assert job.state is JobState.EXPIRED
    assert engine.get_job(job.id).state is JobState.EXPIRED
    assert engine.get_queue("q").pending_count == 0
    assert pump(5.0) == []


def test_underway_job_is_not_expired(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", lease_seconds=60.0, create=True)
    connect()
    job = add(expire_at=3.0)
    [lease] = pump(0.0)
    pump(10.0)
    assert state(engine, job) is JobState.UNDERWAY
    ok(engine, lease, 20.0)
    assert state(engine, job) is JobState.SUCCEEDED


@pytest.mark.parametrize("how", ["lease_expired", "worker_lost"])
def test_job_given_back_after_its_expire_at_expires(
    engine: Engine, add: Add, connect: Connect, pump: Pump, how: str
) -> None:
    """Without a policy a lost attempt requeues the job, but not past its time to live."""
    engine.update_queue("q", lease_seconds=10.0, create=True)
    w = connect()
    job = add(expire_at=3.0)
    [lease] = pump(0.0)
    pump(5.0)  # the expiry entry goes by while it is underway
    if how == "lease_expired":
        assert pump(10.0) == []
    else:
        engine.disconnect(w, 10.0)
        connect()
        assert pump(10.0) == []
    done = engine.get_job(job.id)
    assert done.state is JobState.EXPIRED
    assert done.finish_time == 10.0
    assert len(done.attempts) == 1
    assert engine.get_queue("q").pending_count == 0
    assert lease.lease_id not in w.leases


def test_job_given_back_before_its_expire_at_waits_again(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", lease_seconds=2.0, create=True)
    w = connect()
    job = add(expire_at=30.0)
    pump(0.0)
    engine.tick(2.0)  # the lease ends unheard
    let_go(engine, w, 2.0)
    [again] = pump(2.0)
    assert again.job is job
    assert job.attempt == 2
    for t in range(3, 41):  # underway again, kept alive past its expire_at
        engine.heartbeat(w, [], float(t))
        assert pump(float(t)) == []
    assert state(engine, job) is JobState.UNDERWAY


def test_retry_due_after_expire_at_expires_at_once(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    connect()
    job = add(expire_at=5.0, retry_policy=RetryPolicy.of(5, 10.0, 10.0, 1.0, 0.0))
    [lease] = pump(0.0)
    failure = JobFailure("boom")
    engine.complete(lease.worker, job.id, lease.lease_id, failure, 1.0)  # due 11 > 5
    done = engine.get_job(job.id)
    assert done.state is JobState.EXPIRED
    assert done.finish_time == 1.0
    assert [a.error for a in done.attempts] == [failure]
    assert engine.get_queue("q").scheduled_count == 0


def test_retry_in_backoff_expires_when_its_time_comes(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    connect()
    job = add(expire_at=5.0, retry_policy=RetryPolicy.of(5, 2.0, 2.0, 1.0, 0.0))
    [lease] = pump(0.0)
    engine.complete(lease.worker, job.id, lease.lease_id, JobFailure("x"), 2.5)  # due 4.5
    assert job.state is JobState.SCHEDULED
    [again] = pump(4.5)
    engine.complete(again.worker, job.id, again.lease_id, JobFailure("y"), 4.6)  # due 6.6
    assert state(engine, job) is JobState.EXPIRED


def test_lease_expiry_past_expire_at_under_a_policy_expires(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    engine.update_queue(
        "q", lease_seconds=5.0, retry_policy=RetryPolicy.of(5, 0.0, 0.0, 1.0, 0.0), create=True
    )
    connect()
    job = add(expire_at=3.0)
    pump(0.0)
    assert pump(5.0) == []
    assert state(engine, job) is JobState.EXPIRED


def test_cancelled_and_expired_scheduled_jobs_leave_no_timer_work(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    connect()
    jobs = [add(not_before=10.0, expire_at=20.0) for _ in range(3)]
    engine.cancel(jobs[0].id, 1.0)
    leases = pump(10.0)
    assert {lease.job.id for lease in leases} == {jobs[1].id, jobs[2].id}
    for lease in leases:
        ok(engine, lease, 11.0)
    pump(20.0)
    assert [state(engine, j) for j in jobs] == [
        JobState.CANCELLED,
        JobState.SUCCEEDED,
        JobState.SUCCEEDED,
    ]
    due = engine.next_wakeup()
    assert due is None or due > 20.0
