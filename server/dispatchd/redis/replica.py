"""One replica's share of the work: the workers streaming to this process, claims from
Redis sized by their free credits, results and heartbeats, a reaper for leases of
replicas that died, and the drain. Every decision (width, rate, order, fencing) is made
by a Lua script in Redis; this module only decides when to ask."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

from redis.exceptions import RedisError

from dispatchd.engine import EngineError, JobFailure, Outcome, Rejection
from dispatchd.engine import limits as lim
from dispatchd.engine.errors import Unavailable, draining
from dispatchd.redis import records, signals
from dispatchd.redis.accounting import Accounting, Held
from dispatchd.redis.leasing import WORKER_TTL, RedisLeasing
from dispatchd.redis.records import StoredJob
from dispatchd.redis.signals import Signals
from dispatchd.redis.waiting import Waiting
from dispatchd.redis.workers import Outbox, RemoteWorker

log = logging.getLogger("dispatchd.redis")

#: Most jobs one claim asks for (a bigger credit is served by several claims).
MAX_CLAIM = 1000
RETRY_AFTER_ERROR = 1.0


class Replica:
    """This process's workers and its conversation with Redis about them."""

    def __init__(
        self,
        backend: RedisLeasing,
        clock: Callable[[], float],
        reap_every: float,
        accounting: Accounting | None = None,
    ) -> None:
        self.backend = backend
        self.accounting = accounting or Accounting(None)
        self._clock = clock
        self._reap_every = reap_every
        self.replica_id = uuid.uuid4().hex[:12]
        self.workers: dict[int, RemoteWorker] = {}
        self._by_queue: dict[str, list[RemoteWorker]] = {}
        self._prefixes: dict[str, str] = {}
        self._claiming: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self.waiting = Waiting()
        self._worker_seq = 0
        self._rr = 0
        self.draining = False
        self.idle = asyncio.Event()
        self.signals = Signals(
            backend.client,
            self._woken,
            self._cancelled,
            self._expired,
            self.waiting.finished,
            self._kick_all,
        )
        self._reaper: asyncio.Task[None] | None = None
        #: Called after each reaper pass (the metrics mirror refreshes there).
        self.after_reap: Callable[[], Awaitable[None]] | None = None

    def start(self) -> None:
        self.signals.start()
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop(), name="reaper")

    async def stop(self) -> None:
        tasks = [t for t in (self._reaper, *self._claiming.values()) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        for _, handle in self._timers.values():
            handle.cancel()
        await self.signals.stop()

    # ---- workers --------------------------------------------------------------------

    async def connect(
        self, worker_id: str, queues: Sequence[str], max_in_flight: int, outbox: Outbox
    ) -> RemoteWorker:
        """The engine's checks and messages for a hello; the queues exist from then on."""
        limits = self.backend.limits
        if self.draining:
            raise draining("takes no new workers")
        lim.check_hello(queues, max_in_flight, limits)
        names = tuple(dict.fromkeys(queues))
        for name in names:
            await self.backend.ensure_queue(name)
        self._worker_seq += 1
        key = self._worker_seq
        worker = RemoteWorker(
            key,
            worker_id or f"worker-{self.replica_id}-{key}",
            names,
            max_in_flight,
            self._clock(),
            outbox,
        )
        # Redis first: a failure here leaves nothing of the worker behind in this replica.
        await self.backend.register_workers(self._members(worker), self._clock())
        self.workers[key] = worker
        for name in names:
            self._by_queue.setdefault(name, []).append(worker)
            await self.signals.watch(signals.events(name))
        return worker

    def _members(self, worker: RemoteWorker) -> list[tuple[str, str]]:
        return [(q, f"{self.replica_id}:{worker.key}") for q in worker.queues]

    async def disconnect(self, worker: RemoteWorker) -> int:
        """The stream is gone: what it held waits again, an attempt counted."""
        if self.workers.pop(worker.key, None) is None:
            return 0
        for name in worker.queues:
            self._by_queue[name].remove(worker)
            self.signals.unwatch(signals.events(name))
        held = len(worker.held)
        await self._end_leases(worker, "lost")
        with contextlib.suppress(Unavailable):
            await self.backend.unregister_workers(self._members(worker))
        for name in worker.queues:
            self.kick(name)
        return held

    async def _end_leases(self, worker: RemoteWorker, mode: str) -> None:
        by_queue: dict[str, list[tuple[str, str]]] = {}
        for lease_id, (queue, job_id, _) in worker.held.items():
            by_queue.setdefault(queue, []).append((job_id, lease_id))
        worker.held.clear()
        self._note_idle()
        for queue, pairs in by_queue.items():
            try:
                await self.backend.release(queue, mode, pairs)
            except Unavailable as e:
                log.warning(
                    "could not hand back %d leases of %s (%s): they expire", len(pairs), queue, e
                )

    def set_credit(self, worker: RemoteWorker, max_in_flight: int) -> None:
        lim.check_credit(max_in_flight, 0, self.backend.limits)
        worker.max_in_flight = max_in_flight
        for name in worker.queues:
            self.kick(name)

    async def results(
        self, worker: RemoteWorker, items: Sequence[tuple[str, str, Outcome]]
    ) -> list[Rejection]:
        by_queue: dict[str, list[tuple[str, str, Outcome]]] = {}
        rejected = []
        answered: dict[str, tuple[Held, Outcome]] = {}
        for job_id, lease_id, outcome in items:
            held = worker.held.pop(lease_id, None)
            queue = held.queue if held is not None else records.queue_of(job_id)
            if queue is None:
                rejected.append(Rejection(job_id, lease_id, "unknown job"))
                continue
            if held is not None:
                answered[job_id] = (held, outcome)
            by_queue.setdefault(queue, []).append((job_id, lease_id, outcome))
        for queue, group in by_queue.items():
            refused, states = await self.backend.results(queue, group)
            rejected += refused
            self.accounting.rejected(queue, len(refused))
            for job_id, state in states:
                if job_id in answered:
                    held, outcome = answered[job_id]
                    failure = outcome if isinstance(outcome, JobFailure) else None
                    self.accounting.answered(held, state, failure)
            self.kick(queue)
        self._note_idle()
        return rejected

    async def heartbeat(self, worker: RemoteWorker, lease_ids: Sequence[str]) -> list[str]:
        targets = list(lease_ids) or list(worker.held)
        by_queue: dict[str, list[tuple[str, str]]] = {}
        unknown = []
        for lease_id in targets:
            held = worker.held.get(lease_id)
            if held is None:
                unknown.append(lease_id)
            else:
                by_queue.setdefault(held.queue, []).append((held.job_id, lease_id))
        for queue, pairs in by_queue.items():
            lost = await self.backend.heartbeat(queue, pairs)
            for lease_id in lost:
                worker.held.pop(lease_id, None)
            unknown += lost
        self._note_idle()
        return unknown

    # ---- claiming -------------------------------------------------------------------

    def kick(self, queue: str) -> None:
        """Claims for ``queue`` soon; a claim running now runs once more afterwards."""
        if queue not in self._by_queue or self.draining:
            return
        task = self._claiming.get(queue)
        if task is not None:
            self._again.add(queue)
            return
        self._claiming[queue] = asyncio.get_running_loop().create_task(self._claim(queue))

    def _woken(self, queue: str) -> None:
        """A 'w' for ``queue``: slot acquirers waiting here try again, workers claim."""
        self.waiting.queue_changed(queue)
        self.kick(queue)

    def _kick_all(self) -> None:
        for queue in list(self._by_queue):
            self.kick(queue)

    def _credits(self, queue: str) -> list[tuple[RemoteWorker, int]]:
        workers = self._by_queue.get(queue, [])
        if not workers:
            return []
        self._rr += 1
        start = self._rr % len(workers)
        out, budget = [], MAX_CLAIM
        for w in workers[start:] + workers[:start]:
            n = min(w.free_credits, budget)
            if n > 0:
                out.append((w, n))
                budget -= n
        return out

    async def _claim(self, queue: str) -> None:
        try:
            while not self.draining:
                self._again.discard(queue)
                credits = self._credits(queue)
                if not credits:
                    return
                wanted = sum(n for _, n in credits)
                try:
                    wake, jobs = await self.backend.claim(
                        queue, self._prefix(queue), [(w.worker_id, n) for w, n in credits]
                    )
                except (EngineError, RedisError) as e:
                    log.warning("claim for %s failed (%s); retrying in %.0f s", queue, e, 1.0)
                    self._arm(queue, RETRY_AFTER_ERROR)
                    return
                await self._hand_out(queue, credits, jobs)
                if wake is not None:
                    self._arm(queue, wake)
                if len(jobs) < wanted and queue not in self._again:
                    return
        finally:
            self._claiming.pop(queue, None)

    def _prefix(self, queue: str) -> str:
        """Lease ids are unique per queue in Redis; the prefix keeps them unique across
        the queues one worker serves here."""
        prefix = self._prefixes.get(queue)
        if prefix is None:
            prefix = self._prefixes[queue] = f"{len(self._prefixes) + 1:x}."
        return prefix

    async def _hand_out(
        self, queue: str, credits: list[tuple[RemoteWorker, int]], jobs: list[StoredJob]
    ) -> None:
        i, orphans = 0, []
        for worker, n in credits:
            batch = jobs[i : i + n]
            i += n
            if not batch:
                break
            if worker.key not in self.workers or worker.draining:
                orphans += [(j.record.id, j.lease_id) for j in batch]
                continue
            handed = time.monotonic()
            for job in batch:
                worker.held[job.lease_id] = Held(queue, job.record.id, handed)
            worker.outbox.deliver(batch)
            self.accounting.dispatched(queue, batch)
        if orphans:  # the worker left while the claim ran: hand them straight back
            await self.backend.release(queue, "drain", orphans)

    def _arm(self, queue: str, delay: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + max(0.001, math.ceil(delay * 1000) / 1000)
        armed = self._timers.get(queue)
        if armed is not None:
            if armed[0] <= due:
                return
            armed[1].cancel()
        self._timers[queue] = (due, loop.call_at(due, self._on_timer, queue))

    def _on_timer(self, queue: str) -> None:
        self._timers.pop(queue, None)
        self.kick(queue)

    # ---- signals --------------------------------------------------------------------

    def _cancelled(self, job_id: str) -> None:
        for worker in self.workers.values():
            if any(h.job_id == job_id for h in worker.held.values()):
                worker.outbox.cancel([job_id])

    def _expired(self, leases: list[tuple[str, str]]) -> None:
        """A reaper (of any replica) took these leases back: their workers' credits free."""
        for job_id, lease_id in leases:
            for worker in self.workers.values():
                held = worker.held.get(lease_id)
                if held is not None and held.job_id == job_id:
                    del worker.held[lease_id]
                    self.kick(held.queue)
        self._note_idle()

    # ---- reaper and drain -----------------------------------------------------------

    async def _reap_loop(self) -> None:
        while True:
            delay = self._reap_every
            try:
                for queue in await self.backend.queue_names():
                    reaped, next_deadline = await self.backend.reap(queue)
                    self.accounting.lease_expired(queue, reaped)
                    if next_deadline is not None:
                        delay = min(delay, next_deadline + 0.01)
                entries = [m for w in self.workers.values() for m in self._members(w)]
                await self.backend.register_workers(entries, self._clock())
                if self.after_reap is not None:
                    await self.after_reap()
            except (EngineError, RedisError) as e:  # a script error too: logged, retried
                log.warning("reaper pass failed (%s); next in %.1f s", e, delay)
            self._kick_all()  # a safety net for a wake-up lost with a pub/sub connection
            await asyncio.sleep(max(0.05, min(delay, WORKER_TTL / 3)))

    def underway(self) -> int:
        return sum(len(w.held) for w in self.workers.values())

    def _note_idle(self) -> None:
        if self.underway() == 0:
            self.idle.set()

    def begin_drain(self, deadline: float) -> None:
        self.draining = True
        for worker in self.workers.values():
            worker.draining = True
            worker.outbox.drain(deadline)

    async def finish_drain(self, grace: float) -> int:
        """Waits up to ``grace`` for underway jobs; hands the rest back. Returns how many."""
        if self.underway() > 0:
            self.idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle.wait(), grace)
        left = self.underway()
        for worker in list(self.workers.values()):
            await self._end_leases(worker, "drain")
            worker.outbox.close("server drained")
        return left
