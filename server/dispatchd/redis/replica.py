"""One replica's share of the work: the workers streaming to this process, claims from
Redis sized by their free credits, results and heartbeats, a reaper for leases of
replicas that died, and the drain. Every decision (width, rate, order, fencing) is made
by a Lua script in Redis; this module only decides when to ask.

Workers and their leases are the engine's own records (WorkerRecord, LeaseRecord), so
the service layer above sees the same types whichever backend serves it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence

from redis.exceptions import RedisError

from dispatchd.backend import Outbox, QueueListener, WorkerSpec, WorkResult, heartbeat_interval
from dispatchd.engine import (
    EngineError,
    EngineObserver,
    FinishedJob,
    JobFailure,
    JobRecord,
    JobThrottle,
    LeaseRecord,
    Rejection,
    WorkerRecord,
)
from dispatchd.engine import limits as lim
from dispatchd.engine.errors import Internal, Unavailable, draining
from dispatchd.engine.reasons import UNKNOWN_JOB
from dispatchd.engine.throttling import reason_text
from dispatchd.redis import records, signals
from dispatchd.redis.accounting import Accounting
from dispatchd.redis.leasing import WORKER_TTL, Answered, Claimed, RedisLeasing, ResultItem
from dispatchd.redis.reaping import SWEEP_PER_PASS
from dispatchd.redis.records import StoredJob, Tally
from dispatchd.redis.signals import Signals
from dispatchd.redis.waiting import Waiting
from dispatchd.stall import StallWatch

log = logging.getLogger("dispatchd.redis")

#: Most jobs one claim asks for (a bigger credit is served by several claims).
MAX_CLAIM = 1000
RETRY_AFTER_ERROR = 1.0
#: The lease id a result for a lease the worker does not hold goes to result.lua with:
#: no lease has it, so the script refuses the result whatever the worker named.
NOT_HELD = "-"


class Replica:
    """This process's workers and its conversation with Redis about them."""

    def __init__(
        self,
        ops: RedisLeasing,
        clock: Callable[[], float],
        reap_every: float,
        accounting: Accounting | None = None,
        timers: bool = True,
        observer: EngineObserver | None = None,
    ) -> None:
        self.ops = ops
        self.accounting = accounting or Accounting(None)
        #: Told of the dispatches and finishes of this replica's workers (the dashboard's
        #: trends, spans); the counters are the accounting's.
        self.observer = observer or EngineObserver()
        self._clock = clock
        self._reap_every = reap_every
        self._timers_on = timers
        self.replica_id = uuid.uuid4().hex[:12]
        self.workers: dict[int, WorkerRecord] = {}
        self._outboxes: dict[int, Outbox] = {}
        self._by_queue: dict[str, list[WorkerRecord]] = {}
        self._leases: dict[str, float] = {}  # lease_duration of the queues served here
        self._told: dict[int, float] = {}  # worker key -> heartbeat interval it was told
        self._prefixes: dict[str, str] = {}
        self._claiming: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.listeners: list[QueueListener] = []
        self.waiting = Waiting()
        self._worker_seq = 0
        self._rr = 0
        self._promised: dict[int, int] = {}  # worker key -> credits of claims running now
        #: Queues whose last claim got fewer jobs than it asked for: nothing more to claim
        #: until a wake-up or a timer says so. A claim that is let go of credits another
        #: claim left unused does not ask them again: with several queues empty and one
        #: full, the empty ones (kicked first) took every credit in turn, for ever.
        self._drained: set[str] = set()
        self._short: set[str] = set()  # queues whose claim got fewer credits for that
        self._turns: dict[int, int] = {}  # worker key -> its queue that claims first next
        #: Queues whose last claim got all it asked for: more may be pending (_record).
        self._backlog: set[str] = set()
        #: Results waiting for the next turn of their queue's running claim (_record).
        self._held: dict[str, list[tuple[list[ResultItem], asyncio.Future[Answered]]]] = {}
        self.draining = False
        self.idle = asyncio.Event()
        self.signals = Signals(
            ops.client,
            self._woken,
            self.cancelled,
            self._expired,
            self.waiting.finished,
            self._resubscribed,
            self._settings_changed,
        )
        self._reaper: asyncio.Task[None] | None = None
        self._grace = 0.0
        #: Called after each reaper pass (the fleet's view of this replica's workers).
        self.after_reap: Callable[[], Awaitable[None]] | None = None
        self._stalled = False
        self._stall = StallWatch(self._note_stall)
        #: Reaper passes so far, and the queues they reaped (a pass's cost).
        self.passes = 0
        self.reaped = 0

    def start(self) -> None:
        self.signals.start()
        if self._timers_on:
            loop = asyncio.get_running_loop()
            self._reaper = loop.create_task(self._reap_loop(), name="reaper")
            self._stall.start()

    async def stop(self) -> None:
        tasks = [
            t for t in (self._reaper, *self._claiming.values(), *self._background) if t is not None
        ]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        for _, handle in self._timers.values():
            handle.cancel()
        self._stall.stop()
        await self.signals.stop()

    # ---- workers --------------------------------------------------------------------

    async def connect(self, spec: WorkerSpec, outbox: Outbox) -> WorkerRecord:
        """The engine's checks and messages for a hello; the queues exist from then on."""
        limits = self.ops.limits
        if self.draining:
            raise draining("takes no new workers")
        queues = list(spec.queues)
        lim.check_hello(queues, spec.max_in_flight, limits)
        names = tuple(dict.fromkeys(queues))
        await self.ops.check_new_queues(names)  # all or none of them is created
        for name in names:
            view = await self.ops.ensure_queue(name)
            self._leases[name] = view.settings.lease_seconds
        self._worker_seq += 1
        key = self._worker_seq
        worker = WorkerRecord(
            key=key,
            worker_id=spec.worker_id or f"worker-{self.replica_id}-{key}",
            queues=names,
            max_in_flight=spec.max_in_flight,
            labels=dict(spec.labels),
            connect_time=self._clock(),
            kind=spec.kind,
        )
        # Redis first: a failure here leaves nothing of the worker behind in this replica.
        await self.ops.register_workers(self._members(worker), self._clock())
        self.workers[key] = worker
        self._outboxes[key] = outbox
        self._told[key] = self.heartbeat_interval(worker)
        for name in names:
            self._by_queue.setdefault(name, []).append(worker)
        try:
            for name in names:
                await self.signals.watch(signals.events(name))
        except BaseException:
            await asyncio.shield(self.disconnect(worker))  # cancelled half-way: undo it all
            raise
        for name in names:
            self.kick(name)
        return worker

    def _members(self, worker: WorkerRecord) -> list[tuple[str, str]]:
        return [(q, f"{self.replica_id}:{worker.key}") for q in worker.queues]

    async def disconnect(self, worker: WorkerRecord) -> int:
        """The stream is gone: what it held waits again, an attempt counted."""
        if self.workers.pop(worker.key, None) is None:
            return 0
        self._outboxes.pop(worker.key, None)
        self._told.pop(worker.key, None)
        self._turns.pop(worker.key, None)
        for name in worker.queues:
            self._by_queue[name].remove(worker)
            if not self._by_queue[name]:
                del self._by_queue[name]
                self._backlog.discard(name)
            self.signals.unwatch(signals.events(name))
        held = len(worker.leases)
        await self._end_leases(worker, "lost")
        with contextlib.suppress(Unavailable):
            await self.ops.unregister_workers(self._members(worker))
        for name in worker.queues:
            self.kick(name)
        return held

    async def _end_leases(self, worker: WorkerRecord, mode: str) -> None:
        by_queue: dict[str, list[tuple[str, str]]] = {}
        for lease_id, lease in worker.leases.items():
            by_queue.setdefault(lease.job.queue, []).append((lease.job.id, lease_id))
        worker.leases.clear()
        self._note_idle()
        for queue, pairs in by_queue.items():
            try:
                released = await self.ops.release(queue, mode, pairs)
                self.accounting.unseen(released.tally)
            except Unavailable as e:
                log.warning(
                    "could not hand back %d leases of %s (%s): they expire", len(pairs), queue, e
                )

    def set_credit(self, worker: WorkerRecord, max_in_flight: int) -> None:
        lim.check_credit(max_in_flight, 0, self.ops.limits)
        worker.max_in_flight = max_in_flight
        worker.heard()
        for name in worker.queues:
            self.kick(name)

    async def results(self, worker: WorkerRecord, items: Sequence[WorkResult]) -> list[Rejection]:
        """A result counts only on the stream that holds its lease, as on the embedded
        backend: a result re-sent on a new stream after a break carries a lease that
        stream never got (the break handed it back), so it is refused as stale — Redis is
        asked with no lease id, which never matches, and answers stale or unknown."""
        by_queue: dict[str, list[ResultItem]] = {}
        rejected = []
        answered: dict[str, tuple[LeaseRecord, WorkResult]] = {}
        not_held: dict[str, str] = {}  # job id -> the lease id the worker named
        worker.heard()
        for item in items:
            lease = worker.leases.get(item.lease_id)
            lease_id = item.lease_id
            if lease is None or lease.job.id != item.job_id:
                # Not a lease this worker holds for that job (it expired, was taken back,
                # is another worker's or was never issued): the script words the refusal
                # ('stale' or 'unknown') as the engine does, and a lease id it never
                # issued makes sure it changes nothing.
                worker.let_go(item.lease_id)
                queue = records.queue_of(item.job_id)
                if queue is None:
                    rejected.append(Rejection(item.job_id, item.lease_id, UNKNOWN_JOB))
                    self.accounting.rejected("", 1)
                    continue
                not_held[item.job_id] = item.lease_id
                lease_id = NOT_HELD
            else:
                del worker.leases[item.lease_id]
                queue = lease.job.queue
                answered[item.job_id] = (lease, item)
            by_queue.setdefault(queue, []).append(
                (item.job_id, lease_id, item.outcome, item.http_status, item.latency)
            )
        if answered:
            self._take_turns(worker)
        now = self._clock()
        for queue, group in by_queue.items():
            try:
                refused, states, tally = await self._record(queue, group)
            except (Internal, Unavailable) as e:
                # This queue's data is broken, or Redis is away even on a fresh connection:
                # these results are not recorded (the worker is told, and the jobs run
                # again after their leases), and the stream carries on.
                why = f"the server could not record this result ({e}); the job may run again"
                refused = [Rejection(job_id, lid, why) for job_id, lid, *_ in group]
                states, tally = [], Tally()
            rejected += [
                Rejection(r.job_id, not_held[r.job_id], r.reason) if r.lease_id == NOT_HELD else r
                for r in refused
            ]
            self.accounting.rejected(queue, len(refused))
            self.accounting.unseen(tally)
            for job_id, state in states:
                if job_id in answered:
                    lease, item = answered[job_id]
                    if isinstance(item.outcome, JobThrottle):  # engine/throttling.py
                        self._throttled(lease.job, item.outcome, now)
                        if not state.finished:
                            continue  # back at its place, not an attempt: not "retried"
                    failure = item.outcome if isinstance(item.outcome, JobFailure) else None
                    ran = now - (lease.job.dispatch_time or now)
                    self.accounting.answered(queue, ran, state, failure)
                    if state.finished:
                        job = lease.job
                        job.state, job.finish_time = state, now
                        self.observer.job_finished(FinishedJob.of(job, now, 0))
            self.kick(queue)
        self._note_idle()
        return rejected

    async def _record(self, queue: str, group: list[ResultItem]) -> Answered:
        """Results for ``queue``: with a claim of it running, they go with its next turn,
        in front of it in one round trip (Replica._claim), so the credits they free are
        claimed with no round trip of their own; else on their own. Not when the queue's
        last claim got all it asked for (a backlog): there a held result waits out the
        claim's round trip, the worker's stream with it, and burn-down lost ~20 %
        (docs/redis.md). Not on a Cluster (a pipeline there goes through the client's
        per-node splitting)."""
        if queue not in self._claiming or queue in self._backlog or self.ops.cluster:
            return await self.ops.results(queue, group)
        held: asyncio.Future[Answered] = asyncio.get_running_loop().create_future()
        self._held.setdefault(queue, []).append((group, held))
        self._again.add(queue)  # the claim runs once more, and takes these with it
        return await held

    def _throttled(self, job: JobRecord, throttle: JobThrottle, now: float) -> None:
        """Observers hear of a throttle signal result.lua took, as the engine tells them."""
        self.accounting.throttled(job.queue, int(throttle.scope))
        self.observer.job_throttled(
            job, int(throttle.scope), now + throttle.delay, reason_text(throttle, job.fairness_key)
        )

    def _take_turns(self, worker: WorkerRecord) -> None:
        """The worker's credits came free: one of its queues, in turn, claims before the
        queues it answered for, so a queue it serves is not starved by another's backlog
        (the first claim takes every free credit; one left with none asks again)."""
        if len(worker.queues) < 2:
            return
        turn = self._turns.get(worker.key, 0)
        self._turns[worker.key] = turn + 1
        self.kick(worker.queues[turn % len(worker.queues)])

    async def heartbeat(self, worker: WorkerRecord, lease_ids: Sequence[str]) -> list[str]:
        worker.heard()
        if lease_ids:
            worker.still_holds(lease_ids)
        targets = list(lease_ids) or list(worker.leases)
        by_queue: dict[str, list[tuple[str, str]]] = {}
        unknown = []
        for lease_id in targets:
            lease = worker.leases.get(lease_id)
            if lease is None:
                unknown.append(lease_id)
            else:
                by_queue.setdefault(lease.job.queue, []).append((lease.job.id, lease_id))
        for queue, pairs in by_queue.items():
            try:
                lost = await self.ops.heartbeat(queue, pairs)
            except (Internal, Unavailable):  # broken data (logged) or Redis away: next beat
                continue
            for lease_id in lost:
                if worker.leases.pop(lease_id, None) is not None:
                    worker.lost.add(lease_id)  # taken back, but it still runs the job
            unknown += lost
        self._note_idle()
        return unknown

    def heartbeat_interval(self, worker: WorkerRecord) -> float:
        return heartbeat_interval([self._leases.get(q, 30.0) for q in worker.queues])

    def outbox(self, worker: WorkerRecord) -> Outbox | None:
        return self._outboxes.get(worker.key)

    # ---- claiming -------------------------------------------------------------------

    def kick(self, queue: str, short: bool = False) -> None:
        """Claims for ``queue`` soon; a claim running now runs once more afterwards.
        ``short``: only because credits it was denied came free (see _drained)."""
        if short and queue in self._drained:
            return
        self._drained.discard(queue)
        if queue not in self._by_queue or self.draining:
            return
        task = self._claiming.get(queue)
        if task is not None:
            # A claim running now asks again by itself when it got all it asked for; when
            # it did not, the queue has nothing more: freed credits are no news to it.
            if not short:
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

    @property
    def claiming(self) -> bool:
        """Whether a claim is running (or about to)."""
        return bool(self._claiming)

    async def claims_done(self) -> None:
        """Returns once no claim is running (each may have run again meanwhile)."""
        while self._claiming:
            await asyncio.gather(*self._claiming.values(), return_exceptions=True)

    def _credits(self, queue: str) -> list[tuple[WorkerRecord, int]]:
        """What a claim for ``queue`` may ask for each worker: its free credits, less those
        promised to a claim of another of its queues running now (the claims run side by
        side, and a worker gets no more jobs than its max_in_flight)."""
        workers = self._by_queue.get(queue, [])
        if not workers:
            return []
        self._rr += 1
        start = self._rr % len(workers)
        out, budget = [], MAX_CLAIM
        for w in workers[start:] + workers[:start]:
            promised = self._promised.get(w.key, 0)
            if promised and w.free_credits > 0:
                self._short.add(queue)  # asks again if the other claim leaves them unused
            n = min(w.free_credits - promised, budget)
            if n > 0:
                out.append((w, n))
                budget -= n
                self._promised[w.key] = promised + n
        return out

    def _settle_promises(self, credits: list[tuple[WorkerRecord, int]], used: int) -> None:
        """A claim is back: its credits are leases now, or free again; the claims they
        were kept from ask again."""
        for w, n in credits:
            left = self._promised.get(w.key, 0) - n
            if left > 0:
                self._promised[w.key] = left
            else:
                self._promised.pop(w.key, None)
        if used < sum(n for _, n in credits) and self._short:
            short, self._short = self._short, set()
            for name in sorted(short):
                self.kick(name, short=True)

    async def _claim(self, queue: str) -> None:
        try:
            while not self.draining:
                self._again.discard(queue)
                credits = self._credits(queue)
                if not credits:
                    return
                wanted = sum(n for _, n in credits)
                jobs: list[StoredJob] = []
                try:
                    now = self._clock()  # filed first: if this replica dies, a reaper looks
                    await self.ops.reap_index.mark(queue, now + self._leases.get(queue, 30.0), now)
                    jobs, wake, tally = await self._claim_once(queue, credits)
                    self.accounting.unseen(tally)
                    await self._hand_out(queue, credits, jobs)
                except (EngineError, RedisError) as e:
                    log.warning("claim for %s failed (%s); retrying in %.0f s", queue, e, 1.0)
                    self._arm(queue, RETRY_AFTER_ERROR)
                    return
                finally:
                    self._settle_promises(credits, len(jobs))
                if len(jobs) < wanted:
                    self._backlog.discard(queue)
                else:
                    self._backlog.add(queue)
                if wake is not None:
                    self._arm(queue, wake)
                if len(jobs) < wanted and queue not in self._again:
                    self._drained.add(queue)
                    return
        finally:
            self._claiming.pop(queue, None)
            self._send_held(queue)

    async def _claim_once(self, queue: str, credits: list[tuple[WorkerRecord, int]]) -> Claimed:
        """One claim, with the results held for it (Replica._record) sent in front of it."""
        asked = [(w.worker_id, n) for w, n in credits]
        held = self._held.pop(queue, [])
        if not held:
            return await self.ops.claim(queue, self._prefix(queue), asked)
        try:
            answers, claimed = await self.ops.results_then_claim(
                queue, [group for group, _ in held], self._prefix(queue), asked
            )
        except Unavailable:
            # The round trip failed: the results go again on their own (each retried on a
            # fresh connection, fenced if the first try did get through), the claim fails.
            self._held.setdefault(queue, []).extend(held)
            raise
        for (_, future), answer in zip(held, answers, strict=True):
            _settle(future, answer)
        if isinstance(claimed, EngineError):
            raise claimed
        return claimed

    def _send_held(self, queue: str) -> None:
        """The claim loop ended with results still held for it: they go on their own."""
        held = self._held.pop(queue, [])
        if not held:
            return
        task = asyncio.get_running_loop().create_task(self._answer_held(queue, held))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _answer_held(
        self, queue: str, held: list[tuple[list[ResultItem], asyncio.Future[Answered]]]
    ) -> None:
        try:
            for group, future in held:
                try:
                    _settle(future, await self.ops.results(queue, group))
                except EngineError as e:
                    _settle(future, e)
        finally:  # cancelled (the replica stops): no caller waits for ever
            for _, future in held:
                _settle(future, Unavailable("the server is stopping"))

    def _prefix(self, queue: str) -> str:
        """Lease ids are unique per queue in Redis; the prefix keeps them unique across
        the queues one worker serves here."""
        prefix = self._prefixes.get(queue)
        if prefix is None:
            prefix = self._prefixes[queue] = f"{len(self._prefixes) + 1:x}."
        return prefix

    async def _hand_out(
        self, queue: str, credits: list[tuple[WorkerRecord, int]], jobs: list[StoredJob]
    ) -> None:
        i, orphans = 0, []
        for worker, n in credits:
            batch = jobs[i : i + n]
            i += n
            if not batch:
                break
            outbox = self._outboxes.get(worker.key)
            if outbox is None or worker.draining:
                orphans += [(j.record.id, j.lease_id) for j in batch]
                continue
            leases = [records.lease_of(job, worker) for job in batch]
            observe = self.observer.job_dispatched
            for lease in leases:
                worker.leases[lease.lease_id] = lease
                observe(lease)
            outbox.deliver(leases)
            self.accounting.dispatched(queue, batch)
        if orphans:  # the worker left while the claim ran: hand them straight back
            released = await self.ops.release(queue, "drain", orphans)
            self.accounting.unseen(released.tally)

    def _arm(self, queue: str, delay: float) -> None:
        if not self._timers_on:
            return
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

    def cancelled(self, job_id: str) -> None:
        """A job was cancelled (here or on another replica): a worker here holding it is
        told, once."""
        for worker in self.workers.values():
            for lease in worker.leases.values():
                if lease.job.id == job_id and not lease.cancelled:
                    lease.cancelled = True
                    outbox = self._outboxes.get(worker.key)
                    if outbox is not None:
                        outbox.cancel([job_id])

    def _expired(self, leases: list[tuple[str, str]]) -> None:
        """A reaper (of any replica) took these leases back: their workers' credits free."""
        for job_id, lease_id in leases:
            for worker in self.workers.values():
                lease = worker.leases.get(lease_id)
                if lease is not None and lease.job.id == job_id:
                    del worker.leases[lease_id]
                    # It may still run the job: the credit stays taken until it lets go,
                    # and a worker that went silent gets nothing until it shows life.
                    worker.lost.add(lease_id)
                    worker.silent = True
                    self.kick(lease.job.queue)
        self._note_idle()

    def _resubscribed(self) -> None:
        """The subscription is (back) up: what was published while it was down was missed,
        so every local worker claims again and every listener rereads every queue."""
        self._kick_all()
        if self.listeners:
            task = asyncio.get_running_loop().create_task(self._announce_all())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _announce_all(self) -> None:
        try:
            names = await self.ops.queue_names()
        except (EngineError, RedisError) as e:
            log.warning("could not list the queues after resubscribing (%s)", e)
            return
        for name in names:
            self.announce(name)

    def announce(self, queue: str) -> None:
        """Tells the listeners (the HTTP pusher) that ``queue``'s settings may have changed."""
        for listener in self.listeners:
            listener(queue)

    def _settings_changed(self, queue: str) -> None:
        """A queue's settings changed (on any replica): the listeners hear of it, and the
        workers here that serve it get their new heartbeat interval if its lease moved."""
        self.announce(queue)
        if queue in self._by_queue:
            task = asyncio.get_running_loop().create_task(self._reread_lease(queue))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _reread_lease(self, queue: str) -> None:
        try:
            view = await self.ops.get_queue(queue)
        except EngineError as e:
            log.warning("could not read the settings of %s (%s)", queue, e)
            return
        self.lease_changed(queue, view.settings.lease_seconds)

    def lease_changed(self, queue: str, lease_seconds: float) -> None:
        """Tells the workers of ``queue`` here their heartbeat interval, if it changed."""
        if self._leases.get(queue) == lease_seconds:
            return
        self._leases[queue] = lease_seconds
        for worker in self._by_queue.get(queue, []):
            interval = self.heartbeat_interval(worker)
            if self._told.get(worker.key) != interval:
                self._told[worker.key] = interval
                outbox = self._outboxes.get(worker.key)
                if outbox is not None:
                    outbox.settings(interval)

    # ---- reaper and drain -----------------------------------------------------------

    async def reap_all(self) -> float:
        """Reaps every registered queue (tests with a controlled clock: ``settle``); the
        reaper's own passes look at the queues that can be due (reap_pass)."""
        now = self._clock()
        delay, _ = await self._reap(await self.ops.queue_names(), now)
        await self._after_reap()
        return delay

    async def reap_pass(self, sweep: int = SWEEP_PER_PASS) -> float:
        """One reaper pass over the queues that can be due now (redis/reaping.py): those
        this replica's workers serve, those the due index names, and ``sweep`` more of the
        registry in turn. Refreshes this replica's worker entries. Returns the seconds
        until the next lease deadline seen (or the default reap interval)."""
        now = self._clock()
        index = self.ops.reap_index
        due = await index.due(now)
        names = set(self._by_queue) | {queue for _, queue in due}
        names.update(await index.sweep(sweep))
        if sweep and index.swept_all:  # once a round: what the registry lost comes back
            await self.ops.queue_names()
        delay, next_due = await self._reap(sorted(names), now)
        await index.settle([member for member, _ in due], next_due, now)
        await self._after_reap()
        self.passes += 1
        self.reaped += len(names)
        return delay

    async def _reap(self, names: list[str], now: float) -> tuple[float, dict[str, float]]:
        """Reaps ``names``; returns the seconds to the next lease deadline seen (at most the
        reap interval) and, per queue, when it next needs a reaper (absolute)."""
        delay = self._reap_every
        next_due: dict[str, float] = {}
        for queue in names:
            try:
                reaped = await self.ops.reap(queue)
            except Internal:  # one queue's broken data stops its reaping only (logged)
                continue
            self.accounting.lease_expired(queue, reaped.taken)
            self.accounting.unseen(reaped.tally)
            if reaped.next_deadline is not None:
                delay = min(delay, reaped.next_deadline + 0.01)
            if reaped.next_due is not None:
                next_due[queue] = now + reaped.next_due
        return delay, next_due

    async def _after_reap(self) -> None:
        entries = [m for w in self.workers.values() for m in self._members(w)]
        await self.ops.register_workers(entries, self._clock())
        if self.after_reap is not None:
            await self.after_reap()

    def _note_stall(self, seconds: float) -> None:
        self._stalled = True

    async def extend_local_leases(self) -> None:
        """After this process stalled: every lease its workers hold is extended (on their
        behalf: their heartbeats wait unread in the sockets) before its reaper looks."""
        by_queue: dict[str, list[tuple[str, str]]] = {}
        for worker in self.workers.values():
            for lease_id, lease in worker.leases.items():
                by_queue.setdefault(lease.job.queue, []).append((lease.job.id, lease_id))
        for queue, pairs in by_queue.items():
            await self.ops.heartbeat(queue, pairs)

    async def _reap_loop(self) -> None:
        while True:
            delay = self._reap_every
            try:
                self._stall.check()
                if self._stalled:
                    self._stalled = False
                    await self.extend_local_leases()
                delay = await self.reap_pass()
            except (EngineError, RedisError) as e:  # a script error too: logged, retried
                log.warning("reaper pass failed (%s); next in %.1f s", e, delay)
            self._kick_all()  # a safety net for a wake-up lost with a pub/sub connection
            await asyncio.sleep(max(0.05, min(delay, WORKER_TTL / 3)))

    def underway(self) -> int:
        return sum(len(w.leases) for w in self.workers.values())

    def _note_idle(self) -> None:
        if self.underway() == 0:
            self.idle.set()

    def begin_drain(self, deadline: float, grace: float) -> None:
        self.draining = True
        self._grace = grace
        for worker in self.workers.values():
            worker.draining = True
            outbox = self._outboxes.get(worker.key)
            if outbox is not None:
                outbox.drain(deadline)

    async def finish_drain(self) -> int:
        """Waits up to the grace for underway jobs; hands the rest back. Returns how many."""
        if self.underway() > 0:
            self.idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle.wait(), self._grace)
        left = self.underway()
        for worker in list(self.workers.values()):
            await self._end_leases(worker, "drain")
            outbox = self._outboxes.get(worker.key)
            if outbox is not None:
                outbox.close("server drained")
        return left


def _settle(future: asyncio.Future[Answered], answer: Answered | EngineError) -> None:
    """Answers a held result's caller; one whose stream ended meanwhile (its await was
    cancelled) is no longer listening."""
    if future.done():
        return
    if isinstance(answer, EngineError):
        future.set_exception(answer)
    else:
        future.set_result(answer)
