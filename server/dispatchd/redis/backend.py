"""The Redis backend behind the backend interface (dispatchd.backend): the queues live in
Redis and several stateless replicas share them. Every decision is one Lua script
(redis/lua); this replica's workers, claims and reaper are in replica.py, the calls to
Redis in jobs.py and leasing.py."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

from redis.exceptions import RedisError

from dispatchd.backend import (
    Capabilities,
    DrainReport,
    JobCounter,
    Outbox,
    ProgressReport,
    QueueListener,
    ReplicaCounts,
    WorkerInfo,
    WorkerSpec,
    WorkResult,
)
from dispatchd.embedded.backend import worker_info
from dispatchd.engine import (
    EngineError,
    EngineLimits,
    EngineObserver,
    JobState,
    JobView,
    NewJob,
    ObserverChain,
    QueueFigures,
    QueueView,
    Rejection,
    SlotRecord,
    WorkerRecord,
)
from dispatchd.engine import limits as lim
from dispatchd.engine.errors import NotFound, draining
from dispatchd.engine.flows import BatchView, check_progress
from dispatchd.engine.schedules import Firing, Overlap, ScheduleRecord
from dispatchd.engine.state import FROZEN
from dispatchd.listening import StartError
from dispatchd.observability.events import Event, EventFilter, Missed
from dispatchd.observability.metrics import StorageStats
from dispatchd.redis import records
from dispatchd.redis.accounting import Accounting
from dispatchd.redis.fleet import COUNTS_SECONDS, Fleet
from dispatchd.redis.leasing import RedisLeasing
from dispatchd.redis.replica import Replica
from dispatchd.redis.schedules import RedisSchedules
from dispatchd.redis.signals import events, finishes

log = logging.getLogger("dispatchd")

#: WaitJob re-reads the job this often too, in case a finish message was missed.
WAIT_RECHECK_SECONDS = 1.0
#: A waiting slot request lives this long in Redis unless its replica tries again (it
#: does every SLOT_RETRY_SECONDS): a replica that died stops holding up the queue.
SLOT_REQUEST_TTL = 5.0
SLOT_RETRY_SECONDS = 2.0
#: settle(): claims and the wake-ups they publish, heard this many times at most.
SETTLE_ROUNDS = 5
#: How long start() waits for the pub/sub subscription before serving anyway.
SUBSCRIBE_WITHIN = 5.0
#: How often a replica re-counts the fleet's waiting jobs when --max-pending-total is set.
COUNT_SECONDS = 1.0


def _stop_if_cancelled() -> None:
    """Ends a background loop that was cancelled while redis-py was sending for it: a cancel
    that lands inside a pipeline's execute can be swallowed there (seen: close() then
    waited for ever on the loop, which slept on, "cancelling")."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class RedisBackend:
    """One replica of a fleet that shares its queues through Redis."""

    capabilities = Capabilities(name="redis", snapshot=False, journal=False, shared=True)

    def __init__(
        self,
        ops: RedisLeasing,
        clock: Callable[[], float],
        reap_every: float,
        accounting: Accounting | None = None,
        timers: bool = True,
        observer: EngineObserver | None = None,
        counters: EngineObserver | None = None,
    ) -> None:
        self.ops = ops
        self.limits: EngineLimits = ops.limits
        self.health = ops.health
        self.clock = clock
        self.accounting = accounting or Accounting(None)
        #: What this replica's workers ran, published for the fleet's overview chart.
        self.counter = JobCounter()
        chain = ObserverChain([self.counter] if observer is None else [self.counter, observer])
        self.replica = Replica(ops, clock, reap_every, self.accounting, timers, chain)
        self.fleet = Fleet(ops, self.replica.replica_id)
        self.schedules = RedisSchedules(ops, clock)
        watchers = self.replica.observer
        tally = counters or EngineObserver()

        def fired(schedule_id: str, queue: str, firing: Firing) -> None:
            tally.schedule_fired(schedule_id, queue, firing)  # this replica's share
            watchers.schedule_fired(schedule_id, queue, firing)

        self.schedules.on_fired = fired
        self._timers = timers
        self.replica.after_reap = self.publish_workers
        # Renewed every reaper pass; another replica takes over within three passes.
        self._gauge_ttl = max(1.0, 3 * reap_every)
        self._timers = timers
        self._counting: asyncio.Task[None] | None = None
        self._publishing: asyncio.Task[None] | None = None

    @property
    def draining(self) -> bool:
        return self.replica.draining

    def _refuse_while_draining(self) -> None:
        if self.replica.draining:
            raise draining(FROZEN)

    # ---- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.ops.ping()
        except EngineError as e:
            raise StartError(f"--redis-url: {e}") from None
        await self.fleet.claim_gauges(self._gauge_ttl)
        self.replica.start()
        # Serving before the subscription is up would miss the queue changes published
        # meanwhile (an HTTP target set at once was never bound). A barrier's marker comes
        # back only through a subscription Redis has confirmed; if Redis is slow, the loop
        # subscribes on its own and then announces every queue (Replica._resubscribed).
        try:
            await self.replica.signals.barrier(SUBSCRIBE_WITHIN)
        except TimeoutError:
            log.warning("redis pub/sub not up after %.0f s; serving anyway", SUBSCRIBE_WITHIN)
        if self._timers:
            self.schedules.start()
            self._publishing = asyncio.get_running_loop().create_task(self._publish_loop())
        if self.limits.max_pending_total and self._timers:
            await self.ops.count_waiting()
            self._counting = asyncio.get_running_loop().create_task(self._count_loop())

    async def _count_loop(self) -> None:
        """Re-counts the fleet's waiting jobs every COUNT_SECONDS, for --max-pending-total
        (RedisJobs.waiting_estimate); only when that bound is set."""
        while True:
            await asyncio.sleep(COUNT_SECONDS)
            try:
                await self.ops.count_waiting()
            except EngineError as e:
                log.debug("could not count the waiting jobs (%s); the last count stands", e)
            _stop_if_cancelled()

    async def _publish_loop(self) -> None:
        """Publishes this replica's JobCounts every COUNTS_SECONDS (redis/fleet.py): one
        pipeline a second whatever the job rate, and whether or not a dashboard is on here
        (another replica's may be the one people look at)."""
        while True:
            try:
                await self.fleet.publish_counts(self.counter.counts())
            except (EngineError, RedisError) as e:
                log.debug("could not publish the job counts (%s); next in a second", e)
            _stop_if_cancelled()
            await asyncio.sleep(COUNTS_SECONDS)

    async def begin_drain(self, grace: float) -> DrainReport:
        pending = 0
        with contextlib.suppress(EngineError):  # the counts are for people; Redis may be away
            pending = sum(v.pending_count for v in await self.ops.list_queues())
        report = DrainReport(pending=pending, underway=self.replica.underway())
        self.replica.begin_drain(self.clock() + grace, grace)
        await self.schedules.stop()  # the other replicas fire on; this one is leaving
        return report

    async def finish_drain(self) -> None:
        left = await self.replica.finish_drain()
        if left:
            log.warning("drain grace ran out: %d underway jobs are pending again", left)
        else:
            log.info("drain: no job underway")
        await self.close()

    async def close(self) -> None:
        for task in (self._counting, self._publishing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for worker in list(self.replica.workers.values()):  # before the client closes
            await self.replica.disconnect(worker)
        with contextlib.suppress(EngineError):
            await self.fleet.withdraw()
        await self.schedules.stop()
        await self.replica.stop()
        await self.ops.close()

    async def settle(self) -> None:
        replica = self.replica
        if not replica.draining:
            await self.schedules.fire_pass()
        await replica.reap_all()
        await self.fleet.publish_counts(self.counter.counts())  # due every second
        # The reaper's expiries reach the workers here by pub/sub ('x:'): heard first, so
        # the claims below see the credits they freed, as the engine's tick() precedes
        # its dispatch. The same goes for every wake-up and cancel published before.
        await replica.signals.barrier()
        for queue in await self.ops.queue_names():
            replica.waiting.queue_changed(queue)  # slot acquirers try again (a token may be due)
            replica.kick(queue)
        for _ in range(SETTLE_ROUNDS):
            await replica.claims_done()
            await replica.waiting.tries_done()  # the slot acquirers woken have tried again
            await replica.signals.barrier()  # and what the claims and tries published was heard
            if not replica.claiming and not replica.waiting.owed:
                return

    def on_queue_changed(self, listener: QueueListener) -> None:
        self.replica.listeners.append(listener)

    # ---- jobs -----------------------------------------------------------------------

    async def submit(self, specs: Sequence[NewJob]) -> list[tuple[JobView, bool]]:
        if self.replica.draining:
            raise draining("accepts no new jobs; retry on another")
        results = await self.ops.submit(specs, self.clock())
        self.accounting.submitted(results)
        views: list[tuple[JobView, bool]] = []
        fresh = []
        for stored, duplicate in results:
            job = records.view_of(stored)
            views.append((job, duplicate))
            if not duplicate:
                fresh.append(job)
        if fresh:
            self.replica.observer.jobs_submitted(fresh)
        return views

    async def get_job(self, job_id: str) -> JobView:
        return records.view_of(await self.ops.get_job(job_id))

    async def wait_job(self, job_id: str, within: float) -> JobView:
        job = await self.ops.get_job(job_id)
        if job.record.state.finished or within <= 0:
            return records.view_of(job)
        signals, waiting = self.replica.signals, self.replica.waiting
        channel = finishes(job.record.queue)
        await signals.watch(channel)
        deadline = time.monotonic() + within
        try:
            while not job.record.state.finished:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                waiter = waiting.job(job.record.id)
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(waiter, min(left, WAIT_RECHECK_SECONDS))
                finally:
                    waiting.discard(job.record.id, waiter)
                with contextlib.suppress(NotFound):  # purged meanwhile: the last read stands
                    job = await self.ops.get_job(job_id)
        finally:
            signals.unwatch(channel)
        return records.view_of(job)

    async def cancel_job(self, job_id: str) -> JobView:
        self._refuse_while_draining()
        job = await self.ops.cancel(job_id)
        self.accounting.finished(job.record.queue, JobState.CANCELLED)
        self.replica.cancelled(job.record.id)  # a worker here hears of it at once
        return records.view_of(job)

    async def reprioritize_job(self, job_id: str, priority: int) -> JobView:
        self._refuse_while_draining()
        return records.view_of(await self.ops.reprioritize(job_id, priority))

    async def retry_job(self, job_id: str) -> JobView:
        self._refuse_while_draining()
        return records.view_of(await self.ops.retry(job_id))

    async def purge_jobs(self, queue: str, state: JobState) -> int:
        self._refuse_while_draining()
        return await self.ops.purge(queue, state)

    async def list_jobs(
        self, queue: str, state: JobState, page_size: int, page_token: str
    ) -> tuple[list[JobView], str]:
        jobs, token = await self.ops.list_jobs(queue, state, page_size, page_token)
        return [records.view_of(j) for j in jobs], token

    # ---- queues ---------------------------------------------------------------------

    async def get_queue(self, name: str) -> QueueView:
        return await self.ops.get_queue(name)

    async def list_queues(self) -> list[QueueView]:
        return await self.ops.list_queues()

    async def update_queue(
        self,
        name: str,
        *,
        width: int | None = None,
        paused: bool | None = None,
        lease_seconds: float | None = None,
        create: bool = False,
        **policies: object,
    ) -> QueueView:
        self._refuse_while_draining()
        view = await self.ops.update_queue(
            name,
            width=width,
            paused=paused,
            lease_seconds=lease_seconds,
            create=create,
            **policies,
        )
        self.replica.lease_changed(name, view.settings.lease_seconds)
        self.replica.announce(name)  # not left to pub/sub: this replica made the change
        self.replica.kick(name)
        return view

    async def delete_queue(self, name: str) -> int:
        self._refuse_while_draining()
        return await self.ops.delete_queue(name)

    # ---- workers --------------------------------------------------------------------

    async def connect(self, spec: WorkerSpec, outbox: Outbox) -> WorkerRecord:
        worker = await self.replica.connect(spec, outbox)
        with contextlib.suppress(EngineError):  # the fleet view is for people only
            await self.fleet.put(worker.key, worker_info(worker, self.replica.replica_id))
        return worker

    async def results(self, worker: WorkerRecord, results: Sequence[WorkResult]) -> list[Rejection]:
        return await self.replica.results(worker, results)

    async def heartbeat(self, worker: WorkerRecord, lease_ids: Sequence[str]) -> list[str]:
        return await self.replica.heartbeat(worker, lease_ids)

    async def set_credit(self, worker: WorkerRecord, max_in_flight: int) -> None:
        self.replica.set_credit(worker, max_in_flight)

    async def disconnect(self, worker: WorkerRecord) -> int:
        held = await self.replica.disconnect(worker)
        with contextlib.suppress(EngineError):
            await self.fleet.remove(worker.key)
        return held

    def heartbeat_interval(self, worker: WorkerRecord) -> float:
        return self.replica.heartbeat_interval(worker)

    def local_workers(self) -> list[WorkerRecord]:
        return list(self.replica.workers.values())

    async def list_workers(self) -> list[WorkerInfo]:
        mine = [worker_info(w, self.replica.replica_id) for w in self.replica.workers.values()]
        return mine + await self.fleet.others(self.clock())

    async def fleet_counts(self) -> list[ReplicaCounts]:
        mine = ReplicaCounts(self.replica.replica_id, self.counter.counts())
        return [mine, *await self.fleet.other_counts(self.clock())]

    async def publish_workers(self) -> None:
        """After each reaper pass: refreshes this replica's entries in the fleet view, and
        keeps (or takes over) the export of the per-queue gauges."""
        replica = self.replica
        entries = [(w.key, worker_info(w, replica.replica_id)) for w in replica.workers.values()]
        await self.fleet.publish(entries, self.clock())
        await self.fleet.claim_gauges(self._gauge_ttl)

    @property
    def reports_queues(self) -> bool:
        return self.fleet.exports_gauges

    @property
    def storage_stats(self) -> StorageStats:
        return self.ops.stats

    async def queue_figures(self) -> list[QueueFigures]:
        figures = await self.ops.queue_figures()
        # Credits are each replica's: the fleet entries (refreshed every reaper pass) say
        # which queues a worker anywhere could take a job of now.
        free = {
            queue
            for w in await self.list_workers()
            if w.held < w.max_in_flight and not w.draining
            for queue in w.queues
        }
        return [dataclasses.replace(f, credit_free=f.view.name in free) for f in figures]

    # ---- slots ----------------------------------------------------------------------

    async def acquire_slot(self, queue: str, holder: str, ttl: float, priority: int) -> SlotRecord:
        lim.check_slot_request(queue, holder, ttl)
        if self.replica.draining:
            raise draining("grants no slots")
        ops, replica = self.ops, self.replica
        await ops.ensure_queue(queue)
        slot_id = records.job_id(f"slot-{uuid.uuid4().hex[:20]}", queue)
        await replica.signals.watch(events(queue))
        woken = False
        try:
            while True:
                try:
                    # The request lapses, and a granted slot expires, unless renewed: filed
                    # first, so a reaper looks at them even if this replica dies.
                    now = self.clock()
                    await ops.reap_index.mark(queue, now + min(ttl, SLOT_REQUEST_TTL), now)
                    deadline, hint = await ops.acquire(
                        slot_id, priority, holder, ttl, SLOT_REQUEST_TTL
                    )
                finally:
                    if woken:
                        replica.waiting.tried()
                        woken = False
                if deadline is not None:
                    return SlotRecord(slot_id, queue, holder, ttl, deadline, 0)
                wait = SLOT_RETRY_SECONDS if hint is None else min(SLOT_RETRY_SECONDS, hint)
                woken = await replica.waiting.change(queue, wait)
        except asyncio.CancelledError:
            # The caller's deadline passed or it went away: drop the request, and the
            # slot if the grant raced in, so no slot leaks to a caller that cannot release.
            await asyncio.shield(ops.slot_op("abandon", slot_id))
            raise
        finally:
            replica.signals.unwatch(events(queue))

    async def renew_slot(self, slot_id: str, ttl: float | None) -> SlotRecord:
        if ttl is not None:
            lim.check_slot_ttl(ttl)
        holder, deadline = await self.ops.slot_op("renew", slot_id, ttl)
        queue = records.queue_of(slot_id) or ""
        return SlotRecord(slot_id, queue, holder, ttl or 0.0, deadline, 0)

    async def release_slot(self, slot_id: str) -> None:
        await self.ops.slot_op("release", slot_id)

    # ---- schedules ------------------------------------------------------------------

    async def create_schedule(self, schedule: ScheduleRecord) -> ScheduleRecord:
        self._refuse_while_draining()
        return await self.schedules.create(schedule)

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord:
        return await self.schedules.get(schedule_id)

    async def list_schedules(
        self, page_size: int, page_token: str
    ) -> tuple[list[ScheduleRecord], str]:
        return await self.schedules.list_page(page_size, page_token)

    async def update_schedule(self, schedule_id: str, changes: dict[str, object]) -> ScheduleRecord:
        self._refuse_while_draining()
        return await self.schedules.update(schedule_id, changes)

    async def delete_schedule(self, schedule_id: str) -> None:
        self._refuse_while_draining()
        await self.schedules.delete(schedule_id)

    async def trigger_schedule(self, schedule_id: str, overlap: Overlap | None) -> Firing:
        self._refuse_while_draining()
        return await self.schedules.trigger(schedule_id, overlap)

    async def backfill_schedule(
        self, schedule_id: str, start: float, end: float, overlap: Overlap | None
    ) -> list[Firing]:
        self._refuse_while_draining()
        return await self.schedules.backfill(schedule_id, start, end, overlap)

    # ---- workflows (docs/workflows.md; redis/flows.py) --------------------------------

    async def report_progress(self, worker: WorkerRecord, reports: Sequence[ProgressReport]) -> int:
        by_queue: dict[str, list[tuple[str, str, int | None, str]]] = {}
        for r in reports:
            check_progress(r.percent, r.message)
            lease = worker.leases.get(r.lease_id)
            if lease is None or lease.job.id != r.job_id:
                continue  # not a lease this stream holds: dropped, as on the embedded engine
            by_queue.setdefault(lease.job.queue, []).append(tuple(r))  # type: ignore[arg-type]
        stored = 0
        for queue, group in by_queue.items():
            stored += await self.ops.progress(queue, group)
        return stored

    async def create_batch(
        self,
        queue: str,
        batch_id: str,
        description: str,
        on_success: NewJob | None,
        on_complete: NewJob | None,
    ) -> BatchView:
        self._refuse_while_draining()
        now = self.clock()
        return await self.ops.create_batch(
            queue, batch_id, description, on_success, on_complete, now, self.ops.new_ulid
        )

    async def get_batch(self, queue: str, batch_id: str) -> BatchView:
        return await self.ops.get_batch(queue, batch_id)

    async def wait_batch(self, queue: str, batch_id: str, within: float) -> BatchView:
        """Woken by the pseudo id '@batch:<id>' flows.lua announces on the queue's finish
        channel when the batch has no active job; re-read now and then in case a message
        was missed (a resubscribe), as WaitJob does."""
        view = await self.ops.get_batch(queue, batch_id)
        if view.active == 0 or within <= 0:
            return view
        signals, waiting = self.replica.signals, self.replica.waiting
        channel, key = finishes(queue), "@batch:" + batch_id
        await signals.watch(channel)
        deadline = time.monotonic() + within
        try:
            view = await self.ops.get_batch(queue, batch_id)  # it may have settled meanwhile
            while view.active > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                waiter = waiting.job(key)
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(waiter, min(left, WAIT_RECHECK_SECONDS))
                finally:
                    waiting.discard(key, waiter)
                with contextlib.suppress(NotFound):
                    view = await self.ops.get_batch(queue, batch_id)
        finally:
            signals.unwatch(channel)
        return view

    async def close_batch(self, queue: str, batch_id: str) -> BatchView:
        self._refuse_while_draining()
        return await self.ops.close_batch(queue, batch_id)

    async def watch_events(self, flt: EventFilter, token: str) -> AsyncIterator[Event | Missed]:
        """Read from the queues' event streams (redis/events.py); every replica sees every
        replica's events, since the scripts write them."""
        return await self.ops.watch_events(flt, token)

    async def cancel_batch(self, queue: str, batch_id: str) -> tuple[BatchView, int]:
        self._refuse_while_draining()
        view, ids = await self.ops.cancel_batch(queue, batch_id)
        for job_id in ids:
            self.accounting.finished(queue, JobState.CANCELLED)
            self.replica.cancelled(job_id)  # a worker here hears of it at once
        return view, len(ids)
