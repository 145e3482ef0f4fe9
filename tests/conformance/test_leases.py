"""Leases: expiry by time (the job waits again, the attempt counted), heartbeats, fencing
(a result for a lease not held changes nothing, with the same words on every backend),
disconnects, and lease_duration changes (the workers hear their new heartbeat interval)."""

from __future__ import annotations

from dispatchd.backend import WorkResult
from dispatchd.engine import JobState
from dispatchd.engine.reasons import LEASE_EXPIRED, STALE_LEASE, UNKNOWN_JOB, WORKER_LOST
from tests.conformance.harness import Driver


def unknown_like(job_id: str) -> str:
    """A well-formed id of no job: another ULID in the same backend's id format."""
    return "7ZZZZZZZZZZZZZZZZZZZZZZZZZ" + job_id[26:]


async def test_an_expired_lease_puts_the_job_back_with_the_attempt_counted(driver: Driver) -> None:
    await driver.update(lease_seconds=5.0)
    job = await driver.add()
    w = await driver.connect(credits=1, worker_id="w")
    [first] = w.take()
    await driver.advance_to(4.9)
    assert await driver.state(job) is JobState.UNDERWAY
    assert w.take() == []
    await driver.advance_to(5.0)  # the deadline itself ends the lease
    assert w.take() == []  # a silent worker is sent nothing until it shows life
    await w.let_go()
    [again] = w.take()
    assert again.job.id == job.id
    assert again.lease_id != first.lease_id
    seen = await driver.job(job.id)
    assert (seen.state, seen.attempt) == (JobState.UNDERWAY, 2)
    [attempt] = seen.attempts
    assert (attempt.number, attempt.worker_id, attempt.error) == (1, "w", LEASE_EXPIRED)
    assert (attempt.dispatch_time, attempt.finish_time) == (driver.at(0), driver.at(5.0))


async def test_an_expired_job_goes_back_to_its_place_in_line(driver: Driver) -> None:
    await driver.update(lease_seconds=5.0, width=1)
    first = await driver.add()
    w = await driver.connect(credits=1)
    [_lease] = w.take()
    later = await driver.add_n(2)
    await driver.advance(5.0)
    await w.let_go()
    assert w.taken_ids() == [first.id]  # older than the jobs that came meanwhile
    assert await driver.states(later) == [JobState.PENDING] * 2


async def test_an_expired_lease_frees_its_unit_of_width(driver: Driver) -> None:
    await driver.update(lease_seconds=5.0, width=1)
    a, b = await driver.add(), await driver.add(priority=-1)
    w = await driver.connect(credits=1)
    other = await driver.connect(credits=1)
    assert len(w.take()) + len(other.take()) == 1
    await driver.advance(5.0)
    # Both workers have a free credit now; a again (its place in line), never both jobs.
    assert sorted(w.taken_ids() + other.taken_ids()) == [a.id]
    assert (await driver.queue()).underway_count == 1
    assert await driver.state(b) is JobState.PENDING


async def test_a_late_result_for_an_expired_lease_is_rejected_as_stale(driver: Driver) -> None:
    await driver.update(lease_seconds=5.0)
    job = await driver.add()
    w = await driver.connect(credits=2)
    [first] = w.take()
    await driver.advance(5.0)
    await w.let_go()
    [second] = w.take()
    [rejected] = await w.answer(first, b"late")
    assert (rejected.job_id, rejected.lease_id, rejected.reason) == (
        job.id,
        first.lease_id,
        STALE_LEASE,
    )
    assert await driver.state(job) is JobState.UNDERWAY  # the new lease is untouched
    await w.ok(second, b"on time")
    done = await driver.job(job.id)
    assert (done.state, done.result, done.attempt) == (JobState.SUCCEEDED, b"on time", 2)


async def test_a_second_result_for_one_lease_is_rejected(driver: Driver) -> None:
    job = await driver.add()
    w = await driver.connect()
    [lease] = w.take()
    await w.ok(lease, b"first")
    [rejected] = await w.answer(lease, b"second")
    assert rejected.reason == STALE_LEASE
    done = await driver.job(job.id)
    assert (done.state, done.result) == (JobState.SUCCEEDED, b"first")


