"""Counters and histograms of engine events, kept as plain numbers.

The engine calls :class:`MetricsObserver` synchronously on every submit, dispatch and
result, so these hooks are the metrics' whole cost on the hot path. They touch only ints
and floats in slotted objects: no locks, no label lookups, no prometheus_client calls.
Everything runs on the event loop thread, and so does the scrape (see ``http.py``), so no
reader ever sees a half-made update. :mod:`dispatchd.observability.collector` turns these
numbers into Prometheus metric families at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence

from dispatchd.engine import EngineObserver, FinishedJob, JobRecord, JobState, LeaseRecord
from dispatchd.engine.reasons import LEASE_EXPIRED, REQUEUED, WORKER_LOST
from dispatchd.engine.schedules import Firing, FiringCause, FiringOutcome
from dispatchd.engine.throttling import ThrottleScope

OTHER_LABEL = "_other"
"""The ``queue`` label shared by every queue past the cap."""
UNKNOWN_LABEL = "_unknown"
"""The ``queue`` label of results for job ids the server does not know."""

#: Seconds. Jobs wait and run from milliseconds to hours, so the buckets span both.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)

#: The outcomes of dispatchd_jobs_completed_total, by JobState.
OUTCOMES = (
    (JobState.SUCCEEDED, "succeeded"),
    (JobState.FAILED, "failed"),
    (JobState.CANCELLED, "cancelled"),
    (JobState.EXPIRED, "expired"),
    (JobState.DEAD, "dead"),
)
# States an attempt can end in with a worker's result; their run time is observed...
_RAN = frozenset({int(JobState.SUCCEEDED), int(JobState.FAILED), int(JobState.DEAD)})
# ...unless the attempt was lost (lease expired, worker gone): no result, no run time.
_LOST = frozenset({LEASE_EXPIRED, WORKER_LOST})


class Histogram:
    """Fixed buckets as plain counts (not cumulative: the collector sums them)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[int]:
        """Observations <= each bound, ending with the total (+Inf), as Prometheus wants."""
        total, out = 0, []
        for n in self.counts:
            total += n
            out.append(total)
        return out

    @property
    def count(self) -> int:
        return sum(self.counts)


class QueueStats:
    """Everything counted for one ``queue`` label."""

    __slots__ = (
        "completed",
        "dispatched",
        "lease_expired",
        "refused",
        "requeued",
        "retried",
        "run",
        "stale_results",
        "submitted",
        "throttles",
        "wait",
    )

    def __init__(self) -> None:
        self.submitted = 0
        self.dispatched = 0
        self.completed = [0] * (max(JobState) + 1)  # indexed by JobState value
        self.retried = 0
        self.lease_expired = 0
        self.stale_results = 0
        self.throttles = [0, 0]  # throttle signals by scope: queue, fairness key
        self.requeued: dict[str, int] = {}
        """Underway jobs put back to pending without a retry, by why (REQUEUE_REASONS)."""
        self.refused: dict[str, int] = {}
        """Jobs a submit refused, by why (REFUSAL_REASONS)."""
        self.wait = Histogram()
        self.run = Histogram()


class QueueLabels:
    """Maps queue names to ``queue`` label values: the first ``cap`` queues seen get their
    own, the rest share OTHER_LABEL. A queue keeps its label for the life of the process,
    so its counters never move between series."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._labels: dict[str, str] = {}
        self._own = 0

    def __call__(self, queue: str) -> str:
        label = self._labels.get(queue)
        if label is None:
            if not queue:
                label = UNKNOWN_LABEL
            elif self._own < self.cap:
                label = queue
                self._own += 1
            else:
                label = OTHER_LABEL
            self._labels[queue] = label
        return label


#: dispatchd_schedule_firings_total's outcome and cause labels, by their numbers.
FIRING_OUTCOMES = {1: "submitted", 2: "skipped", 3: "duplicate", 4: "refused", 5: "missed"}
FIRING_CAUSES = {1: "scheduled", 2: "triggered", 3: "backfill"}


class ScheduleStats:
    """Firings of every schedule (no per-schedule label: there may be 10,000 of them)."""

    __slots__ = ("firings", "lag")

    def __init__(self) -> None:
        self.firings: dict[tuple[str, str], int] = {}
        self.lag = Histogram()
        """Seconds from a scheduled tick (its jitter included) to its job's submit."""


