"""Delayed jobs (not_before: SCHEDULED until then) and time to live (expire_at: EXPIRED,
never run), including a retry that would be due after the job's expire_at."""

from __future__ import annotations

import random

import pytest

from dispatchd.engine import InvalidArgument, JobFailure, JobState, NewJob, RetryPolicy
from tests.conformance.harness import Driver

# ---- not_before -----------------------------------------------------------------------------


async def test_a_delayed_job_is_scheduled_until_its_time(driver: Driver) -> None:
    w = await driver.connect()
    job = await driver.add(not_before=driver.at(10.0))
    assert job.state is JobState.SCHEDULED
    assert await driver.counts() == (0, 0, 1)
    await driver.advance_to(9.999)
    assert w.take() == []
    assert await driver.state(job) is JobState.SCHEDULED
    await driver.advance_to(10.0)
    assert w.taken_ids() == [job.id]
    seen = await driver.job(job.id)
    assert (seen.attempt, seen.dispatch_time) == (1, driver.at(10.0))
    assert await driver.counts() == (0, 1, 0)


@pytest.mark.parametrize("offset", [None, -5.0, 0.0])
async def test_a_not_before_now_or_past_is_pending_at_once(
    driver: Driver, offset: float | None
) -> None:
    not_before = None if offset is None else driver.at(offset)
    await driver.update(paused=True)
    job = await driver.add(not_before=not_before)
    assert job.state is JobState.PENDING
    assert await driver.counts() == (1, 0, 0)


@pytest.mark.parametrize("field", ["not_before", "expire_at"])
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), 1e12])
async def test_an_unusable_time_admits_nothing(driver: Driver, field: str, value: float) -> None:
    spec = NewJob("q", **{field: value})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=field):
        await driver.backend.submit([NewJob("q"), spec])
    assert await driver.backend.list_queues() == []  # not even the valid one


async def test_due_jobs_run_by_priority_then_submit_order(driver: Driver) -> None:
    await driver.update(width=1)
    low = await driver.add(not_before=driver.at(2.0), priority=0)
    high = await driver.add(not_before=driver.at(5.0), priority=9)
    mid = await driver.add(not_before=driver.at(1.0), priority=5)
    await driver.advance_to(6.0)
    w = await driver.connect(credits=1)
    assert w.taken_ids() == [high.id]
    assert await driver.listed(JobState.PENDING) == [mid.id, low.id]


async def test_scheduled_jobs_are_listed_in_due_order_across_pages(driver: Driver) -> None:
    rng = random.Random(3)
    dues = [float(rng.randrange(1, 40)) for _ in range(25)]
    jobs = [await driver.add(not_before=driver.at(d)) for d in dues]
    await driver.update(paused=True)
    await driver.add()  # a pending one, listed apart
    by_due = sorted(range(len(jobs)), key=lambda i: (dues[i], i))  # due, then submit order
    expected = [jobs[i].id for i in by_due]
    for size in (1, 2, 7, 1000):
        assert await driver.listed(JobState.SCHEDULED, page_size=size) == expected
    everything = await driver.listed(JobState.UNSPECIFIED, page_size=4)
    assert everything[1:] == expected  # pending first, then scheduled


async def test_a_scheduled_job_can_be_reprioritized_or_cancelled(driver: Driver) -> None:
    a, b, c = [await driver.add(not_before=driver.at(5.0)) for _ in range(3)]
    moved = await driver.reprioritize(b, 7)
    assert (moved.state, moved.priority) == (JobState.SCHEDULED, 7)
    await driver.cancel(c)
    assert await driver.state(c) is JobState.CANCELLED
    assert await driver.listed(JobState.SCHEDULED) == [a.id, b.id]
    await driver.update(width=1)
    w = await driver.connect(credits=1)
    await driver.advance_to(5.0)
    assert w.taken_ids() == [b.id]
    assert await driver.listed(JobState.PENDING) == [a.id]


# ---- expire_at ------------------------------------------------------------------------------


async def test_a_waiting_job_expires_at_its_time_and_never_runs(driver: Driver) -> None:
    await driver.update(width=0)
    job = await driver.add(expire_at=driver.at(5.0))
    other = await driver.add()
    w = await driver.connect()
    await driver.advance_to(4.999)
    assert await driver.state(job) is JobState.PENDING
    await driver.advance_to(5.0)
    done = await driver.job(job.id)
    assert (done.state, done.finish_time, done.attempt) == (JobState.EXPIRED, driver.at(5.0), 0)
    await driver.update(width=10)
    assert w.taken_ids() == [other.id]
    assert await driver.listed(JobState.EXPIRED) == [job.id]


async def test_a_scheduled_job_expires_before_it_is_due(driver: Driver) -> None:
    w = await driver.connect()
    job = await driver.add(not_before=driver.at(10.0), expire_at=driver.at(6.0))
    await driver.advance_to(6.0)
    assert await driver.state(job) is JobState.EXPIRED
    assert await driver.counts() == (0, 0, 0)
    await driver.advance_to(10.0)
    assert w.take() == []