async def test_a_result_for_an_unknown_job_is_rejected(driver: Driver) -> None:
    job = await driver.add()
    w = await driver.connect()
    [lease] = w.take()
    ghost = unknown_like(job.id)
    rejected = await driver.backend.results(w.record, [_result(ghost, lease.lease_id)])
    assert [(r.job_id, r.reason) for r in rejected] == [(ghost, UNKNOWN_JOB)]
    assert await driver.state(job) is JobState.UNDERWAY


async def test_a_result_under_another_jobs_lease_is_rejected(driver: Driver) -> None:
    a, b, c = await driver.add(), await driver.add(), await driver.add()
    w = await driver.connect(credits=2)
    lease_a, lease_b = w.lease(a.id), w.lease(b.id)
    rejected = await driver.backend.results(w.record, [_result(b.id, lease_a.lease_id)])
    await driver.settle()
    assert [(r.job_id, r.lease_id, r.reason) for r in rejected] == [
        (b.id, lease_a.lease_id, STALE_LEASE)
    ]
    assert await driver.states([a, b]) == [JobState.UNDERWAY] * 2
    assert w.take() == []  # it still holds both: no credit came free
    await w.ok(lease_a)  # and both leases still count
    await w.ok(lease_b)
    assert await driver.states([a, b]) == [JobState.SUCCEEDED] * 2
    assert w.taken_ids() == [c.id]


async def test_a_result_for_a_lease_another_worker_holds_is_rejected(driver: Driver) -> None:
    await driver.update(width=1)
    job = await driver.add()
    holder = await driver.connect(credits=1)
    other = await driver.connect(credits=1)
    lease = holder.lease(job.id)
    rejected = await driver.backend.results(other.record, [_result(job.id, lease.lease_id)])
    assert [(r.lease_id, r.reason) for r in rejected] == [(lease.lease_id, STALE_LEASE)]
    assert await driver.state(job) is JobState.UNDERWAY
    await holder.ok(lease)


async def test_lease_ids_are_never_reused(driver: Driver) -> None:
    await driver.update(lease_seconds=1.0)
    await driver.add_n(5)
    w = await driver.connect(credits=5)
    seen = {lease.lease_id for lease in w.take()}
    for _ in range(3):
        await driver.advance(1.0)
        await w.let_go()
        again = {lease.lease_id for lease in w.take()}
        assert len(again) == 5
        assert not again & seen
        seen |= again


# ---- heartbeats -------------------------------------------------------------------------


async def test_a_heartbeat_extends_the_lease_by_the_queues_lease_duration(driver: Driver) -> None:
    await driver.update(lease_seconds=10.0)
    job = await driver.add()
    w = await driver.connect()
    [lease] = w.take()
    await driver.advance_to(8.0)
    assert await w.heartbeat(lease) == []
    await driver.advance_to(17.9)  # 8 + 10: not yet
    assert await driver.state(job) is JobState.UNDERWAY
    assert (await driver.job(job.id)).attempt == 1
    await driver.advance_to(18.0)
    await w.let_go()
    [again] = w.take()
    assert again.job.id == job.id
    assert (await driver.job(job.id)).attempt == 2


async def test_a_heartbeat_naming_no_lease_extends_every_lease_held(driver: Driver) -> None:
    await driver.update(lease_seconds=10.0)
    jobs = await driver.add_n(3)
    w = await driver.connect()
    assert len(w.take()) == 3
    await driver.advance_to(9.0)
    assert await w.heartbeat() == []
    await driver.advance_to(15.0)
    assert await driver.states(jobs) == [JobState.UNDERWAY] * 3
    assert w.take() == []


async def test_a_heartbeat_names_the_leases_no_longer_held(driver: Driver) -> None:
    await driver.update(lease_seconds=5.0)
    await driver.add_n(2)
    w = await driver.connect()
    first, second = w.take()
    await w.ok(first)
    assert await w.heartbeat(first, second) == [first.lease_id]
    await driver.advance(5.0)  # second expires
    assert w.take() == []  # silent since: nothing until it is heard from
    assert await w.heartbeat(second) == [second.lease_id]
    [second_again] = w.take()
    assert await w.heartbeat(second_again) == []