class MetricsObserver(EngineObserver):
    """Counts engine events per queue label. ``clock`` is the engine's clock (the server
    passes the same one), read only when a failed attempt is retried."""

    def __init__(self, labels: QueueLabels, clock: Callable[[], float]) -> None:
        self.labels = labels
        self._clock = clock
        self.stats: dict[str, QueueStats] = {}  # by label
        self.schedules = ScheduleStats()
        self._by_queue: dict[str, QueueStats] = {}  # by queue name: the hot-path lookup

    def of(self, queue: str) -> QueueStats:
        stats = self._by_queue.get(queue)
        if stats is None:
            label = self.labels(queue)
            stats = self.stats.get(label)
            if stats is None:
                stats = self.stats[label] = QueueStats()
            self._by_queue[queue] = stats
        return stats

    def jobs_submitted(self, jobs: Sequence[JobRecord]) -> None:
        by_queue = self._by_queue
        for job in jobs:
            (by_queue.get(job.queue) or self.of(job.queue)).submitted += 1

    # The two hooks below run once per job; Histogram.observe is inlined in them (a method
    # call is a measurable share of their cost).

    def job_dispatched(self, lease: LeaseRecord) -> None:
        job = lease.job
        stats = self._by_queue.get(job.queue) or self.of(job.queue)
        stats.dispatched += 1
        if job.attempt == 1 and job.dispatch_time is not None:
            # From when the job could first run: a delayed job's delay is not waiting.
            ready = job.not_before if job.not_before is not None else job.submit_time
            seconds = max(0.0, job.dispatch_time - max(ready, job.submit_time))
            wait = stats.wait
            wait.counts[bisect_left(wait.bounds, seconds)] += 1
            wait.sum += seconds

    def job_finished(self, job: FinishedJob) -> None:
        stats = self._by_queue.get(job.queue) or self.of(job.queue)
        code = job.state_code
        stats.completed[code] += 1
        if code in _RAN and job.dispatch_time is not None and job.error not in _LOST:
            seconds = job.finish_time - job.dispatch_time
            run = stats.run
            run.counts[bisect_left(run.bounds, seconds)] += 1
            run.sum += seconds

    def job_retrying(self, job: JobRecord, due: float) -> None:
        stats = self.of(job.queue)
        stats.retried += 1
        if job.dispatch_time is not None and job.error not in _LOST:
            stats.run.observe(max(0.0, self._clock() - job.dispatch_time))

    def lease_expired(self, lease: LeaseRecord) -> None:
        self.of(lease.job.queue).lease_expired += 1

    def job_throttled(self, job: JobRecord, scope: int, until: float, reason: str) -> None:
        self.of(job.queue).throttles[1 if scope == ThrottleScope.FAIRNESS_KEY else 0] += 1

    def job_requeued(self, job: JobRecord, reason: str) -> None:
        requeued(self.of(job.queue), reason, 1)

    def submit_refused(self, queues: Sequence[str], reason: str) -> None:
        """A Submit or SubmitBatch was refused (nothing admitted): each job counts once
        under its queue. Called by the service layer, not the engine: some refusals (a
        draining server, Redis away) never reach an engine."""
        label = REFUSAL_REASONS.get(reason)
        if label is None:
            return  # a malformed request, not a refusal an operator acts on
        for queue in queues:
            refused = self.of(queue).refused
            refused[label] = refused.get(label, 0) + 1

    def result_rejected(self, queue: str, reason: str) -> None:
        self.of(queue).stale_results += 1

    def schedule_fired(self, schedule_id: str, queue: str, firing: Firing) -> None:
        stats = self.schedules
        key = (FIRING_OUTCOMES[int(firing.outcome)], FIRING_CAUSES[int(firing.cause)])
        stats.firings[key] = stats.firings.get(key, 0) + firing.count
        if firing.outcome is FiringOutcome.SUBMITTED and firing.cause is FiringCause.SCHEDULED:
            stats.lag.observe(max(0.0, firing.fire_time - firing.tick))


