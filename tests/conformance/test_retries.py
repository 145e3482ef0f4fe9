"""Retries: the backoff schedule min(max, min * multiplier^(n-1)) with jitter bounds, dead
letters (max_attempts, non-retryable errors, every attempt kept), lost attempts, which
policy applies, RetryJob (a fresh budget), and listing and purging finished jobs."""

from __future__ import annotations

import pytest

from dispatchd.engine import (
    EngineLimits,
    FailedPrecondition,
    InvalidArgument,
    JobFailure,
    JobState,
    NewJob,
    NotFound,
    RetryPolicy,
)
from dispatchd.engine.reasons import LEASE_EXPIRED, WORKER_LOST
from tests.conformance.harness import Driver
from tests.conformance.test_leases import unknown_like

POLICY = RetryPolicy.of(5, 1.0, 10.0, 3.0, 0.0)


async def test_each_retry_waits_the_backoff_then_the_last_attempt_is_dead(driver: Driver) -> None:
    """min(max_backoff, min_backoff * multiplier^(attempt-1)): 1, 3, 9, then 10 (capped)."""
    job = await driver.add(retry_policy=POLICY)
    w = await driver.connect(credits=1)
    for attempt, backoff in [(1, 1.0), (2, 3.0), (3, 9.0), (4, 10.0)]:
        [lease] = w.take()
        assert (await driver.job(job.id)).attempt == attempt
        await driver.advance(0.5)
        await w.fail(lease)
        due = driver.clock.now + backoff
        seen = await driver.job(job.id)
        assert (seen.state, seen.not_before) == (JobState.SCHEDULED, due)
        assert await driver.listed(JobState.SCHEDULED) == [job.id]
        assert await driver.counts() == (0, 0, 1)
        await driver.advance(backoff - 0.01)
        assert w.take() == []  # not before it is due
        await driver.advance(0.01)
    [lease] = w.take()  # the fifth attempt is the last the policy allows
    await w.fail(lease, message="last")
    done = await driver.job(job.id)
    assert (done.state, done.attempt) == (JobState.DEAD, 5)
    assert done.error == JobFailure("last", True, "E")
    assert await driver.listed(JobState.DEAD) == [job.id]
    assert await driver.counts() == (0, 0, 0)


async def test_a_jittered_retry_is_due_within_its_bounds(driver: Driver) -> None:
    policy = RetryPolicy.of(3, 10.0, 100.0, 2.0, 0.5)
    await driver.update(width=100)
    jobs = await driver.submit(*[NewJob("q", retry_policy=policy)] * 50)
    w = await driver.connect(credits=100)
    await driver.advance(1.0)
    for lease in w.take():
        await w.fail(lease)
    dues = [(await driver.job(j.id)).not_before for j in jobs]
    assert all(d is not None and driver.at(6.0) <= d <= driver.at(16.0) for d in dues)
    assert len(set(dues)) > 10  # it really jitters


async def test_a_retry_after_is_a_floor_under_the_backoff(driver: Driver) -> None:
    job = await driver.add(retry_policy=POLICY)
    w = await driver.connect()
    [lease] = w.take()
    assert await w.answer(lease, JobFailure("busy", True, "E", retry_after=30.0)) == []
    assert (await driver.job(job.id)).not_before == driver.at(30.0)
    await driver.advance(1.0)  # the policy's 1 s backoff has passed; the floor has not
    assert w.take() == []
    await driver.advance(29.0)
    [again] = w.take()
    assert await w.answer(again, JobFailure("soon", True, "E", retry_after=0.5)) == []
    assert (await driver.job(job.id)).not_before == driver.at(33.0)  # backoff 3 s wins


