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

    await store.results(queue, [(f"unknown@{queue}", "-", b"", 0, None)])  # loads result.lua
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