async def test_a_heartbeat_uses_the_lease_duration_of_now(driver: Driver) -> None:
    await driver.update(lease_seconds=30.0)
    job = await driver.add()
    w = await driver.connect()
    [lease] = w.take()
    await driver.update(lease_seconds=5.0)
    assert lease.deadline == driver.at(30.0)  # the lease it has keeps its deadline...
    await driver.advance_to(2.0)
    await w.heartbeat(lease)  # ...until a heartbeat extends it by the new duration
    await driver.advance_to(6.9)
    assert await driver.state(job) is JobState.UNDERWAY
    await driver.advance_to(7.0)
    await w.let_go()
    assert (await driver.job(job.id)).attempt == 2


async def test_new_dispatches_get_the_new_lease_duration(driver: Driver) -> None:
    await driver.update(lease_seconds=30.0)
    await driver.add_n(2)
    w = await driver.connect(credits=1)
    [first] = w.take()
    await driver.update(lease_seconds=7.0)
    await w.ok(first)
    [second] = w.take()
    assert first.deadline == driver.at(30.0)
    assert second.deadline == driver.at(7.0)


# ---- disconnects ----------------------------------------------------------------------------


async def test_a_disconnect_puts_back_what_the_worker_held(driver: Driver) -> None:
    jobs = await driver.add_n(3)
    w = await driver.connect(credits=3, worker_id="gone")
    held = w.take()
    assert await w.disconnect() == 3
    assert await driver.counts() == (3, 0, 0)
    for job in jobs:
        seen = await driver.job(job.id)
        assert (seen.state, seen.attempt) == (JobState.PENDING, 1)
        assert [(a.worker_id, a.error) for a in seen.attempts] == [("gone", WORKER_LOST)]
    other = await driver.connect(credits=3)
    assert sorted(other.taken_ids()) == sorted(j.id for j in jobs)
    rejected = await driver.backend.results(w.record, [_result(held[0].job.id, held[0].lease_id)])
    assert [r.reason for r in rejected] == [STALE_LEASE]
    assert await w.disconnect() == 0  # twice is harmless


async def test_a_disconnect_leaves_other_workers_alone(driver: Driver) -> None:
    await driver.update(width=2)
    await driver.add_n(2)
    a = await driver.connect(credits=1)
    b = await driver.connect(credits=1)
    [kept] = b.take()
    a.take()
    await a.disconnect()
    assert await driver.state(kept.job) is JobState.UNDERWAY
    await b.ok(kept)
    assert await driver.state(kept.job) is JobState.SUCCEEDED


# ---- lease_duration changes tell the workers ------------------------------------------------


async def test_a_lease_change_tells_the_queues_workers_their_heartbeat_interval(
    driver: Driver,
) -> None:
    await driver.update("q", lease_seconds=30.0)
    await driver.update("other", lease_seconds=30.0)
    w = await driver.connect("q")
    both = await driver.connect(["q", "other"])
    elsewhere = await driver.connect("other")
    assert driver.backend.heartbeat_interval(w.record) == 10.0
    await driver.update("q", lease_seconds=6.0)
    assert w.outbox.intervals == [2.0]
    assert both.outbox.intervals == [2.0]  # its shortest lease's third
    assert elsewhere.outbox.intervals == []
    assert driver.backend.heartbeat_interval(both.record) == 2.0
    await driver.update("other", lease_seconds=15.0)  # both's shortest is still q's
    assert both.outbox.intervals == [2.0]
    assert elsewhere.outbox.intervals == [5.0]
    await driver.update("other", lease_seconds=600.0)
    assert elsewhere.outbox.intervals == [5.0, 10.0]  # at most 10 s
    await driver.update("q", width=3)  # no lease change: nobody is told anything
    assert w.outbox.intervals == [2.0]


def _result(job_id: str, lease_id: str) -> WorkResult:
    return WorkResult(job_id, lease_id, b"")