async def test_every_attempt_is_kept_with_its_worker_times_and_error(driver: Driver) -> None:
    job = await driver.add(retry_policy=RetryPolicy.of(5, 1.0, 1.0, 1.0, 0.0))
    w = await driver.connect(credits=1, worker_id="w")
    await driver.advance_to(2.0)
    e1 = await w.fail(w.oldest(), message="first")
    await driver.advance_to(3.0)
    await driver.advance_to(5.0)
    e2 = await w.fail(w.oldest(), message="second")
    await driver.advance_to(6.0)
    await driver.advance_to(9.0)
    await w.ok(w.oldest(), b"done")
    done = await driver.job(job.id)
    assert (done.state, done.result, done.attempt) == (JobState.SUCCEEDED, b"done", 3)
    assert [(a.number, a.worker_id, a.error) for a in done.attempts] == [
        (1, "w", e1),
        (2, "w", e2),
        (3, "w", None),
    ]
    assert [(a.dispatch_time, a.finish_time) for a in done.attempts] == [
        (driver.at(0.0), driver.at(2.0)),
        (driver.at(3.0), driver.at(5.0)),
        (driver.at(6.0), driver.at(9.0)),
    ]
    assert (done.first_dispatch_time, done.dispatch_time) == (driver.at(0.0), driver.at(6.0))


async def test_a_retried_job_goes_back_to_its_place_in_line(driver: Driver) -> None:
    first = await driver.add(retry_policy=RetryPolicy.of(3, 1.0, 1.0, 1.0, 0.0))
    w = await driver.connect(credits=1)
    [lease] = w.take()
    later = await driver.add_n(3)
    await w.fail(lease)
    [other] = w.take()
    assert other.job.id == later[0].id
    await driver.advance(1.0)
    await w.ok(other)
    assert w.taken_ids() == [first.id]  # due again, and older than the rest


# ---- dead letters ----------------------------------------------------------------------------


async def test_a_non_retryable_error_is_dead_at_once(driver: Driver) -> None:
    job = await driver.add(retry_policy=POLICY)
    w = await driver.connect()
    failure = await w.fail(w.oldest(), retryable=False)
    done = await driver.job(job.id)
    assert (done.state, done.error) == (JobState.DEAD, failure)
    assert [a.error for a in done.attempts] == [failure]
    assert await driver.counts() == (0, 0, 0)


async def test_exhausted_attempts_end_dead_with_every_error(driver: Driver) -> None:
    job = await driver.add(retry_policy=RetryPolicy.of(3, 0.0, 0.0, 1.0, 0.0))
    w = await driver.connect()
    errors = []
    for i in range(3):
        errors.append(await w.fail(w.oldest(), message=f"e{i}"))
    done = await driver.job(job.id)
    assert (done.state, done.attempt, done.error) == (JobState.DEAD, 3, errors[-1])
    assert [a.error for a in done.attempts] == errors
    assert [a.number for a in done.attempts] == [1, 2, 3]


async def test_a_one_attempt_policy_ends_dead_not_failed(driver: Driver) -> None:
    job = await driver.add(retry_policy=RetryPolicy.of(1, 1.0, 1.0, 1.0, 0.0))
    w = await driver.connect()
    await w.fail(w.oldest())
    assert await driver.state(job) is JobState.DEAD


@pytest.mark.parametrize("limits", [EngineLimits(max_payload_bytes=64)])
async def test_an_oversized_result_under_a_policy_is_dead(driver: Driver) -> None:
    job = await driver.add(retry_policy=POLICY)
    w = await driver.connect()
    await w.ok(w.oldest(), b"x" * 65)
    done = await driver.job(job.id)
    assert done.state is JobState.DEAD
    assert done.error is not None
    assert (done.error.code, done.error.retryable) == ("ResultTooLarge", False)
    assert done.result == b""


async def test_without_any_policy_an_error_fails_the_job(driver: Driver) -> None:
    job = await driver.add()
    w = await driver.connect()
    failure = await w.fail(w.oldest(), retryable=True)
    done = await driver.job(job.id)
    assert (done.state, done.error, len(done.attempts)) == (JobState.FAILED, failure, 1)
    assert await driver.listed(JobState.FAILED) == [job.id]
    assert await driver.listed(JobState.DEAD) == []


