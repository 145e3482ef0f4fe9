"""Engine events for outside watchers (metrics, tracing, WaitJob), dramatiq-middleware style.

The engine calls these synchronously after each state change. Observers must be
cheap and must not call back into the engine.
"""

from __future__ import annotations

from collections.abc import Sequence

from dispatchd.engine.model import FinishedJob, JobRecord, LeaseRecord


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

    def lease_released(self, queue: str) -> None:
        for o in self._observers:
            o.lease_released(queue)
