"""Per-queue counters and histograms of one replica, in the embedded mode's metric
families: each replica counts what it did itself (submits it took, jobs it handed to its
workers, their results, leases its reaper took back, and what the scripts it ran did to
jobs no reply shows: jobs that expired while they waited, lost attempts), so Prometheus'
sum over replicas is the fleet's figure."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable

from dispatchd.engine import JobFailure, JobState
from dispatchd.engine.throttling import ThrottleScope
from dispatchd.observability.metrics import QueueStats, requeued
from dispatchd.redis.records import StoredJob, Tally

#: States whose run time is observed: the worker answered (lost attempts are not runs).
_RAN = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD})
_WAITING = frozenset({JobState.PENDING, JobState.SCHEDULED})


class Accounting:
    """``stats_of`` is the metrics observer's per-queue lookup; None: metrics are off."""

    def __init__(self, stats_of: Callable[[str], QueueStats] | None) -> None:
        self._of = stats_of

    def submitted(self, results: Iterable[tuple[StoredJob, bool]]) -> None:
        if self._of is not None:
            for job, duplicate in results:
                if not duplicate:
                    self._of(job.record.queue).submitted += 1
                    if job.record.state is JobState.EXPIRED:  # expire_at already passed
                        self.expired(job.record.queue, 1)

    def dispatched(self, queue: str, jobs: Iterable[StoredJob]) -> None:
        if self._of is None:
            return
        stats = self._of(queue)
        for stored in jobs:
            stats.dispatched += 1
            job = stored.record
            if job.attempt == 1 and job.dispatch_time is not None:
                ready = max(job.not_before or job.submit_time, job.submit_time)
                seconds = max(0.0, job.dispatch_time - ready)
                stats.wait.counts[bisect_left(stats.wait.bounds, seconds)] += 1
                stats.wait.sum += seconds

    def answered(self, queue: str, ran: float, state: JobState, failure: JobFailure | None) -> None:
        """A result of this replica's worker was taken after ``ran`` seconds; ``state``
        is the job's state now."""
        if self._of is None:
            return
        stats = self._of(queue)
        if state in _WAITING:
            stats.retried += 1
        elif state.finished:
            stats.completed[int(state)] += 1
        if state in _RAN or (state in _WAITING and failure is not None):
            stats.run.observe(max(0.0, ran))

    def throttled(self, queue: str, scope: int) -> None:
        """A throttle signal of this replica's worker was taken (engine/throttling.py)."""
        if self._of is not None:
            self._of(queue).throttles[1 if scope == ThrottleScope.FAIRNESS_KEY else 0] += 1

    def finished(self, queue: str, state: JobState) -> None:
        if self._of is not None:
            self._of(queue).completed[int(state)] += 1

    def expired(self, queue: str, n: int) -> None:
        """Jobs of ``queue`` that expired while they waited (a script expired them)."""
        if self._of is not None and n:
            self._of(queue).completed[int(JobState.EXPIRED)] += n

    def unseen(self, tally: Tally) -> None:
        """What a script did to jobs that its reply does not show (records.Tally)."""
        if self._of is None:
            return
        for (queue, state), n in tally.finished.items():
            if state is JobState.EXPIRED:
                self.expired(queue, n)
            else:
                self._of(queue).completed[int(state)] += n
        for queue, n in tally.retried.items():
            self._of(queue).retried += n
        for (queue, why), n in tally.requeued.items():
            requeued(self._of(queue), why, n)

    def lease_expired(self, queue: str, n: int) -> None:
        if self._of is not None and n:
            self._of(queue).lease_expired += n

    def rejected(self, queue: str, n: int) -> None:
        if self._of is not None and n:
            self._of(queue).stale_results += n
