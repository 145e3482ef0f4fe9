"""Engine events for outside watchers (metrics, tracing, WaitJob), dramatiq-middleware style.

The engine calls these synchronously after each state change. Observers must be
cheap and must not call back into the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from dispatchd.engine.model import (
    FinishedJob,
    JobRecord,
    LeaseRecord,
    QueueSettings,
    SlotRecord,
    WorkerRecord,
)

if TYPE_CHECKING:
    from dispatchd.engine.flow_rules import BatchView
    from dispatchd.engine.schedules import Firing, ScheduleRecord


class EngineObserver:
    """Base class with no-op hooks; override the ones you need."""

    def jobs_submitted(self, jobs: Sequence[JobRecord]) -> None:
        """Jobs were admitted to their queues."""

    def job_dispatched(self, lease: LeaseRecord) -> None:
        """A job was leased to a worker."""

    def job_finished(self, job: FinishedJob) -> None:
        """A job reached a finished state (succeeded, failed, cancelled)."""

    def job_requeued(self, job: JobRecord, reason: str) -> None:
        """An underway job went back to pending (lease expired, worker gone, drain)."""

    def job_retrying(self, job: JobRecord, due: float) -> None:
        """A failed attempt will run again at ``due`` (state SCHEDULED until then)."""

    def lease_expired(self, lease: LeaseRecord) -> None:
        """A lease ended without a result or heartbeat (before the job is requeued)."""

    def job_changed(self, job: JobRecord) -> None:
        """A waiting job changed without moving (reprioritized), or came back (RetryJob)."""

    def jobs_forgotten(self, job_ids: Sequence[str]) -> None:
        """Finished jobs left memory (retention, count bound, PurgeJobs)."""

    def queue_changed(self, name: str, settings: QueueSettings) -> None:
        """A queue was created or its settings changed."""

    def queue_deleted(self, name: str) -> None:
        """An empty queue was deleted (DeleteQueue); its finished jobs were forgotten just
        before (jobs_forgotten)."""

    def slot_granted(self, request_id: str, slot: SlotRecord) -> None:
        """An AcquireSlot request got its slot."""

    def slot_expired(self, slot: SlotRecord) -> None:
        """A slot was not renewed in time and was freed."""

    def worker_connected(self, worker: WorkerRecord) -> None:
        """A worker stream said hello."""

    def worker_disconnected(self, worker: WorkerRecord, held: int) -> None:
        """A worker stream ended; ``held`` of its jobs went back to pending."""

    def result_rejected(self, queue: str, reason: str) -> None:
        """A worker result changed nothing (stale or unknown lease)."""

    def lease_released(self, queue: str) -> None:
        """A width slot came free; the queue may dispatch again."""

    def quota_used(self, queue: str) -> None:
        """A dispatch of a queue with quota windows was counted in them (the journal stores
        the counts, so a restart grants nothing twice)."""

    def job_throttled(self, job: JobRecord, scope: int, until: float, reason: str) -> None:
        """A worker or target answered ``job`` with a throttle signal (engine/throttling.py):
        ``scope`` (a ThrottleScope: the queue or the job's fairness key) is held until
        ``until``. Called before the job goes back (job_requeued) or, past its bound of
        bounces, fails its attempt."""

    def schedule_changed(self, schedule: ScheduleRecord) -> None:
        """Created, changed, or fired (its state moved)."""

    def schedule_deleted(self, schedule_id: str) -> None:
        pass

    def schedule_fired(self, schedule_id: str, queue: str, firing: Firing) -> None:
        """One tick handled (submitted, skipped, refused, missed...)."""

    # ---- workflows (engine/flows.py) ----

    def job_progress(self, job: JobRecord) -> None:
        """A worker's progress report was stored on the job (not journaled on its own)."""

    def batch_changed(self, queue: str, batch_id: str) -> None:
        """A batch was created, got a job, closed, or one of its jobs finished (read it with
        Engine.get_batch: no view is built per job on the hot path)."""

    def batch_settled(self, batch: BatchView) -> None:
        """Every job of the batch is final (WaitBatch wakes); it may be open still."""

    def batch_deleted(self, queue: str, batch_id: str) -> None:
        """A batch was forgotten (retention after it completed, or its queue deleted)."""

    def batch_completed(self, batch: BatchView) -> None:
        """A closed batch's last job became final (its callbacks were just submitted)."""


class ObserverChain(EngineObserver):
    """Fans every event out to several observers in order.

    Each event keeps a tuple of the bound hooks that do something: an observer whose class
    leaves a hook as the base class's no-op is skipped for that event, so the chain costs
    one call per interested observer on the hot path, not one per observer."""

    def __init__(self, observers: Sequence[EngineObserver]) -> None:
        self._observers = list(observers)
        self._hooks: dict[str, tuple[Callable[..., None], ...]] = {}
        self._rebuild()

    def add(self, observer: EngineObserver) -> None:
        self._observers.append(observer)
        self._rebuild()

    def _rebuild(self) -> None:
        for event in _EVENTS:
            base = getattr(EngineObserver, event)
            self._hooks[event] = tuple(
                getattr(o, event) for o in self._observers if getattr(type(o), event) is not base
            )
        h = self._hooks
        self._jobs_submitted = h["jobs_submitted"]
        self._job_dispatched = h["job_dispatched"]
        self._job_finished = h["job_finished"]
        self._job_requeued = h["job_requeued"]
        self._result_rejected = h["result_rejected"]
        self._job_retrying = h["job_retrying"]
        self._lease_expired = h["lease_expired"]
        self._job_changed = h["job_changed"]
        self._jobs_forgotten = h["jobs_forgotten"]
        self._queue_changed = h["queue_changed"]
        self._queue_deleted = h["queue_deleted"]
        self._slot_granted = h["slot_granted"]
        self._slot_expired = h["slot_expired"]
        self._worker_connected = h["worker_connected"]
        self._worker_disconnected = h["worker_disconnected"]
        self._lease_released = h["lease_released"]
        self._schedule_changed = h["schedule_changed"]
        self._job_throttled = h["job_throttled"]
        self._quota_used = h["quota_used"]
        self._schedule_deleted = h["schedule_deleted"]
        self._schedule_fired = h["schedule_fired"]
        self._job_progress = h["job_progress"]
        self._batch_changed = h["batch_changed"]
        self._batch_settled = h["batch_settled"]
        self._batch_deleted = h["batch_deleted"]
        self._batch_completed = h["batch_completed"]

    def jobs_submitted(self, jobs: Sequence[JobRecord]) -> None:
        for hook in self._jobs_submitted:
            hook(jobs)

    def job_dispatched(self, lease: LeaseRecord) -> None:
        for hook in self._job_dispatched:
            hook(lease)

    def job_finished(self, job: FinishedJob) -> None:
        for hook in self._job_finished:
            hook(job)

    def job_requeued(self, job: JobRecord, reason: str) -> None:
        for hook in self._job_requeued:
            hook(job, reason)

    def result_rejected(self, queue: str, reason: str) -> None:
        for hook in self._result_rejected:
            hook(queue, reason)

    def job_retrying(self, job: JobRecord, due: float) -> None:
        for hook in self._job_retrying:
            hook(job, due)

    def lease_expired(self, lease: LeaseRecord) -> None:
        for hook in self._lease_expired:
            hook(lease)

    def job_changed(self, job: JobRecord) -> None:
        for hook in self._job_changed:
            hook(job)

    def jobs_forgotten(self, job_ids: Sequence[str]) -> None:
        for hook in self._jobs_forgotten:
            hook(job_ids)

    def queue_changed(self, name: str, settings: QueueSettings) -> None:
        for hook in self._queue_changed:
            hook(name, settings)

    def queue_deleted(self, name: str) -> None:
        for hook in self._queue_deleted:
            hook(name)

    def slot_granted(self, request_id: str, slot: SlotRecord) -> None:
        for hook in self._slot_granted:
            hook(request_id, slot)

    def slot_expired(self, slot: SlotRecord) -> None:
        for hook in self._slot_expired:
            hook(slot)

    def worker_connected(self, worker: WorkerRecord) -> None:
        for hook in self._worker_connected:
            hook(worker)

    def worker_disconnected(self, worker: WorkerRecord, held: int) -> None:
        for hook in self._worker_disconnected:
            hook(worker, held)

    def lease_released(self, queue: str) -> None:
        for hook in self._lease_released:
            hook(queue)

    def quota_used(self, queue: str) -> None:
        for hook in self._quota_used:
            hook(queue)

    def job_throttled(self, job: JobRecord, scope: int, until: float, reason: str) -> None:
        for hook in self._job_throttled:
            hook(job, scope, until, reason)

    def schedule_changed(self, schedule: ScheduleRecord) -> None:
        for hook in self._schedule_changed:
            hook(schedule)

    def schedule_deleted(self, schedule_id: str) -> None:
        for hook in self._schedule_deleted:
            hook(schedule_id)

    def schedule_fired(self, schedule_id: str, queue: str, firing: Firing) -> None:
        for hook in self._schedule_fired:
            hook(schedule_id, queue, firing)

    def job_progress(self, job: JobRecord) -> None:
        for hook in self._job_progress:
            hook(job)

    def batch_changed(self, queue: str, batch_id: str) -> None:
        for hook in self._batch_changed:
            hook(queue, batch_id)

    def batch_settled(self, batch: BatchView) -> None:
        for hook in self._batch_settled:
            hook(batch)

    def batch_deleted(self, queue: str, batch_id: str) -> None:
        for hook in self._batch_deleted:
            hook(queue, batch_id)

    def batch_completed(self, batch: BatchView) -> None:
        for hook in self._batch_completed:
            hook(batch)


_EVENTS = (
    "job_throttled",
    "quota_used",
    "jobs_submitted",
    "job_dispatched",
    "job_finished",
    "job_requeued",
    "result_rejected",
    "job_retrying",
    "lease_expired",
    "job_changed",
    "jobs_forgotten",
    "queue_changed",
    "queue_deleted",
    "slot_granted",
    "slot_expired",
    "worker_connected",
    "worker_disconnected",
    "lease_released",
    "schedule_changed",
    "schedule_deleted",
    "schedule_fired",
    "job_progress",
    "batch_changed",
    "batch_settled",
    "batch_deleted",
    "batch_completed",
)
