"""The embedded backend: the pure engine in this process, its dispatch pump, the waiters
of WaitJob and AcquireSlot, the journal and the drain snapshot, behind the backend
interface (dispatchd.backend). Every call completes without suspending except the ones
that wait by nature (a Submit's journal commit, WaitJob, AcquireSlot, the drain)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace

from dispatchd.backend import (
    Capabilities,
    DrainReport,
    HealthReport,
    JobCounter,
    Outbox,
    ProgressReport,
    QueueListener,
    ReplicaCounts,
    WorkerInfo,
    WorkerSpec,
    WorkResult,
    heartbeat_interval,
)
from dispatchd.embedded.journaling import JournalUnavailable
from dispatchd.embedded.pump import DispatchPump
from dispatchd.embedded.storage import SnapshotFailed, Storage, StorageConfig
from dispatchd.embedded.waiters import Waiters
from dispatchd.engine import (
    Engine,
    EngineError,
    EngineLimits,
    EngineObserver,
    JobRecord,
    JobState,
    JobView,
    NewJob,
    ObserverChain,
    QueueFigures,
    QueueSettings,
    QueueView,
    Rejection,
    SlotRecord,
    WorkerRecord,
)
from dispatchd.engine.errors import Reason, Unavailable
from dispatchd.engine.flows import BatchView
from dispatchd.engine.schedules import Firing, Overlap, ScheduleRecord
from dispatchd.observability.events import Event, EventFilter, EventHub, Missed
from dispatchd.observability.metrics import StorageStats
from dispatchd.stall import StallWatch

log = logging.getLogger("dispatchd")

HELD_JOBS_SHOWN = 10
#: Queues queue_figures reads between two yields to the loop (about 0.5 ms of work).
FIGURES_SLICE = 50
#: What a failed commit means for the caller of a submit, and of any other change.
SUBMIT_UNSURE = "the job may still run, resubmit with an idempotency key to be sure"
CHANGE_UNSURE = (
    "the change is made but not yet on disk: it is written once the journal recovers, and "
    "a crash before that undoes it"
)


class DrainFailed(Exception):
    """The drain ended but did not keep everything (its snapshot or the journal's last
    commit could not be written); the message says which, and the process exits non-zero."""


class _Watch(EngineObserver):
    """Wakes the drain when the last underway job releases its slot, and tells the queue
    listeners of settings changes."""

    def __init__(self, engine_ref: Callable[[], Engine]) -> None:
        self._engine_ref = engine_ref
        self.idle = asyncio.Event()
        self.listeners: list[QueueListener] = []

    def lease_released(self, queue: str) -> None:
        if self._engine_ref().underway_total() == 0:
            self.idle.set()

    def queue_changed(self, name: str, settings: QueueSettings) -> None:
        for listener in self.listeners:
            listener(name)

    def queue_deleted(self, name: str) -> None:
        for listener in self.listeners:
            listener(name)


class _FlowsPart:
    """Progress and batches (docs/workflows.md): engine/flows.py behind the interface."""

    engine: Engine
    clock: Callable[[], float]
    waiters: Waiters
    pump: DispatchPump
    events: EventHub
    observers: ObserverChain

    def _writable(self) -> None:
        raise NotImplementedError

    async def _durable(self, unsure: str) -> None:
        raise NotImplementedError

    async def report_progress(self, worker: WorkerRecord, reports: Sequence[ProgressReport]) -> int:
        now = self.clock()
        report = self.engine.report_progress
        return sum(report(worker, *r, now) for r in reports)

    async def create_batch(
        self,
        queue: str,
        batch_id: str,
        description: str,
        on_success: NewJob | None,
        on_complete: NewJob | None,
    ) -> BatchView:
        self._writable()
        view = self.engine.create_batch(
            queue, batch_id, description, on_success, on_complete, self.clock()
        )
        await self._durable("the batch may exist: read it back before creating it again")
        return view

    async def get_batch(self, queue: str, batch_id: str) -> BatchView:
        return self.engine.get_batch(queue, batch_id)

    async def watch_events(self, flt: EventFilter, token: str) -> AsyncIterator[Event | Missed]:
        stream = self.events.watch(flt, token)  # a bad token raises before anything changes
        if not self.events.recording:
            self.events.recording = True
            self.observers.add(self.events)
        return stream

    async def wait_batch(self, queue: str, batch_id: str, within: float) -> BatchView:
        view = self.engine.get_batch(queue, batch_id)
        if view.active == 0 or within <= 0:
            return view
        key = (queue, batch_id)
        waiter = self.waiters.add_batch(key)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), within)
        finally:
            self.waiters.discard_batch(key, waiter)
        try:
            return self.engine.get_batch(queue, batch_id)
        except EngineError:
            return view

    async def close_batch(self, queue: str, batch_id: str) -> BatchView:
        self._writable()
        view = self.engine.close_batch(queue, batch_id, self.clock())
        self.pump.kick()  # its callbacks may be waiting to run
        await self._durable(CHANGE_UNSURE)
        return view

    async def cancel_batch(self, queue: str, batch_id: str) -> tuple[BatchView, int]:
        self._writable()
        view, n, tell = self.engine.cancel_batch(queue, batch_id, self.clock())
        by_worker: dict[int, tuple[WorkerRecord, list[str]]] = {}
        for worker, job_id in tell:
            by_worker.setdefault(worker.key, (worker, []))[1].append(job_id)
        for worker, ids in by_worker.values():
            outbox = self.pump.outbox(worker)
            if outbox is not None:
                outbox.cancel(ids)
        self.pump.kick()
        await self._durable(CHANGE_UNSURE)
        return view, n


class EmbeddedBackend(_FlowsPart):
    """One process holds the queues: memory, plus the journal and snapshot on disk."""

    def __init__(
        self,
        limits: EngineLimits,
        clock: Callable[[], float],
        storage: StorageConfig | None = None,
        observers: Sequence[EngineObserver] = (),
        rng: random.Random | None = None,
        timers: bool = True,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.waiters = Waiters()
        self._watch = _Watch(lambda: self.engine)
        # WatchEvents (observability/events.py): the hub joins the observers with the first
        # watch, so a server nobody watches pays nothing for it (a resume token only exists
        # once some watch got events).
        self.events = EventHub(clock)
        self.observers = ObserverChain([self.waiters, self._watch, *observers])
        #: The dashboard's chart counts (fleet_counts): in the chain from the first call.
        self._counter: JobCounter | None = None
        self.engine = Engine(limits, self.observers, rng)
        self.pump = DispatchPump(self.engine, clock, timers, StallWatch(self.engine.extend_leases))
        storage = storage or StorageConfig()
        self.health = HealthReport()
        self.storage = Storage(self.engine, storage, clock, self.health.set)
        self._told: dict[int, float] = {}  # worker key -> heartbeat interval it was told
        self._grace = 0.0
        on_disk = storage.data_dir is not None
        self.capabilities = Capabilities(
            name="embedded", snapshot=on_disk, journal=on_disk and storage.journaled, shared=False
        )

    @property
    def draining(self) -> bool:
        return self.engine.draining

    @property
    def reports_queues(self) -> bool:
        return True

    @property
    def storage_stats(self) -> StorageStats:
        return self.storage.stats

    async def queue_figures(self) -> list[QueueFigures]:
        # A thousand queues took 5 to 10 ms in one go: read in slices, with the loop free
        # to dispatch between them (each queue's figures are still of one instant).
        names = self.engine.queue_names()
        if len(names) <= FIGURES_SLICE:
            return self.engine.queue_figures(self.clock())
        out: list[QueueFigures] = []
        for first in range(0, len(names), FIGURES_SLICE):
            if first:
                await asyncio.sleep(0)
            out += self.engine.queue_figures(self.clock(), names[first : first + FIGURES_SLICE])
        return out

    # ---- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        journal = self.storage.restore()
        if journal is not None:
            self.observers.add(journal)
        self.pump.start()
        self.pump.kick()  # a first pass arms the timer for what the restore brought back

    async def begin_drain(self, grace: float) -> DrainReport:
        engine = self.engine
        report = DrainReport(
            pending=sum(v.pending_count for v in engine.list_queues()),
            underway=engine.underway_total(),
        )
        engine.begin_drain()
        self._grace = grace
        deadline = self.clock() + grace
        for outbox in self.pump.outboxes:
            outbox.drain(deadline)
        return report

    async def finish_drain(self) -> None:
        engine = self.engine
        if engine.underway_total() > 0:
            self._watch.idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._watch.idle.wait(), self._grace)
        reclaimed = engine.reclaim_underway()
        if reclaimed:
            log.warning("drain grace ran out: %d underway jobs are pending again", reclaimed)
        else:
            log.info("drain: no job underway")
        failures = []
        try:  # a failed snapshot still ends the drain: the journal and workers close
            self.storage.snapshot()
        except SnapshotFailed as e:
            failures.append(str(e))
        try:
            await self.storage.close()
        except JournalUnavailable as e:
            failures.append(str(e))
        for outbox in self.pump.outboxes:
            outbox.close("server drained")
        self.pump.close()
        self.events.close()
        if failures:
            raise DrainFailed("; ".join(failures))

    async def close(self) -> None:
        self.events.close()
        try:
            await self.storage.close()
        except JournalUnavailable as e:
            log.error("%s", e)
        self.pump.close()

    async def settle(self) -> None:
        self.pump.run_now()

    def on_queue_changed(self, listener: QueueListener) -> None:
        self._watch.listeners.append(listener)

    # ---- jobs -----------------------------------------------------------------------

    def _writable(self) -> None:
        """Refuses a change before it is made while the journal cannot commit: it would
        not be durable, and the caller would be told so only after it took effect."""
        try:
            self.storage.check()
        except JournalUnavailable as e:
            raise Unavailable(
                f"{e}; nothing was admitted or changed: retry once the server is ready again",
                reason=Reason.JOURNAL_UNAVAILABLE,
            ) from None

    async def _durable(self, unsure: str) -> None:
        """Returns once every change made so far is in the journal: a change is answered
        only once a crash cannot undo it. ``unsure`` tells the caller what a failed commit
        means for it."""
        try:
            await self.storage.sync()
        except JournalUnavailable as e:
            raise Unavailable(f"{e}; {unsure}", reason=Reason.JOURNAL_UNAVAILABLE) from None

    async def submit(self, specs: Sequence[NewJob]) -> list[tuple[JobView, bool]]:
        self._writable()
        results = self.engine.submit_many(specs, self.clock())
        self.pump.kick()
        await self._durable(SUBMIT_UNSURE)
        return results

    async def get_job(self, job_id: str) -> JobView:
        return self.engine.get_job(job_id)

    async def wait_job(self, job_id: str, within: float) -> JobView:
        job = self.engine.get_job(job_id)
        if job.state.finished or within <= 0:
            return job
        waiter = self.waiters.add(job.id)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), within)
        finally:
            self.waiters.discard(job.id, waiter)
        try:
            return self.engine.get_job(job.id)
        except EngineError:
            return job  # evicted while we waited: the record we hold is final

    async def cancel_job(self, job_id: str) -> JobView:
        self._writable()
        job, worker = self.engine.cancel(job_id, self.clock())
        if worker is not None:
            outbox = self.pump.outbox(worker)
            if outbox is not None:
                outbox.cancel([job.id])
        self.pump.kick()
        await self._durable(CHANGE_UNSURE)
        return job

    async def reprioritize_job(self, job_id: str, priority: int) -> JobView:
        self._writable()
        job = _as_changed(self.engine.reprioritize(job_id, priority))
        await self._durable(CHANGE_UNSURE)
        return job

    async def retry_job(self, job_id: str) -> JobView:
        self._writable()
        job = _as_changed(self.engine.retry(job_id, self.clock()))
        self.pump.kick()
        await self._durable(CHANGE_UNSURE)
        return job

    async def purge_jobs(self, queue: str, state: JobState) -> int:
        self._writable()
        purged = self.engine.purge(queue, state)
        await self._durable(CHANGE_UNSURE)
        return purged

    async def list_jobs(
        self, queue: str, state: JobState, page_size: int, page_token: str
    ) -> tuple[list[JobView], str]:
        return self.engine.list_jobs(queue, state, page_size, page_token)

    # ---- queues ---------------------------------------------------------------------

    async def get_queue(self, name: str) -> QueueView:
        return self.engine.get_queue(name)

    async def list_queues(self) -> list[QueueView]:
        return self.engine.list_queues()

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
        self._writable()
        engine = self.engine
        before = engine.lease_of(name)
        view = engine.update_queue(
            name,
            width=width,
            paused=paused,
            lease_seconds=lease_seconds,
            create=create,
            now=self.clock(),
            **policies,
        )
        self.pump.kick()
        if before is not None and view.settings.lease_seconds != before:
            self._tell_intervals(name)
        await self._durable(CHANGE_UNSURE)
        return view

    async def delete_queue(self, name: str) -> int:
        self._writable()
        forgotten = self.engine.delete_queue(name)
        await self._durable(CHANGE_UNSURE)
        return forgotten

    def _tell_intervals(self, queue: str) -> None:
        """A queue's lease changed: its workers hear their new heartbeat interval."""
        for worker in self.engine.subscribers(queue):
            interval = self.heartbeat_interval(worker)
            if self._told.get(worker.key) != interval:
                self._told[worker.key] = interval
                outbox = self.pump.outbox(worker)
                if outbox is not None:
                    outbox.settings(interval)

    # ---- workers --------------------------------------------------------------------

    async def connect(self, spec: WorkerSpec, outbox: Outbox) -> WorkerRecord:
        worker = self.engine.connect(
            spec.worker_id, list(spec.queues), spec.max_in_flight, self.clock(), dict(spec.labels)
        )
        worker.kind = spec.kind
        self.pump.register(worker, outbox)
        self._told[worker.key] = self.heartbeat_interval(worker)
        self.pump.kick()
        return worker

    async def results(self, worker: WorkerRecord, results: Sequence[WorkResult]) -> list[Rejection]:
        engine, now = self.engine, self.clock()
        rejected = []
        for r in results:
            rejection = engine.complete(
                worker,
                r.job_id,
                r.lease_id,
                r.outcome,
                now,
                http_status=r.http_status,
                latency=r.latency,
            )
            if rejection is not None:
                rejected.append(rejection)
        self.pump.kick()
        return rejected

    async def heartbeat(self, worker: WorkerRecord, lease_ids: Sequence[str]) -> list[str]:
        return self.engine.heartbeat(worker, lease_ids, self.clock())

    async def set_credit(self, worker: WorkerRecord, max_in_flight: int) -> None:
        self.engine.set_credit(worker, max_in_flight)
        self.pump.kick()

    async def disconnect(self, worker: WorkerRecord) -> int:
        self.pump.unregister(worker)
        self._told.pop(worker.key, None)
        held = self.engine.disconnect(worker, self.clock())
        self.pump.kick()
        return held

    def heartbeat_interval(self, worker: WorkerRecord) -> float:
        return heartbeat_interval([self.engine.lease_of(q) or 30.0 for q in worker.queues])

    def local_workers(self) -> list[WorkerRecord]:
        return self.engine.workers()

    async def list_workers(self) -> list[WorkerInfo]:
        return [worker_info(w, "") for w in self.engine.workers()]

    async def fleet_counts(self) -> list[ReplicaCounts]:
        if self._counter is None:  # a server without the dashboard pays nothing for it
            self._counter = JobCounter()
            self.observers.add(self._counter)
        return [ReplicaCounts("", self._counter.counts())]

    # ---- slots ----------------------------------------------------------------------

    async def acquire_slot(self, queue: str, holder: str, ttl: float, priority: int) -> SlotRecord:
        engine = self.engine
        ask = engine.request_slot(queue, holder, ttl, priority, self.clock())
        grant = self.waiters.add_slot(ask.request_id)
        self.pump.kick()
        try:
            return await asyncio.shield(grant)
        except asyncio.CancelledError:
            # The caller's deadline passed or it went away. A grant that raced in is
            # handed back at once, so no slot leaks to a caller that cannot release it.
            engine.cancel_slot_request(ask.request_id)
            if grant.done() and not grant.cancelled():
                engine.release_slot(grant.result().slot_id)
                self.pump.kick()
            raise
        finally:
            self.waiters.discard_slot(ask.request_id)

    async def renew_slot(self, slot_id: str, ttl: float | None) -> SlotRecord:
        slot = self.engine.renew_slot(slot_id, ttl, self.clock())
        self.pump.kick()  # the slot timer may need to move
        return slot

    async def release_slot(self, slot_id: str) -> None:
        self.engine.release_slot(slot_id)
        self.pump.kick()

    # ---- schedules ------------------------------------------------------------------

    async def create_schedule(self, schedule: ScheduleRecord) -> ScheduleRecord:
        self._writable()
        rec = self.engine.create_schedule(schedule, self.clock())
        self.pump.kick()  # the timer may need to move up
        await self._durable("the schedule may exist: read it back before creating it again")
        return rec

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord:
        return self.engine.get_schedule(schedule_id)

    async def list_schedules(
        self, page_size: int, page_token: str
    ) -> tuple[list[ScheduleRecord], str]:
        return self.engine.list_schedules(page_size, page_token)

    async def update_schedule(self, schedule_id: str, changes: dict[str, object]) -> ScheduleRecord:
        self._writable()
        rec = self.engine.update_schedule(schedule_id, changes, self.clock())
        self.pump.kick()
        await self._durable("the change may have happened: read the schedule back")
        return rec

    async def delete_schedule(self, schedule_id: str) -> None:
        self._writable()
        self.engine.delete_schedule(schedule_id)
        await self._durable("the schedule may be gone: read it back")

    async def trigger_schedule(self, schedule_id: str, overlap: Overlap | None) -> Firing:
        self._writable()
        firing = self.engine.trigger_schedule(schedule_id, overlap, self.clock())
        self.pump.kick()
        await self._durable("the job may still run")
        return firing

    async def backfill_schedule(
        self, schedule_id: str, start: float, end: float, overlap: Overlap | None
    ) -> list[Firing]:
        self._writable()
        firings = self.engine.backfill_schedule(schedule_id, start, end, overlap, self.clock())
        self.pump.kick()
        await self._durable("the jobs may still run; a repeated backfill makes no duplicates")
        return firings


def _as_changed(job: JobRecord) -> JobRecord:
    """The job as the change left it. The answer waits for the journal, and a live record
    moves on meanwhile (a worker may take a retried job and finish it): the caller is told
    what it did, not what happened next."""
    return replace(job, headers=dict(job.headers))  # attempts: an immutable tuple


def worker_info(w: WorkerRecord, replica: str) -> WorkerInfo:
    held = sorted(lease.job.id for lease in w.leases.values())
    return WorkerInfo(
        worker_id=w.worker_id,
        queues=w.queues,
        max_in_flight=w.max_in_flight,
        held=len(held),
        held_jobs=tuple(held[:HELD_JOBS_SHOWN]),
        labels=dict(w.labels),
        connect_time=w.connect_time,
        kind=w.kind,
        replica=replica,
        draining=w.draining,
    )