# ---- lost attempts -------------------------------------------------------------------------


async def test_a_lease_expiry_under_a_policy_is_a_failed_attempt_with_backoff(
    driver: Driver,
) -> None:
    await driver.update(lease_seconds=5.0, retry_policy=POLICY)
    job = await driver.add()
    w = await driver.connect(worker_id="w")
    w.take()
    await driver.advance(5.0)
    seen = await driver.job(job.id)
    assert (seen.state, seen.not_before) == (JobState.SCHEDULED, driver.at(6.0))
    [attempt] = seen.attempts
    assert (attempt.error, attempt.worker_id) == (LEASE_EXPIRED, "w")
    assert (attempt.dispatch_time, attempt.finish_time) == (driver.at(0.0), driver.at(5.0))
    assert w.take() == []
    await w.let_go()
    await driver.advance(1.0)
    assert w.taken_ids() == [job.id]


async def test_lease_expiries_use_up_the_policy(driver: Driver) -> None:
    await driver.update(lease_seconds=1.0, retry_policy=RetryPolicy.of(2, 0.0, 0.0, 1.0, 0.0))
    job = await driver.add()
    w = await driver.connect()
    w.take()
    await driver.advance(1.0)
    await w.let_go()
    assert w.taken_ids() == [job.id]  # expired, and due again at once
    await driver.advance(1.0)
    done = await driver.job(job.id)
    assert done.state is JobState.DEAD
    assert [a.error for a in done.attempts] == [LEASE_EXPIRED] * 2


async def test_a_lease_expiry_without_a_policy_puts_the_job_back_at_once(driver: Driver) -> None:
    await driver.update(lease_seconds=5.0)
    job = await driver.add()
    w = await driver.connect()
    w.take()
    await driver.advance(5.0)
    assert w.take() == []  # a silent worker is sent nothing until it shows life
    await w.let_go()
    assert w.taken_ids() == [job.id]
    seen = await driver.job(job.id)
    assert (seen.state, seen.attempt) == (JobState.UNDERWAY, 2)
    assert [a.error for a in seen.attempts] == [LEASE_EXPIRED]


async def test_a_lost_worker_under_a_policy_is_a_failed_attempt(driver: Driver) -> None:
    await driver.update(retry_policy=POLICY)
    job = await driver.add()
    w = await driver.connect()
    w.take()
    await driver.advance(2.0)
    await w.disconnect()
    seen = await driver.job(job.id)
    assert (seen.state, seen.not_before, seen.error) == (
        JobState.SCHEDULED,
        driver.at(3.0),
        WORKER_LOST,
    )


async def test_a_retry_in_backoff_can_be_cancelled(driver: Driver) -> None:
    job = await driver.add(retry_policy=POLICY)
    w = await driver.connect()
    await w.fail(w.oldest())
    assert await driver.state(job) is JobState.SCHEDULED
    await driver.cancel(job)
    assert await driver.state(job) is JobState.CANCELLED
    assert await driver.counts() == (0, 0, 0)
    await driver.advance(5.0)
    assert w.take() == []
    assert w.outbox.cancelled == []  # no worker held it


# ---- which policy --------------------------------------------------------------------------


async def test_a_jobs_own_policy_overrides_its_queues(driver: Driver) -> None:
    await driver.update(retry_policy=RetryPolicy.of(1, 100.0, 100.0, 1.0, 0.0))
    by_queue = await driver.add()
    by_job = await driver.add(retry_policy=RetryPolicy.of(3, 2.0, 2.0, 1.0, 0.0))
    w = await driver.connect()
    await driver.advance(1.0)
    for lease in w.take():
        await w.fail(lease)
    assert await driver.state(by_queue) is JobState.DEAD  # one attempt allowed
    seen = await driver.job(by_job.id)
    assert (seen.state, seen.not_before) == (JobState.SCHEDULED, driver.at(3.0))