async def test_an_expire_at_in_the_past_expires_at_submit(driver: Driver) -> None:
    w = await driver.connect()
    [(job, repeated)] = await driver.submit_many([NewJob("q", expire_at=driver.at(-1.0))])
    assert not repeated
    assert job.state is JobState.EXPIRED
    assert await driver.state(job) is JobState.EXPIRED
    assert await driver.counts() == (0, 0, 0)
    assert w.take() == []


async def test_an_underway_job_is_not_expired(driver: Driver) -> None:
    await driver.update(lease_seconds=60.0)
    w = await driver.connect()
    job = await driver.add(expire_at=driver.at(3.0))
    [lease] = w.take()
    await driver.advance_to(10.0)
    assert await driver.state(job) is JobState.UNDERWAY
    await w.ok(lease)
    assert await driver.state(job) is JobState.SUCCEEDED


@pytest.mark.parametrize("how", ["lease_expired", "worker_lost"])
async def test_a_job_given_back_after_its_expire_at_expires(driver: Driver, how: str) -> None:
    """Without a policy a lost attempt puts the job back, but not past its time to live."""
    await driver.update(lease_seconds=10.0)
    w = await driver.connect()
    job = await driver.add(expire_at=driver.at(3.0))
    w.take()
    await driver.advance_to(5.0)  # its expiry time goes by while it is underway
    if how == "lease_expired":
        await driver.advance_to(10.0)
    else:
        await driver.advance_to(10.0 - 0.5)
        await w.disconnect()
        await driver.connect()
    done = await driver.job(job.id)
    assert done.state is JobState.EXPIRED
    assert done.finish_time == driver.clock.now
    assert len(done.attempts) == 1
    assert await driver.counts() == (0, 0, 0)


async def test_a_job_given_back_before_its_expire_at_runs_again(driver: Driver) -> None:
    await driver.update(lease_seconds=2.0)
    w = await driver.connect()
    job = await driver.add(expire_at=driver.at(30.0))
    w.take()
    await driver.advance_to(2.0)
    assert w.take() == []  # silent past its lease: sent nothing until it shows life
    await w.let_go()
    [again] = w.take()
    assert again.job.id == job.id
    for t in range(3, 41):  # underway again, kept alive past its expire_at
        await driver.advance_to(float(t))
        await w.heartbeat()
    assert await driver.state(job) is JobState.UNDERWAY
    assert (await driver.job(job.id)).attempt == 2


async def test_a_retry_due_after_the_expire_at_expires_at_once(driver: Driver) -> None:
    w = await driver.connect()
    job = await driver.add(
        expire_at=driver.at(5.0), retry_policy=RetryPolicy.of(5, 10.0, 10.0, 1.0, 0.0)
    )
    await driver.advance_to(1.0)
    failure = await w.fail(w.oldest())  # due at 11 > 5
    done = await driver.job(job.id)
    assert (done.state, done.finish_time) == (JobState.EXPIRED, driver.at(1.0))
    assert [a.error for a in done.attempts] == [failure]
    assert await driver.counts() == (0, 0, 0)


async def test_a_retry_in_backoff_expires_when_its_time_comes(driver: Driver) -> None:
    w = await driver.connect()
    job = await driver.add(
        expire_at=driver.at(5.0), retry_policy=RetryPolicy.of(5, 2.0, 2.0, 1.0, 0.0)
    )
    await driver.advance_to(2.5)
    await w.answer(w.oldest(), JobFailure("x"))  # due at 4.5
    assert await driver.state(job) is JobState.SCHEDULED
    await driver.advance_to(4.5)
    await driver.advance_to(4.75)
    await w.answer(w.oldest(), JobFailure("y"))  # due at 6.75 > 5
    assert await driver.state(job) is JobState.EXPIRED


async def test_a_lease_expiry_past_the_expire_at_under_a_policy_expires(driver: Driver) -> None:
    await driver.update(lease_seconds=5.0, retry_policy=RetryPolicy.of(5, 0.0, 0.0, 1.0, 0.0))
    w = await driver.connect()
    job = await driver.add(expire_at=driver.at(3.0))
    w.take()
    await driver.advance_to(5.0)
    assert await driver.state(job) is JobState.EXPIRED
    assert w.take() == []


async def test_cancelled_and_finished_delayed_jobs_leave_nothing_behind(driver: Driver) -> None:
    w = await driver.connect()
    jobs = [await driver.add(not_before=driver.at(10.0), expire_at=driver.at(20.0)) for _ in "abc"]
    await driver.cancel(jobs[0])
    await driver.advance_to(10.0)
    assert sorted(w.taken_ids()) == sorted(j.id for j in jobs[1:])
    await w.finish_all()
    await driver.advance_to(20.0)
    assert await driver.states(jobs) == [
        JobState.CANCELLED,
        JobState.SUCCEEDED,
        JobState.SUCCEEDED,
    ]
    assert await driver.listed(JobState.EXPIRED) == []
