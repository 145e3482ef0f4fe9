"""Engine events for outside watchers (metrics, tracing, WaitJob), dramatiq-middleware style.

The engine calls these synchronously after each state change. Observers must be
cheap and must not call back into the engine.
"""

from __future__ import annotations

from collections.abc import Sequence

from dispatchd.engine.model import (
    FinishedJob,
    JobRecord,
    LeaseRecord,
    QueueSettings,
    SlotRecord,
)
from dispatchd.engine.workers import WorkerRecord


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


class ObserverChain(EngineObserver):
    """Fans every event out to several observers in order."""

    def __init__(self, observers: Sequence[EngineObserver]) -> None:
        self._observers = list(observers)

    def add(self, observer: EngineObserver) -> None:
        self._observers.append(observer)

    def jobs_submitted(self, jobs: Sequence[JobRecord]) -> None:
        for o in self._observers:
            o.jobs_submitted(jobs)

    def job_dispatched(self, lease: LeaseRecord) -> None:
        for o in self._observers:
            o.job_dispatched(lease)

    def job_finished(self, job: FinishedJob) -> None:
        for o in self._observers:
            o.job_finished(job)

    def job_requeued(self, job: JobRecord, reason: str) -> None:
        for o in self._observers:
            o.job_requeued(job, reason)

    def result_rejected(self, queue: str, reason: str) -> None:
        for o in self._observers:
            o.result_rejected(queue, reason)

    def job_retrying(self, job: JobRecord, due: float) -> None:
        for o in self._observers:
            o.job_retrying(job, due)

    def lease_expired(self, lease: LeaseRecord) -> None:
        for o in self._observers:
            o.lease_expired(lease)

    def job_changed(self, job: JobRecord) -> None:
        for o in self._observers:
            o.job_changed(job)

    def jobs_forgotten(self, job_ids: Sequence[str]) -> None:
        for o in self._observers:
            o.jobs_forgotten(job_ids)

    def queue_changed(self, name: str, settings: QueueSettings) -> None:
        for o in self._observers:
            o.queue_changed(name, settings)

    def slot_granted(self, request_id: str, slot: SlotRecord) -> None:
        for o in self._observers:
            o.slot_granted(request_id, slot)

    def slot_expired(self, slot: SlotRecord) -> None:
        for o in self._observers:
            o.slot_expired(slot)

    def worker_connected(self, worker: WorkerRecord) -> None:
        for o in self._observers:
            o.worker_connected(worker)

    def worker_disconnected(self, worker: WorkerRecord, held: int) -> None:
        for o in self._observers:
            o.worker_disconnected(worker, held)

    def lease_released(self, queue: str) -> None:
        for o in self._observers:
            o.lease_released(queue)