async def test_a_queue_policy_change_applies_to_the_next_failure(driver: Driver) -> None:
    await driver.update(retry_policy=POLICY)
    job = await driver.add()
    w = await driver.connect()
    await w.fail(w.oldest())
    assert await driver.state(job) is JobState.SCHEDULED
    view = await driver.update(retry_policy=None)
    assert view.settings.retry_policy is None
    await driver.advance(1.0)
    await w.fail(w.oldest())
    assert await driver.state(job) is JobState.FAILED


async def test_a_queue_policy_must_be_a_retry_policy(driver: Driver) -> None:
    await driver.update(retry_policy=POLICY)
    with pytest.raises(InvalidArgument):
        await driver.update(retry_policy=3, width=1)
    settings = (await driver.queue()).settings
    assert (settings.retry_policy, settings.width) == (POLICY, 10)


# ---- RetryJob ----------------------------------------------------------------------------------


async def test_retrying_a_dead_job_gives_it_a_fresh_budget(driver: Driver) -> None:
    job = await driver.add(retry_policy=RetryPolicy.of(2, 1.0, 1.0, 1.0, 0.0))
    w = await driver.connect()
    await w.fail(w.oldest())
    await driver.advance(1.0)
    await w.fail(w.oldest())
    assert await driver.state(job) is JobState.DEAD
    w.outbox.delivered.clear()
    w.take()
    await driver.backend.update_queue("q", paused=True)  # to see it waiting
    again = await driver.retry(job)
    assert (again.id, again.state) == (job.id, JobState.PENDING)
    assert await driver.listed(JobState.DEAD) == []
    assert await driver.listed(JobState.PENDING) == [job.id]
    await driver.update(paused=False)
    await driver.advance(1.0)
    await w.fail(w.oldest())  # two more attempts: the budget starts again
    seen = await driver.job(job.id)
    assert (seen.state, seen.not_before) == (JobState.SCHEDULED, driver.clock.now + 1.0)
    await driver.advance(1.0)
    await w.fail(w.oldest())
    done = await driver.job(job.id)
    assert (done.state, done.attempt) == (JobState.DEAD, 4)
    assert [a.number for a in done.attempts] == [1, 2, 3, 4]


async def test_retrying_a_failed_job_runs_it_again(driver: Driver) -> None:
    job = await driver.add(payload=b"p", priority=3)
    w = await driver.connect()
    await w.fail(w.oldest())
    assert await driver.state(job) is JobState.FAILED
    await driver.backend.update_queue("q", paused=True)
    again = await driver.retry(job)
    assert (again.state, again.payload, again.priority, again.attempt) == (
        JobState.PENDING,
        b"p",
        3,
        1,
    )
    await driver.update(paused=False)
    await w.ok(w.oldest())
    done = await driver.job(job.id)
    assert (done.state, done.attempt, len(done.attempts)) == (JobState.SUCCEEDED, 2, 2)


@pytest.mark.parametrize("state", ["PENDING", "SCHEDULED", "UNDERWAY", "SUCCEEDED", "CANCELLED"])
async def test_retrying_a_job_in_another_state_is_refused(driver: Driver, state: str) -> None:
    job = await driver.add(not_before=driver.at(10.0)) if state == "SCHEDULED" else None
    if job is None:
        job = await driver.add()
    if state in ("UNDERWAY", "SUCCEEDED"):
        w = await driver.connect()
        if state == "SUCCEEDED":
            await w.ok(w.oldest())
    elif state == "CANCELLED":
        await driver.cancel(job)
    with pytest.raises(FailedPrecondition) as refused:
        await driver.retry(job)
    assert str(refused.value) == f"job {job.id} is {state}; only DEAD or FAILED jobs can be retried"
    assert (await driver.state(job)).name == state


