"""The Redis scripts driven directly, on a real redis-server, with a fake clock (the test
time override every script takes): delays, lease deadlines, tallies of what no reply
shows, HTTP attempt data, Retry-After, stored http_target and the settings channel."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from dispatchd.engine import EngineLimits, HttpTarget, JobFailure, JobState, NewJob, RetryPolicy
from dispatchd.engine.reasons import LEASE_EXPIRED, STALE_LEASE, UNKNOWN_JOB
from dispatchd.redis import connect, records, signals
from dispatchd.redis.leasing import RedisLeasing
from dispatchd.redis.records import StoredJob

START = 1_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def redis(redis_url: str, clock: FakeClock) -> AsyncIterator[RedisLeasing]:
    store = RedisLeasing(
        connect.client(redis_url), EngineLimits(), 3600.0, rng=random.Random(7), clock=clock
    )
    yield store
    await store.close()


async def submit(redis: RedisLeasing, clock: FakeClock, *specs: NewJob) -> list[StoredJob]:
    return [job for job, _ in await redis.submit(list(specs), clock.now)]


async def claim_one(redis: RedisLeasing, queue: str) -> StoredJob:
    claimed = await redis.claim(queue, "t.", [("w1", 1)])
    assert len(claimed.jobs) == 1, claimed
    return claimed.jobs[0]


async def state_of(redis: RedisLeasing, job: StoredJob) -> JobState:
    return (await redis.get_job(job.record.id)).record.state


async def test_a_delayed_job_stays_scheduled_until_the_fake_clock_passes_its_not_before(
    redis: RedisLeasing, clock: FakeClock
) -> None:
    (job,) = await submit(redis, clock, NewJob("d", b"x", not_before=START + 10))
    assert job.record.state is JobState.SCHEDULED
    assert job.record.submit_time == START
    clock.now = START + 9.5
    await redis.reap("d")
    claimed = await redis.claim("d", "t.", [("w1", 1)])
    assert claimed.jobs == []
    assert claimed.wake == pytest.approx(0.5)
    assert await state_of(redis, job) is JobState.SCHEDULED
    clock.now = START + 10.001
    await redis.reap("d")
    assert await state_of(redis, job) is JobState.PENDING
    leased = await claim_one(redis, "d")
    assert leased.record.dispatch_time == pytest.approx(START + 10.001)


async def test_a_lease_expires_by_reap_only_when_the_fake_clock_passes_its_deadline(
    redis: RedisLeasing, clock: FakeClock
) -> None:
    await redis.update_queue("l", lease_seconds=5.0, create=True)
    (job,) = await submit(redis, clock, NewJob("l", b"x"))
    leased = await claim_one(redis, "l")
    assert leased.lease_deadline == START + 5.0
    clock.now = START + 4.9
    assert (await redis.reap("l")).taken == 0
    assert await state_of(redis, job) is JobState.UNDERWAY
    clock.now = START + 5.1
    reaped = await redis.reap("l")
    assert (reaped.taken, reaped.next_deadline) == (1, None)
    back = (await redis.get_job(job.record.id)).record
    assert (back.state, back.attempt) == (JobState.PENDING, 1)
    assert back.attempts[0].error == JobFailure(LEASE_EXPIRED.message, True, "LeaseExpired")
    late = await redis.results("l", [(job.record.id, leased.lease_id, b"late", 0, None)])
    assert [r.reason for r in late.rejected] == [STALE_LEASE]
    ghost = records.job_id("01NOSUCHJOB", "l")
    unknown = await redis.results("l", [(ghost, "t.9", b"", 0, None)])
    assert [r.reason for r in unknown.rejected] == [UNKNOWN_JOB]


async def test_jobs_expiring_while_waiting_are_tallied_by_the_script_that_expired_them(
    redis: RedisLeasing, clock: FakeClock
) -> None:
    await redis.update_queue("e", paused=True, create=True)
    a, b = await submit(
        redis, clock, NewJob("e", b"a", expire_at=START + 1), NewJob("e", b"b", expire_at=START + 2)
    )
    clock.now = START + 1.5
    claimed = await redis.claim("e", "t.", [("w1", 5)])  # paused: nothing claimed, a expires
    assert (claimed.jobs, claimed.tally.expired("e")) == ([], 1)
    assert await state_of(redis, a) is JobState.EXPIRED
    clock.now = START + 2.5
    assert (await redis.reap("e")).tally.expired("e") == 1
    assert await state_of(redis, b) is JobState.EXPIRED
    assert (await redis.reap("e")).tally == records.Tally()  # counted once


async def test_the_next_job_of_an_ordering_key_expiring_in_line_is_tallied_by_the_result(
    redis: RedisLeasing, clock: FakeClock
) -> None:
    head, behind = await submit(
        redis,
        clock,
        NewJob("k", b"1", ordering_key="o"),
        NewJob("k", b"2", ordering_key="o", expire_at=START + 1),
    )
    leased = await claim_one(redis, "k")
    clock.now = START + 2  # no tick ran: the job behind expires when the key passes to it
    answered = await redis.results("k", [(head.record.id, leased.lease_id, b"ok", 0, None)])
    assert answered.states == [(head.record.id, JobState.SUCCEEDED)]
    assert answered.tally.finished == {("k", JobState.EXPIRED): 1}
    assert await state_of(redis, behind) is JobState.EXPIRED


async def test_lost_attempts_that_retry_or_end_a_job_are_tallied(
    redis: RedisLeasing, clock: FakeClock
) -> None:
    policy = RetryPolicy(max_attempts=2, min_backoff=1.0, max_backoff=1.0, jitter=0.0)
    await redis.update_queue("r", lease_seconds=5.0, retry_policy=policy, create=True)
    (job,) = await submit(redis, clock, NewJob("r", b"x"))
    await claim_one(redis, "r")
    clock.now += 6
    first = await redis.reap("r")
    assert (first.tally.retried, first.tally.finished) == ({"r": 1}, {})
    clock.now += 2
    await redis.reap("r")
    leased = await claim_one(redis, "r")
    released = await redis.release("r", "lost", [(job.record.id, leased.lease_id)])
    assert released.ended == 1
    assert released.tally.finished == {("r", JobState.DEAD): 1}


async def test_http_status_latency_and_retry_after_are_kept_on_the_attempts(
    redis: RedisLeasing, clock: FakeClock
) -> None:
    policy = RetryPolicy(max_attempts=5, min_backoff=1.0, max_backoff=1.0, jitter=0.0)
    await redis.update_queue("h", retry_policy=policy, create=True)
    (job,) = await submit(redis, clock, NewJob("h", b"x"))
    jid = job.record.id
    busy = JobFailure("HTTP 503", True, "HTTP503", retry_after=30.0)
    leased = await claim_one(redis, "h")
    await redis.results("h", [(jid, leased.lease_id, busy, 503, 0.25)])
    held = (await redis.get_job(jid)).record
    assert (held.state, held.not_before) == (JobState.SCHEDULED, START + 30.0)  # not 1 s
    clock.now = START + 30.0
    await redis.reap("h")
    leased = await claim_one(redis, "h")
    forever = JobFailure("HTTP 429", True, "HTTP429", retry_after=1e12)
    await redis.results("h", [(jid, leased.lease_id, forever, 429, 0.5)])
    held = (await redis.get_job(jid)).record
    assert held.not_before == START + 30.0 + EngineLimits().max_retry_after_seconds  # capped
    clock.now = held.not_before
    await redis.reap("h")
    leased = await claim_one(redis, "h")
    await redis.results("h", [(jid, leased.lease_id, b"done", 200, 0.125)])
    attempts = (await redis.get_job(jid)).record.attempts
    assert [(a.http_status, a.latency) for a in attempts] == [(503, 0.25), (429, 0.5), (200, 0.125)]
    assert attempts[-1].error is None


async def test_an_http_target_is_stored_returned_and_cleared(redis: RedisLeasing) -> None:
    target = HttpTarget.of("https://hooks.example/job", "PUT", {"X-Team": "a"}, 5.0, (202,), "k")
    view = await redis.update_queue("t", http_target=target, create=True)
    assert view.settings.http_target == target
    assert (await redis.get_queue("t")).settings.http_target == target
    assert [v.settings.http_target for v in await redis.list_queues()] == [target]
    assert (await redis.update_queue("t", width=3)).settings.http_target == target
    assert (await redis.update_queue("t", http_target=None)).settings.http_target is None


async def test_a_created_queue_and_a_changed_setting_are_announced_on_dq_qs(
    redis: RedisLeasing,
) -> None:
    pubsub = redis.client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(signals.QUEUE_SETTINGS)
    try:
        await redis.update_queue("a", create=True)
        await redis.update_queue("a", create=True)  # exists: nothing changed
        await redis.update_queue("a", width=10)  # the default width: nothing changed
        await redis.update_queue("b", width=2, create=True)
        await redis.update_queue("a", lease_seconds=12.0)
        await redis.update_queue("a", http_target=HttpTarget.of("http://h/"))
        heard: list[str] = []
        while len(heard) < 4:
            msg = await asyncio.wait_for(pubsub.get_message(timeout=5.0), 10.0)
            if msg is not None:
                heard.append(msg["data"].decode())
        assert heard == ["a", "b", "a", "a"]
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_pages_skip_forgotten_jobs_and_resume_where_the_scan_budget_ran_out(
    redis: RedisLeasing, clock: FakeClock
) -> None:
    jobs = await submit(redis, clock, *[NewJob("g", b"")] * 300)
    for job in jobs:
        await redis.cancel(job.record.id)
    # Retention expired the first 250 job hashes; the reaper has not trimmed the index yet.
    await redis.client.delete(*[records.job_key("g", j.record.id) for j in jobs[:250]])
    listed: list[str] = []
    sizes: list[int] = []
    token = ""
    while True:
        page, token = await redis.list_jobs("g", JobState.CANCELLED, 10, token)
        listed += [j.record.id for j in page]
        sizes.append(len(page))
        if not token:
            break
    assert listed == [j.record.id for j in jobs[250:]]
    assert sizes[0] == 0  # one script looks at a bounded part of the index, then hands a token
