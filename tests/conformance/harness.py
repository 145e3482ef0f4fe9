"""What the conformance tests drive a backend with: a fake clock, an outbox that keeps what
it was told, and a driver that builds either backend behind the backend interface
(dispatchd.backend) and gives the tests short steps (submit, connect, answer, advance).

Both backends run with ``timers=False``: nothing happens by itself. Time moves only when a
test moves the clock, and time-driven work (lease expiry, delayed jobs becoming due,
expiry, rate tokens, slot expiry) happens when the test calls :meth:`Driver.settle`.
Every step that changes something settles afterwards, so each step's dispatches are in
the outboxes when it returns, on either backend."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dispatchd.backend import Backend, WorkerSpec, WorkResult
from dispatchd.embedded.backend import EmbeddedBackend
from dispatchd.engine import (
    EngineLimits,
    JobFailure,
    JobState,
    JobView,
    LeaseRecord,
    NewJob,
    Outcome,
    QueueView,
    Rejection,
    SlotRecord,
    WorkerRecord,
)
from dispatchd.redis import connect
from dispatchd.redis.backend import RedisBackend
from dispatchd.redis.leasing import RedisLeasing

#: Where every fake clock starts: a plausible Unix time, so absolute not_before and
#: expire_at values look like the ones clients send.
START = 1_000_000.0


class FakeClock:
    """Seconds since the epoch, moved only by the test."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def at(self, offset: float) -> float:
        """The absolute time ``offset`` seconds after the start (for not_before, expire_at)."""
        return START + offset


@dataclass
class RecordingOutbox:
    """An Outbox (dispatchd.backend.Outbox) that keeps every message it was given."""

    delivered: list[LeaseRecord] = field(default_factory=list)
    batches: list[list[LeaseRecord]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    drains: list[float] = field(default_factory=list)
    intervals: list[float] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)

    def deliver(self, leases: Sequence[LeaseRecord]) -> None:
        self.batches.append(list(leases))
        self.delivered.extend(leases)

    def cancel(self, job_ids: list[str]) -> None:
        self.cancelled.extend(job_ids)

    def drain(self, deadline: float) -> None:
        self.drains.append(deadline)

    def settings(self, heartbeat_interval: float) -> None:
        self.intervals.append(heartbeat_interval)

    def close(self, reason: str) -> None:
        self.closed.append(reason)


class Worker:
    """A connected worker: its record, its outbox, and the leases it holds."""

    def __init__(self, driver: Driver, record: WorkerRecord, outbox: RecordingOutbox) -> None:
        self.driver = driver
        self.record = record
        self.outbox = outbox
        self._seen = 0
        self.held: dict[str, LeaseRecord] = {}  # job id -> lease, not answered yet

    def take(self) -> list[LeaseRecord]:
        """The leases delivered since the last take, in dispatch order."""
        new = self.outbox.delivered[self._seen :]
        self._seen = len(self.outbox.delivered)
        for lease in new:
            self.held[lease.job.id] = lease
        return new

    def taken_ids(self) -> list[str]:
        return [lease.job.id for lease in self.take()]

    def oldest(self) -> LeaseRecord:
        """The held lease delivered first."""
        self.take()
        return next(iter(self.held.values()))

    def lease(self, job_id: str) -> LeaseRecord:
        self.take()
        return self.held[job_id]

    async def answer(self, lease: LeaseRecord, outcome: Outcome) -> list[Rejection]:
        self.held.pop(lease.job.id, None)
        result = WorkResult(lease.job.id, lease.lease_id, outcome)
        rejected = await self.driver.backend.results(self.record, [result])
        await self.driver.settle()
        return rejected

    async def ok(self, lease: LeaseRecord, result: bytes = b"ok") -> None:
        assert await self.answer(lease, result) == []

    async def fail(
        self, lease: LeaseRecord, retryable: bool = True, message: str = "boom", code: str = "E"
    ) -> JobFailure:
        failure = JobFailure(message, retryable, code)
        assert await self.answer(lease, failure) == []
        return failure

    async def finish_all(self) -> list[str]:
        """Answers success for everything held; returns the job ids, in dispatch order."""
        self.take()
        done = list(self.held.values())
        for lease in done:
            await self.ok(lease)
        return [lease.job.id for lease in done]

    async def heartbeat(self, *leases: LeaseRecord) -> list[str]:
        lost = await self.driver.backend.heartbeat(self.record, [ls.lease_id for ls in leases])
        await self.driver.settle()
        return lost

    async def let_go(self) -> list[str]:
        """Shows life after a lease expired and lets go of what it lost: a heartbeat naming
        just the leases it still holds. Until a silent worker is heard from, the server sends
        it nothing and keeps a lost lease's credit taken (it may still be running the job),
        so a test expecting redelivery to this same worker calls this first."""
        self.take()
        for job_id in [j for j, ls in self.held.items() if ls.lease_id in self.record.lost]:
            del self.held[job_id]
        named = [ls.lease_id for ls in self.held.values()] or ["none-held"]
        return await self.heartbeat_ids(named)

    async def heartbeat_ids(self, lease_ids: list[str]) -> list[str]:
        lost = await self.driver.backend.heartbeat(self.record, lease_ids)
        await self.driver.settle()
        return lost

    async def set_credit(self, n: int) -> None:
        await self.driver.backend.set_credit(self.record, n)
        await self.driver.settle()

    async def disconnect(self) -> int:
        held = await self.driver.backend.disconnect(self.record)
        self.held.clear()
        await self.driver.settle()
        return held


