"""Cancel (a waiting job at once; an underway one at once too, its worker told and its unit
of width held until the worker lets go), reprioritize, and the drain (intake stops, the
workers are told, what is still held is taken back)."""

from __future__ import annotations

import pytest

from dispatchd.backend import Backend
from dispatchd.engine import (
    FailedPrecondition,
    JobFailure,
    JobState,
    NewJob,
    NotFound,
    Unavailable,
)
from tests.conformance.harness import Driver
from tests.conformance.test_leases import unknown_like


async def test_cancelling_a_waiting_job_finishes_it_at_once(driver: Driver) -> None:
    job = await driver.add(payload=b"p")
    await driver.advance_to(1.0)
    view = await driver.cancel(job)
    assert (view.id, view.state, view.payload) == (job.id, JobState.CANCELLED, b"p")
    done = await driver.job(job.id)
    assert (done.state, done.finish_time, done.attempt) == (JobState.CANCELLED, driver.at(1.0), 0)
    w = await driver.connect()
    assert w.take() == []
    assert w.outbox.cancelled == []
    assert await driver.counts() == (0, 0, 0)


async def test_cancelling_an_underway_job_tells_its_worker(driver: Driver) -> None:
    await driver.update(width=1)
    job, nxt = await driver.add(), await driver.add()
    w = await driver.connect()
    other = await driver.connect()
    holder, idle = (w, other) if w.take() else (other, w)
    [lease] = holder.held.values()
    view = await driver.cancel(job)
    assert view.state is JobState.CANCELLED
    assert await driver.state(job) is JobState.CANCELLED
    assert holder.outbox.cancelled == [job.id]
    assert idle.outbox.cancelled == []
    # Its unit of width is held until the worker lets go: it may still be running it.
    assert (await driver.queue()).underway_count == 1
    assert holder.take() == idle.take() == []
    await holder.ok(lease)  # its answer changes nothing but frees the width
    assert await driver.state(job) is JobState.CANCELLED
    assert [ls.job.id for ls in holder.take() + idle.take()] == [nxt.id]


@pytest.mark.parametrize("answer", ["failure", "lease_expiry", "disconnect"])
async def test_a_cancelled_underway_job_stays_cancelled_whatever_its_worker_does(
    driver: Driver, answer: str
) -> None:
    await driver.update(lease_seconds=5.0, retry_policy=None)
    job = await driver.add()
    w = await driver.connect()
    [lease] = w.take()
    await driver.cancel(job)
    if answer == "failure":
        assert await w.answer(lease, JobFailure("stopped")) == []
    elif answer == "lease_expiry":
        await driver.advance(5.0)
    else:
        await w.disconnect()
    done = await driver.job(job.id)
    assert (done.state, done.attempt) == (JobState.CANCELLED, 1)
    assert await driver.counts() == (0, 0, 0)
    again = await driver.connect()
    assert again.take() == []


async def test_cancelling_a_finished_or_unknown_job_is_refused(driver: Driver) -> None:
    job = await driver.add()
    w = await driver.connect()
    await w.ok(w.oldest())
    with pytest.raises(FailedPrecondition) as refused:
        await driver.cancel(job)
    assert str(refused.value) == f"job {job.id} already finished (SUCCEEDED)"
    assert await driver.state(job) is JobState.SUCCEEDED
    ghost = unknown_like(job.id)
    with pytest.raises(NotFound):
        await driver.backend.cancel_job(ghost)


async def test_reprioritizing_moves_a_waiting_job_only(driver: Driver) -> None:
    await driver.update(width=1)
    first, a, b = await driver.add(payload=b"1"), await driver.add(), await driver.add(payload=b"b")
    w = await driver.connect(credits=1)
    [lease] = w.take()
    moved = await driver.reprioritize(b, 5)
    assert (moved.id, moved.priority, moved.payload) == (b.id, 5, b"b")
    assert await driver.listed(JobState.PENDING) == [b.id, a.id]
    with pytest.raises(FailedPrecondition) as refused:
        await driver.reprioritize(first, 9)
    assert str(refused.value) == (
        f"job {first.id} is UNDERWAY; only a pending or scheduled job can be reprioritized"
    )
    await w.ok(lease)
    with pytest.raises(FailedPrecondition) as final:
        await driver.reprioritize(first, 9)
    assert str(final.value) == f"job {first.id} already finished (SUCCEEDED); its priority is final"
    assert w.taken_ids() == [b.id]


# ---- drain -------------------------------------------------------------------------------


async def look(driver: Driver) -> Backend:
    """What to read the queues through after a drain: this backend, or (when it shares its
    queues with other replicas, and its drain ended its own part) another replica."""
    if driver.backend.capabilities.shared:
        return await driver.peer()
    return driver.backend


async def test_a_drain_stops_intake_and_dispatch_and_tells_every_worker(driver: Driver) -> None:
    jobs = await driver.add_n(4)
    w = await driver.connect(credits=1)
    [lease] = w.take()
    report = await driver.backend.begin_drain(30.0)
    assert (report.pending, report.underway) == (3, 1)
    assert driver.backend.draining
    assert w.outbox.drains == [driver.clock.now + 30.0]
    with pytest.raises(Unavailable):
        await driver.backend.submit([NewJob("q")])
    with pytest.raises(Unavailable):
        await driver.connect()
    with pytest.raises(Unavailable):
        await driver.backend.cancel_job(jobs[1].id)
    with pytest.raises(Unavailable):
        await driver.backend.retry_job(jobs[1].id)
    await w.ok(lease)  # underway jobs may still finish
    assert await driver.state(lease.job) is JobState.SUCCEEDED
    await driver.advance(1.0)
    assert w.take() == []  # its credit is free, but nothing more goes out


async def test_finishing_a_drain_takes_back_what_is_held_and_ends_the_workers(
    driver: Driver,
) -> None:
    jobs = await driver.add_n(3)
    w = await driver.connect(credits=2)
    held = w.take()
    await driver.backend.begin_drain(0.0)
    await w.ok(held[0])
    await driver.backend.finish_drain()
    assert w.outbox.closed == ["server drained"]
    after = await look(driver)
    taken_back = await after.get_job(held[1].job.id)
    # Waiting again, no attempt counted against it: the drain is not the job's fault.
    assert (taken_back.state, taken_back.attempt, taken_back.attempts) == (
        JobState.PENDING,
        1,
        (),
    )
    assert (await after.get_job(held[0].job.id)).state is JobState.SUCCEEDED
    assert (await after.get_job(jobs[2].id)).state is JobState.PENDING
    view = await after.get_queue("q")
    assert (view.pending_count, view.underway_count) == (2, 0)
