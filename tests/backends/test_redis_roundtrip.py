"""A worker's results and the next claim of its queue go to Redis in one round trip when
a claim of that queue is running (Replica._record): as BullMQ's moveToFinished fetches
the next job. Driven with a fixed clock and no timers, one replica."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence

import pytest

from dispatchd.backend import WorkerSpec, WorkResult
from dispatchd.engine import EngineLimits, JobState, LeaseRecord, NewJob
from dispatchd.redis import connect
from dispatchd.redis.leasing import RedisLeasing
from dispatchd.redis.replica import Replica

NOW = 1_000_000.0


class Inbox:
    """A worker's outbox that keeps what it is sent (and never answers)."""

    def __init__(self) -> None:
        self.leases: list[LeaseRecord] = []

    def deliver(self, leases: Sequence[LeaseRecord]) -> None:
        self.leases += leases

    def cancel(self, job_ids: list[str]) -> None: ...
    def drain(self, deadline: float) -> None: ...
    def settings(self, heartbeat_interval: float) -> None: ...
    def close(self, reason: str) -> None: ...


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisLeasing]:
    made = RedisLeasing(
        connect.client(redis_url), EngineLimits(), 3600.0, rng=random.Random(1), clock=lambda: NOW
    )
    yield made
    await made.close()


async def round_trips(store: RedisLeasing) -> int:
    """Requests (or pipelines) Redis has read so far, this INFO included."""
    return int((await store.client.info("stats"))["total_reads_processed"])


async def load_result_claim(store: RedisLeasing, queue: str) -> None:
    """Loads result_claim.lua (a NOSCRIPT and SCRIPT LOAD would count as round trips)."""
    await store.results_then_claim(queue, [[(f"unknown@{queue}", "-", b"", 0, None)]], "p.", [])


async def test_a_result_sent_while_a_claim_runs_goes_with_its_next_turn(
    store: RedisLeasing,
) -> None:
    """A result that arrives while a claim of its queue runs is sent in front of that
    claim's next turn, in one pipeline: claim, then result + claim, is two round trips
    (three when the result goes on its own), and the result counts as before."""
    queue = "roundtrip"
    await store.update_queue(queue, create=True)
    [(first, _)] = await store.submit([NewJob(queue, b"1")], NOW)
    replica = Replica(store, lambda: NOW, reap_every=1.0, timers=False)
    inbox = Inbox()
    worker = await replica.connect(WorkerSpec("w", [queue], 2), inbox)
    await replica.claims_done()
    assert [lease.job.id for lease in inbox.leases] == [first.record.id]
    more = await store.submit([NewJob(queue, b"2"), NewJob(queue, b"3")], NOW)
    [held] = inbox.leases

    await load_result_claim(store, queue)
    before = await round_trips(store)
    replica.kick(queue)  # a claim runs (a submit's wake-up), and the result comes meanwhile
    answer = asyncio.create_task(
        replica.results(worker, [WorkResult(first.record.id, held.lease_id, b"ok")])
    )
    await replica.claims_done()
    assert await answer == []
    assert await round_trips(store) - before - 1 == 2

    assert (await store.get_job(first.record.id)).record.state is JobState.SUCCEEDED
    assert [lease.job.id for lease in inbox.leases[1:]] == [job.record.id for job, _ in more]
    assert set(worker.leases) == {lease.lease_id for lease in inbox.leases[1:]}


async def test_a_held_result_whose_caller_left_does_not_stop_the_claim(
    store: RedisLeasing,
) -> None:
    """The stream whose result was held ends (its await is cancelled) before the claim's
    next turn: the result still goes with that turn and the claim hands its jobs out."""
    queue = "roundtrip-left"
    await store.update_queue(queue, create=True)
    [(first, _)] = await store.submit([NewJob(queue, b"1")], NOW)
    replica = Replica(store, lambda: NOW, reap_every=1.0, timers=False)
    inbox = Inbox()
    worker = await replica.connect(WorkerSpec("w", [queue], 2), inbox)
    await replica.claims_done()
    more = await store.submit([NewJob(queue, b"2"), NewJob(queue, b"3")], NOW)
    [held] = inbox.leases

    replica.kick(queue)
    answer = asyncio.create_task(
        replica.results(worker, [WorkResult(first.record.id, held.lease_id, b"ok")])
    )
    await asyncio.sleep(0)  # one step each: the claim waits on Redis, the result is held
    assert replica._held[queue]
    answer.cancel()
    await replica.claims_done()
    assert answer.cancelled()
    assert (await store.get_job(first.record.id)).record.state is JobState.SUCCEEDED
    assert [lease.job.id for lease in inbox.leases[1:]] == [job.record.id for job, _ in more]