class Driver:
    """One backend under test, its fake clock, and the steps the tests take."""

    def __init__(
        self,
        name: str,
        backend: Backend,
        clock: FakeClock,
        open_peer: Callable[[], Awaitable[Backend]] | None = None,
    ) -> None:
        self.name = name
        self.backend = backend
        self.clock = clock
        self.workers: list[Worker] = []
        self._open_peer = open_peer
        self.peers: list[Backend] = []
        self.acquirers: list[asyncio.Task[SlotRecord]] = []

    async def peer(self) -> Backend:
        """Another server process on the same queues (a shared backend's replica)."""
        assert self.backend.capabilities.shared
        assert self._open_peer is not None
        backend = await self._open_peer()
        self.peers.append(backend)
        return backend

    # ---- time -----------------------------------------------------------------------

    async def settle(self) -> None:
        # The loop turns first, as a server's does between messages: what a call asked for
        # on its own (the embedded pump's kick, a Redis claim) runs before the settle.
        await asyncio.sleep(0)
        await self.backend.settle()

    async def advance(self, seconds: float) -> None:
        """Moves the clock and does what became due."""
        self.clock.advance(seconds)
        await self.settle()

    async def advance_to(self, offset: float) -> None:
        """Moves the clock to ``offset`` seconds after the start."""
        target = self.clock.at(offset)
        assert target >= self.clock.now, (target, self.clock.now)
        self.clock.now = target
        await self.settle()

    def at(self, offset: float) -> float:
        return self.clock.at(offset)

    # ---- jobs -----------------------------------------------------------------------

    async def submit_many(self, specs: Sequence[NewJob]) -> list[tuple[JobView, bool]]:
        out = await self.backend.submit(specs)
        await self.settle()
        return out

    async def submit(self, *specs: NewJob) -> list[JobView]:
        return [job for job, _ in await self.submit_many(specs)]

    async def add(self, queue: str = "q", **fields: Any) -> JobView:
        """One new job with any NewJob fields."""
        [(job, repeated)] = await self.submit_many([NewJob(queue, **fields)])
        assert not repeated
        return job

    async def add_n(self, n: int, queue: str = "q", **fields: Any) -> list[JobView]:
        """``n`` jobs, one submit each (so each gets its own place in line)."""
        return [await self.add(queue, **fields) for _ in range(n)]

    async def job(self, job_id: str) -> JobView:
        return await self.backend.get_job(job_id)

    async def state(self, job: JobView | str) -> JobState:
        return (await self.job(job if isinstance(job, str) else job.id)).state

    async def states(self, jobs: Sequence[JobView]) -> list[JobState]:
        return [await self.state(j) for j in jobs]

    async def cancel(self, job: JobView) -> JobView:
        view = await self.backend.cancel_job(job.id)
        await self.settle()
        return view

    async def retry(self, job: JobView) -> JobView:
        view = await self.backend.retry_job(job.id)
        await self.settle()
        return view

    async def reprioritize(self, job: JobView, priority: int) -> JobView:
        view = await self.backend.reprioritize_job(job.id, priority)
        await self.settle()
        return view

    async def listed(self, state: JobState, queue: str = "q", page_size: int = 1000) -> list[str]:
        """Every job of ``queue`` in ``state``, walking pages of ``page_size``."""
        out: list[str] = []
        token = ""
        while True:
            page, token = await self.backend.list_jobs(queue, state, page_size, token)
            out.extend(j.id for j in page)
            if not token:
                return out

    # ---- queues ---------------------------------------------------------------------

    async def queue(self, name: str = "q") -> QueueView:
        return await self.backend.get_queue(name)

    async def counts(self, name: str = "q") -> tuple[int, int, int]:
        """(pending, underway, scheduled) of a queue."""
        v = await self.queue(name)
        return v.pending_count, v.underway_count, v.scheduled_count

    async def update(self, name: str = "q", **settings: Any) -> QueueView:
        """update_queue (creating the queue), then settle."""
        settings.setdefault("create", True)
        view = await self.backend.update_queue(name, **settings)
        await self.settle()
        return view

    # ---- slots ----------------------------------------------------------------------

    async def acquire(
        self, queue: str = "q", holder: str = "cron-7", ttl: float = 10.0, priority: int = 0
    ) -> asyncio.Task[SlotRecord]:
        """An AcquireSlot call, running: it returns when the slot is granted."""
        task = asyncio.get_running_loop().create_task(
            self.backend.acquire_slot(queue, holder, ttl, priority)
        )
        self.acquirers.append(task)
        await asyncio.sleep(0)  # it has asked
        await self.settle()
        return task

    async def granted(self, task: asyncio.Task[SlotRecord], within: float = 5.0) -> SlotRecord:
        """The slot, once ``task`` got it (AssertionError after ``within`` real seconds)."""
        await self.settle()
        try:
            return await asyncio.wait_for(asyncio.shield(task), within)
        except TimeoutError:
            raise AssertionError(f"no slot granted within {within:g} s") from None

    async def waiting(self, task: asyncio.Task[SlotRecord]) -> bool:
        """Whether ``task`` still waits for its slot once what is due was done."""
        await self.settle()
        for _ in range(10):  # a grant made by the settle reaches the task in a few turns
            await asyncio.sleep(0)
        return not task.done()

    async def stop_acquirers(self) -> None:
        for task in self.acquirers:
            task.cancel()
        await asyncio.gather(*self.acquirers, return_exceptions=True)

    # ---- workers --------------------------------------------------------------------

    async def connect(
        self, queues: str | Sequence[str] = "q", credits: int = 10, worker_id: str = ""
    ) -> Worker:
        names = [queues] if isinstance(queues, str) else list(queues)
        outbox = RecordingOutbox()
        record = await self.backend.connect(WorkerSpec(worker_id, names, credits), outbox)
        worker = Worker(self, record, outbox)
        self.workers.append(worker)
        await self.settle()
        return worker


async def open_embedded(limits: EngineLimits, clock: FakeClock, seed: int = 7) -> EmbeddedBackend:
    backend = EmbeddedBackend(limits, clock, timers=False, rng=random.Random(seed))
    await backend.start()
    return backend


async def open_redis(
    url: str, limits: EngineLimits, clock: FakeClock, seed: int = 7
) -> RedisBackend:
    """As redis/opening.py's open_redis_backend builds it, with no timers and every
    script on the fake clock."""
    ops = RedisLeasing(
        connect.client(url),
        limits,
        limits.finished_retention_seconds,
        rng=random.Random(seed),
        clock=clock,
    )
    backend = RedisBackend(ops, clock, reap_every=1.0, timers=False)
    await backend.start()
    return backend