#: dispatchd_jobs_requeued_total's reason label, by the engine's requeue reason (engine/
#: reasons.py): an underway job back to pending with no retry decided, its attempt counted.
REQUEUE_REASONS = {
    REQUEUED[WORKER_LOST.code]: "worker_lost",
    REQUEUED[LEASE_EXPIRED.code]: "lease_expired",
}

#: dispatchd_submit_refused_total's reason label, by ErrorInfo reason (engine/errors.py).
REFUSAL_REASONS = {
    "QUEUE_FULL": "max_pending",
    "TOO_MANY_PENDING": "max_pending_total",
    "TOO_MANY_QUEUES": "max_queues",
    "PAYLOAD_TOO_LARGE": "payload_size",
    "DRAINING": "draining",
    "BACKEND_UNAVAILABLE": "backend_unavailable",
    "JOURNAL_UNAVAILABLE": "journal_unavailable",
}


def requeued(stats: QueueStats, reason: str, n: int) -> None:
    """Counts lost attempts given back; a drain's hand-back (no attempt lost) is not one."""
    label = REQUEUE_REASONS.get(reason)
    if label is not None:
        stats.requeued[label] = stats.requeued.get(label, 0) + n


#: Records per journal commit.
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class StorageStats:
    """What a backend measures of its own storage (Backend.storage_stats): journal commits
    and snapshots on the embedded backend, script calls on Redis. Plain numbers, on the
    event loop, like the rest."""

    def __init__(self) -> None:
        self.journal_commit = Histogram()
        """Seconds per journal commit (the SQLite transaction, on its writer thread)."""
        self.journal_batch = Histogram(BATCH_BUCKETS)
        """Records (new jobs, status changes, queues...) per journal commit."""
        self.journal_failures = 0
        self.journal_bytes: Callable[[], int] | None = None
        """The journal's size on disk now (database + WAL); None: no journal."""
        self.snapshot = Histogram()
        """Seconds to write the drain's snapshot."""
        self.calls: dict[str, Histogram] = {}
        """Seconds per Redis script call, by script."""
        self.call_errors: dict[tuple[str, str], int] = {}
        """Failed Redis calls by (script, kind: unreachable, refused, script)."""

    def call(self, script: str, seconds: float) -> None:
        hist = self.calls.get(script)
        if hist is None:
            hist = self.calls[script] = Histogram(GRPC_BUCKETS)
        hist.observe(seconds)

    def call_failed(self, script: str, kind: str) -> None:
        key = (script, kind)
        self.call_errors[key] = self.call_errors.get(key, 0) + 1


class GrpcStats:
    """Calls per (service, method, status code) and their durations per (service, method),
    recorded by the server interceptor. Methods are the registered ones only, so the label
    set is bounded by the services the server runs."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, str, str], int] = {}
        self.seconds: dict[tuple[str, str], Histogram] = {}
        self.started: dict[tuple[str, str], int] = {}
        self.types: dict[tuple[str, str], str] = {}
        """grpc_type (unary, client_stream, server_stream, bidi_stream) by method."""

    def method(self, service: str, method: str, grpc_type: str) -> None:
        """A method the interceptor wraps: its type, and its counters at 0."""
        self.types[service, method] = grpc_type
        self.started.setdefault((service, method), 0)

    def start(self, service: str, method: str) -> None:
        key = (service, method)
        self.started[key] = self.started.get(key, 0) + 1

    def record(self, service: str, method: str, code: str, seconds: float) -> None:
        key = (service, method, code)
        self.calls[key] = self.calls.get(key, 0) + 1
        hist = self.seconds.get((service, method))
        if hist is None:
            hist = self.seconds[service, method] = Histogram(GRPC_BUCKETS)
        hist.observe(seconds)


#: Seconds. Unary calls take well under a millisecond; WaitJob and the Work stream last
#: up to an hour, so the top buckets are long.
GRPC_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
    60.0,
    300.0,
    3600.0,
)