async def test_retrying_an_expired_or_unknown_job_is_refused(driver: Driver) -> None:
    job = await driver.add(expire_at=driver.at(1.0))
    await driver.advance(1.0)
    assert await driver.state(job) is JobState.EXPIRED
    with pytest.raises(FailedPrecondition, match="EXPIRED"):
        await driver.retry(job)
    ghost = unknown_like(job.id)
    with pytest.raises(NotFound) as missing:
        await driver.backend.retry_job(ghost)
    assert str(missing.value) == f"job {ghost!r} does not exist or is no longer retained"


# ---- listing and purging finished jobs -------------------------------------------------------


async def finished_mix(driver: Driver) -> dict[str, list[str]]:
    """Two dead, one failed, one succeeded, one cancelled, one expired, one pending."""
    once = RetryPolicy.of(1, 1.0, 1.0, 1.0, 0.0)
    dead = [await driver.add(retry_policy=once), await driver.add(retry_policy=once)]
    failed, good, cancelled = await driver.add(), await driver.add(), await driver.add()
    expired = await driver.add(expire_at=driver.at(5.0), not_before=driver.at(8.0))
    await driver.cancel(cancelled)
    w = await driver.connect(credits=10)
    await driver.advance_to(1.0)
    await w.fail(w.lease(dead[1].id))
    await driver.advance_to(2.0)
    await w.fail(w.lease(dead[0].id))
    await driver.advance_to(3.0)
    await w.fail(w.lease(failed.id))
    await driver.advance_to(4.0)
    await w.ok(w.lease(good.id))
    await driver.advance_to(5.0)
    await driver.update(paused=True)
    pending = await driver.add()
    return {
        "dead": [dead[1].id, dead[0].id],  # finish order
        "failed": [failed.id],
        "succeeded": [good.id],
        "cancelled": [cancelled.id],
        "expired": [expired.id],
        "pending": [pending.id],
    }


async def test_finished_jobs_are_listed_by_state_in_finish_order(driver: Driver) -> None:
    mix = await finished_mix(driver)
    for state in ("dead", "failed", "succeeded", "cancelled", "expired", "pending"):
        assert await driver.listed(JobState[state.upper()]) == mix[state]
    page, token = await driver.backend.list_jobs("q", JobState.DEAD, 1, "")
    assert [j.id for j in page] == mix["dead"][:1]
    assert token
    page, token = await driver.backend.list_jobs("q", JobState.DEAD, 1, token)
    assert ([j.id for j in page], token) == (mix["dead"][1:], "")


async def test_a_purge_forgets_only_the_state_it_names(driver: Driver) -> None:
    mix = await finished_mix(driver)
    assert await driver.backend.purge_jobs("q", JobState.DEAD) == 2
    for job_id in mix["dead"]:
        with pytest.raises(NotFound):
            await driver.job(job_id)
    for state in ("failed", "succeeded", "cancelled", "expired", "pending"):
        for job_id in mix[state]:
            await driver.job(job_id)
    assert await driver.backend.purge_jobs("q", JobState.DEAD) == 0
    assert await driver.backend.purge_jobs("q", JobState.UNSPECIFIED) == 4  # every finished
    assert await driver.listed(JobState.UNSPECIFIED) == mix["pending"]


@pytest.mark.parametrize("state", [JobState.PENDING, JobState.SCHEDULED, JobState.UNDERWAY])
async def test_a_purge_of_an_unfinished_state_is_refused(driver: Driver, state: JobState) -> None:
    job = await driver.add()
    with pytest.raises(InvalidArgument):
        await driver.backend.purge_jobs("q", state)
    with pytest.raises(NotFound):
        await driver.backend.purge_jobs("nope", JobState.DEAD)
    assert await driver.state(job) is JobState.PENDING


async def test_a_purge_touches_only_its_queue(driver: Driver) -> None:
    mine, theirs = await driver.add("a"), await driver.add("b")
    w = await driver.connect(["a", "b"])
    for lease in w.take():
        await w.fail(lease)
    assert await driver.backend.purge_jobs("a", JobState.FAILED) == 1
    with pytest.raises(NotFound):
        await driver.job(mine.id)
    assert await driver.state(theirs) is JobState.FAILED