async def scripts_run(store: RedisLeasing) -> int:
    """Scripts (EVALSHA) Redis has run so far."""
    stats = await store.client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_result_and_the_next_claim_are_one_script(store: RedisLeasing) -> None:
    """A result that frees a worker's credit while no claim of its queue runs starts one,
    and that claim's first turn takes the result: result_claim.lua, one script and one
    round trip for both (a result, then a claim of its own, is two)."""
    queue = "onescript"
    await store.update_queue(queue, create=True)
    [(first, _)] = await store.submit([NewJob(queue, b"1")], NOW)
    replica = Replica(store, lambda: NOW, reap_every=1.0, timers=False)
    inbox = Inbox()
    worker = await replica.connect(WorkerSpec("w", [queue], 1), inbox)
    await replica.claims_done()
    [held] = inbox.leases
    [(second, _)] = await store.submit([NewJob(queue, b"2")], NOW)
    await load_result_claim(store, queue)

    trips, scripts = await round_trips(store), await scripts_run(store)
    assert await replica.results(worker, [WorkResult(first.record.id, held.lease_id, b"ok")]) == []
    await replica.claims_done()
    assert await round_trips(store) - trips - 2 == 1  # less the two INFO calls
    assert await scripts_run(store) - scripts == 1

    assert (await store.get_job(first.record.id)).record.state is JobState.SUCCEEDED
    assert [lease.job.id for lease in inbox.leases[1:]] == [second.record.id]
    assert set(worker.leases) == {inbox.leases[1].lease_id}


async def test_results_and_claim_keep_apart_what_each_group_answered(
    store: RedisLeasing,
) -> None:
    """Two groups of results in one result_claim.lua: each group hears its own rejections
    and states; the claim after them leases the job their width freed."""
    queue = "onescript-groups"
    await store.update_queue(queue, create=True)
    await store.update_queue(queue, width=2)
    jobs = [job for job, _ in await store.submit([NewJob(queue, b"a"), NewJob(queue, b"b")], NOW)]
    [(third, _)] = await store.submit([NewJob(queue, b"c")], NOW)
    claimed = await store.claim(queue, "t.", [("w", 2)])
    assert [j.record.id for j in claimed.jobs] == [j.record.id for j in jobs]
    a, b = claimed.jobs
    groups = [
        [(a.record.id, a.lease_id, b"ok", 0, None), (b.record.id, "stale-lease", b"", 0, None)],
        [(b.record.id, b.lease_id, b"ok", 0, None)],
    ]
    answers, again = await store.results_then_claim(queue, groups, "t.", [("w", 2)])
    first, second = answers
    assert not isinstance(first, Exception)
    assert not isinstance(second, Exception)
    assert [r.job_id for r in first.rejected] == [b.record.id]
    assert first.states == [(a.record.id, JobState.SUCCEEDED)]
    assert second.rejected == []
    assert second.states == [(b.record.id, JobState.SUCCEEDED)]
    assert not isinstance(again, Exception)
    assert [j.record.id for j in again.jobs] == [third.record.id]


async def test_a_batch_of_submits_for_one_queue_is_one_script(store: RedisLeasing) -> None:
    """What a coalescing client's SubmitBatch reaches Redis as: one submit.lua for the
    whole batch of one queue, one round trip (the queue known to this store already)."""
    queue = "onescript-batch"
    await store.update_queue(queue, create=True)
    await store.submit([NewJob(queue, b"warm")], NOW)  # submit.lua loaded, the queue noted
    trips, scripts = await round_trips(store), await scripts_run(store)
    admitted = await store.submit([NewJob(queue, str(i).encode()) for i in range(100)], NOW)
    assert await round_trips(store) - trips - 2 == 1  # less the two INFO calls
    assert await scripts_run(store) - scripts == 1
    assert len(admitted) == 100
