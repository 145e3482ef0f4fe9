"""The Redis reaper looks at the queues that can be due, not at every queue: a pass over
1,000 idle queues reaps a bounded few, and what a dead replica left behind (a lease, a
delayed job, a slot request) is found through the due index alone (redis/reaping.py).
Driven with a fake clock (every script's test time) and no timers: each pass is called."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence

import pytest

from dispatchd.backend import WorkerSpec
from dispatchd.engine import EngineLimits, JobState, LeaseRecord, NewJob
from dispatchd.redis import connect
from dispatchd.redis.leasing import RedisLeasing
from dispatchd.redis.reaping import SWEEP_PER_PASS
from dispatchd.redis.replica import Replica

START = 1_000_000.0
IDLE = 1_000


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


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
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def stores(redis_url: str, clock: FakeClock) -> AsyncIterator[list[RedisLeasing]]:
    """Two replicas' connections (each with its own caches, as two processes have)."""
    made = [
        RedisLeasing(
            connect.client(redis_url),
            EngineLimits(max_queues=0),
            3600.0,
            rng=random.Random(i),
            clock=clock,
        )
        for i in range(2)
    ]
    yield made
    for store in made:
        await store.close()


def replica(store: RedisLeasing, clock: FakeClock) -> Replica:
    return Replica(store, clock, reap_every=1.0, timers=False)


async def evalsha_calls(store: RedisLeasing) -> int:
    stats = await store.client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_reaper_pass_over_idle_queues_reaps_a_bounded_few(
    stores: list[RedisLeasing], clock: FakeClock
) -> None:
    store = stores[0]
    for first in range(0, IDLE, 500):
        await store.submit([NewJob(f"idle.{i}") for i in range(first, first + 500)], clock.now)
    me = replica(store, clock)
    before = await evalsha_calls(store)
    await me.reap_pass()
    per_pass = await evalsha_calls(store) - before
    assert per_pass <= SWEEP_PER_PASS + 10, per_pass  # the old reaper: one script per queue
    assert me.reaped <= SWEEP_PER_PASS + 10
    for _ in range(IDLE // SWEEP_PER_PASS + 5):  # ... and in turn the sweep sees them all
        await me.reap_pass()
    assert me.reaped >= IDLE


async def test_a_dead_replicas_lease_is_reaped_through_the_index(
    stores: list[RedisLeasing], clock: FakeClock
) -> None:
    """Replica A claims a job for its worker and dies (nothing handed back); replica B, which
    serves nothing and sweeps nothing, takes the lease back once it expired."""
    a_store, b_store = stores
    await a_store.update_queue("orphan", lease_seconds=2.0, create=True)
    for first in range(0, IDLE, 500):  # other queues, which B does not look at
        await a_store.submit([NewJob(f"idle.{i}") for i in range(first, first + 500)], clock.now)
    [(job, _)] = await a_store.submit([NewJob("orphan", b"x")], clock.now)
    a = replica(a_store, clock)
    inbox = Inbox()
    await a.connect(WorkerSpec("doomed", ["orphan"], 1), inbox)
    await a.claims_done()
    assert [lease.job.id for lease in inbox.leases] == [job.record.id]
    await a.signals.stop()  # A is gone: no release, no heartbeat, no reaper
    b = replica(b_store, clock)
    await b.reap_pass(sweep=0)
    assert (await b_store.get_job(job.record.id)).record.state is JobState.UNDERWAY
    clock.now += 3.0
    before = await evalsha_calls(b_store)
    await b.reap_pass(sweep=0)
    assert await evalsha_calls(b_store) - before <= 3  # the orphan's queue, not 1,000
    back = (await b_store.get_job(job.record.id)).record
    assert (back.state, back.attempt) == (JobState.PENDING, 1)


async def test_a_delayed_job_of_a_queue_nobody_serves_comes_due_through_the_index(
    stores: list[RedisLeasing], clock: FakeClock
) -> None:
    store = stores[0]
    [(job, _)] = await store.submit([NewJob("later", not_before=START + 5.0)], clock.now)
    [(doomed, _)] = await store.submit([NewJob("ttl", expire_at=START + 7.0)], clock.now)
    b = replica(stores[1], clock)
    clock.now = START + 6.0
    await b.reap_pass(sweep=0)
    assert (await store.get_job(job.record.id)).record.state is JobState.PENDING
    assert (await store.get_job(doomed.record.id)).record.state is JobState.PENDING
    clock.now = START + 8.0
    await b.reap_pass(sweep=0)
    assert (await store.get_job(doomed.record.id)).record.state is JobState.EXPIRED
