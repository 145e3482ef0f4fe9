"""The Prometheus collector: every dispatchd metric family, built at scrape time.

Gauges come straight from engine state (queue views and worker records), so keeping them
costs the hot path nothing; counters and histograms come from the plain numbers that
:class:`~dispatchd.observability.metrics.MetricsObserver` and the gRPC interceptor keep.
The scrape runs on the event loop (see ``http.py``), the only thread that touches the
engine.
"""

from __future__ import annotations

import platform
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from dispatchd import __version__
from dispatchd.engine import QueueFigures, WorkerRecord
from dispatchd.observability.exposition import Family, render, to_metric
from dispatchd.observability.metrics import (
    FIRING_CAUSES,
    FIRING_OUTCOMES,
    OTHER_LABEL,
    OUTCOMES,
    GrpcStats,
    Histogram,
    MetricsObserver,
    QueueStats,
    ScheduleStats,
    StorageStats,
)

if TYPE_CHECKING:
    from dispatchd.push import TargetStats

PREFIX = "dispatchd_"
PushStats = Callable[[], "Mapping[str, TargetStats]"]
#: Work stream messages by (direction, kind), and the jobs the sent deliveries carried;
#: see dispatchd.service.work.MessageCounts.
StreamStats = Callable[[], tuple[Mapping[tuple[str, str], int], int]]


@dataclass(frozen=True, slots=True)
class Gauges:
    """What a backend said about its queues, this server's workers and its storage, for
    one scrape. ``queues`` is empty on a Redis replica that does not export the per-queue
    gauges (one replica does: redis/fleet.py), so a sum over replicas is the fleet's."""

    queues: Sequence[QueueFigures]
    local_workers: Sequence[WorkerRecord]
    draining: bool
    now: float = 0.0
    storage: StorageStats | None = None
    backend: str = ""
    """"embedded" or "redis": which storage families the page carries."""
    healthy: bool = True
    """The backend can take changes (the journal commits, Redis answers)."""


#: Why pending jobs wait, in the order they are decided: each ready pending job counts
#: under the first reason that holds its queue back (docs/observability.md).
HELD_REASONS = ("paused", "width", "no_worker", "no_credit", "rate")


@dataclass(slots=True)
class _QueueGauges:
    """One label's gauges; the OTHER_LABEL row sums every folded queue."""

    pending: int = 0
    scheduled: int = 0
    underway: int = 0
    width: int = 0
    paused: int = 0
    throttled: int = 0
    throttled_keys: int = 0
    dead: int = 0
    failed: int = 0
    oldest: float = 0.0
    held: dict[str, int] = field(default_factory=dict)
    rates: list[float | None] = field(default_factory=list)

    def add(self, figures: QueueFigures, now: float) -> None:
        view = figures.view
        s = view.settings
        self.pending += view.pending_count
        self.scheduled += view.scheduled_count
        self.underway += view.underway_count
        self.width += s.width
        self.paused += int(s.paused)
        self.throttled += int(view.throttled_until is not None)
        self.throttled_keys += view.throttled_key_count
        self.dead += figures.dead
        self.failed += figures.failed
        if figures.head_ready is not None:
            self.oldest = max(self.oldest, now - figures.head_ready)
        self.rates.append(None if s.rate is None else s.rate.per_second)
        held = self.held
        ready = max(0, view.pending_count - figures.blocked - figures.key_held)
        reason = _held_reason(figures)
        for r in HELD_REASONS:
            held[r] = held.get(r, 0) + (ready if r == reason else 0)
        held["key_limit"] = held.get("key_limit", 0) + figures.key_held
        held["ordering_key"] = held.get("ordering_key", 0) + figures.blocked

    @property
    def rate(self) -> float | None:
        """Tokens per second, or None when any queue behind the label is unlimited."""
        if not self.rates or any(r is None for r in self.rates):
            return None
        return sum(r for r in self.rates if r is not None)


def _held_reason(figures: QueueFigures) -> str | None:
    """The first queue-wide reason that stops a dispatch now (None: none does)."""
    view = figures.view
    s = view.settings
    if s.paused:
        return "paused"
    if view.underway_count >= s.width:
        return "width"
    if view.worker_count == 0:
        return "no_worker"
    if not figures.credit_free:
        return "no_credit"
    if figures.rate_limited:
        return "rate"
    return None


@dataclass(slots=True)
class _WorkerGauges:
    """Stream workers (and their credits) serving one queue label, on this server."""

    workers: int = 0
    free: int = 0
    push: int = 0


def _histogram(
    name: str, doc: str, labelnames: tuple[str, ...], rows: Iterable[tuple[list[str], Histogram]]
) -> Family:
    family = Family(name, "histogram", doc, labelnames)
    for values, hist in rows:
        family.add_histogram(values, hist)
    return family


class DispatchdCollector(Collector):
    """Yields every ``dispatchd_*`` family from the engine, the observer and gRPC stats."""

    def __init__(
        self,
        engine: Callable[[], Gauges],
        observer: MetricsObserver,
        grpc_stats: GrpcStats,
        push_stats: PushStats | None = None,
        stream_stats: StreamStats | None = None,
    ) -> None:
        self._engine = engine
        self._observer = observer
        self._grpc = grpc_stats
        self._push = push_stats
        self._streams = stream_stats

    def collect(self) -> Iterator[Metric]:
        """For a CollectorRegistry (prometheus_client's renderers, OpenMetrics)."""
        for family in self.families():
            yield to_metric(family)

    def render(self) -> str:
        """The text exposition of every family: what /metrics serves."""
        return render(self.families())

    def families(self) -> Iterator[Family]:
        engine = self._engine()
        yield from self._queue_gauges(engine)
        yield from self._counters(self._observer.stats)
        yield from self._schedule_families(self._observer.schedules)
        yield from self._workers(engine)
        yield from self._storage_families(engine)
        yield from self._grpc_families()
        if self._streams is not None:
            yield from self._stream_families(*self._streams())
        if self._push is not None:
            yield from self._push_families(self._push())
        info = Family(
            PREFIX + "build_info",
            "gauge",
            "Always 1; the labels say which dispatchd and Python run.",
            ("version", "python"),
        )
        info.add([__version__, platform.python_version()], 1)
        yield info
        draining = Family(
            PREFIX + "draining", "gauge", "1 while the server drains (intake stopped)."
        )
        draining.add((), int(engine.draining))
        yield draining
        up = Family(
            PREFIX + "backend_up",
            "gauge",
            "1 while the backend takes changes; 0 while the journal cannot commit or Redis "
            "cannot be reached (readiness is NOT_SERVING meanwhile).",
            ("backend",),
        )
        up.add((engine.backend,), int(engine.healthy))
        yield up

    @staticmethod
    def _stream_families(counts: Mapping[tuple[str, str], int], jobs: int) -> Iterator[Family]:
        family = Family(
            PREFIX + "work_messages",
            "counter",
            "Work stream messages by direction (received from workers, sent to them) and "
            "kind; work_jobs_delivered over sent deliveries is the jobs per delivery message.",
            ("direction", "kind"),
        )
        for (direction, kind), n in sorted(counts.items()):
            family.add((direction, kind), n)
        yield family
        delivered = Family(
            PREFIX + "work_jobs_delivered",
            "counter",
            "Jobs sent to stream workers in delivery messages (HTTP push excluded).",
        )
        delivered.add((), jobs)
        yield delivered

    def _queue_gauges(self, engine: Gauges) -> Iterator[Family]:
        rows: dict[str, _QueueGauges] = {}
        labels = self._observer.labels
        for figures in engine.queues:
            label = labels(figures.view.name)
            row = rows.get(label)
            if row is None:
                row = rows[label] = _QueueGauges()
            row.add(figures, engine.now)
        # Queues the engine forgot (none today) keep their counters; gauges only show
        # queues that exist now.
        names = sorted(rows)
        gauges: tuple[tuple[str, str, Callable[[_QueueGauges], float]], ...] = (
            ("jobs_pending", "Jobs waiting for a worker.", lambda r: r.pending),
            ("jobs_scheduled", "Jobs waiting for their not_before time.", lambda r: r.scheduled),
            ("jobs_underway", "Jobs leased to a worker.", lambda r: r.underway),
            ("jobs_dead", "DEAD jobs held now (until --finished-retention).", lambda r: r.dead),
            ("jobs_failed", "FAILED jobs held now.", lambda r: r.failed),
            (
                "queue_oldest_pending_age_seconds",
                "Seconds since the job at the head of the queue (the next to dispatch) could "
                f"first run; 0 when nothing is ready ({OTHER_LABEL}: the oldest).",
                lambda r: r.oldest,
            ),
            ("queue_width", "Most jobs underway at once.", lambda r: r.width),
            (
                "queue_paused",
                f"1 if the queue is paused ({OTHER_LABEL}: how many are).",
                lambda r: r.paused,
            ),
            (
                "queue_throttled",
                "1 while a throttle signal holds the whole queue "
                f"({OTHER_LABEL}: how many are held).",
                lambda r: r.throttled,
            ),
            (
                "queue_throttled_keys",
                "Fairness keys of the queue a key-scoped throttle signal holds now.",
                lambda r: r.throttled_keys,
            ),
        )
        for name, doc, value in gauges:
            family = Family(PREFIX + name, "gauge", doc, ("queue",))
            for label in names:
                family.add((label,), value(rows[label]))
            yield family
        held = Family(
            PREFIX + "jobs_held_back",
            "gauge",
            "Pending jobs that cannot be dispatched now, by the first reason that holds them "
            "(paused, width, no_worker, no_credit, rate; key_limit: their fairness key at its "
            "key limit; ordering_key: behind an earlier job of their key).",
            ("queue", "reason"),
        )
        for label in names:
            for reason, n in sorted(rows[label].held.items()):
                held.add((label, reason), n)
        yield held
        rate = Family(
            PREFIX + "queue_rate_per_second",
            "gauge",
            "Dispatch rate limit in jobs per second; no sample for an unlimited queue.",
            ("queue",),
        )
        for label in names:
            per_second = rows[label].rate
            if per_second is not None:
                rate.add((label,), per_second)
        yield rate

    def _counters(self, stats: dict[str, QueueStats]) -> Iterator[Family]:
        names = sorted(stats)
        simple = (
            ("jobs_submitted", "Jobs admitted.", "submitted"),
            ("jobs_dispatched", "Deliveries to workers (each attempt counts).", "dispatched"),
            ("jobs_retried", "Failed attempts that will run again.", "retried"),
            ("leases_expired", "Leases that ended without a result or heartbeat.", "lease_expired"),
            (
                "stale_results",
                "Worker results that changed nothing (stale or unknown lease).",
                "stale_results",
            ),
        )
        for name, doc, attr in simple:
            family = Family(PREFIX + name, "counter", doc, ("queue",))
            for label in names:
                family.add((label,), getattr(stats[label], attr))
            yield family
        throttles = Family(
            PREFIX + "throttle_signals",
            "counter",
            "Results that were throttle signals (a worker's Throttled, an HTTP 429 or 503 with "
            "Retry-After), by what they held.",
            ("queue", "scope"),
        )
        for label in names:
            queue_scope, key_scope = stats[label].throttles
            throttles.add((label, "queue"), queue_scope)
            throttles.add((label, "fairness_key"), key_scope)
        yield throttles
        completed = Family(
            PREFIX + "jobs_completed",
            "counter",
            "Jobs that reached a final state, by outcome.",
            ("queue", "outcome"),
        )
        for label in names:
            counts = stats[label].completed
            for state, outcome in OUTCOMES:
                completed.add((label, outcome), counts[state])
        yield completed
        for name, doc, attr in (
            (
                "jobs_requeued",
                "Underway jobs put back to pending after a lost attempt with no retry policy, "
                "by reason (worker_lost, lease_expired); the attempt is counted.",
                "requeued",
            ),
            (
                "submit_refused",
                "Jobs a Submit or SubmitBatch refused, by reason (max_pending, "
                "max_pending_total, max_queues, payload_size, draining, backend_unavailable, "
                "journal_unavailable).",
                "refused",
            ),
        ):
            family = Family(PREFIX + name, "counter", doc, ("queue", "reason"))
            for label in names:
                for reason, n in sorted(getattr(stats[label], attr).items()):
                    family.add((label, reason), n)
            yield family
        yield _histogram(
            PREFIX + "job_wait_seconds",
            "Seconds from when a job could first run (submit, or the end of its delay) to its "
            "first dispatch.",
            ("queue",),
            (([label], stats[label].wait) for label in names),
        )
        yield _histogram(
            PREFIX + "job_run_seconds",
            "Seconds from dispatch to the worker's result, per attempt (lost attempts excluded).",
            ("queue",),
            (([label], stats[label].run) for label in names),
        )

    @staticmethod
    def _schedule_families(stats: ScheduleStats) -> Iterator[Family]:
        firings = Family(
            PREFIX + "schedule_firings",
            "counter",
            "Schedule ticks handled, by outcome (submitted; skipped by the overlap policy; "
            "duplicate: the tick had its job; refused; missed: older than the catch-up "
            "window) and cause (scheduled, triggered, backfill).",
            ("outcome", "cause"),
        )
        for outcome in FIRING_OUTCOMES.values():
            for cause in FIRING_CAUSES.values():
                firings.add((outcome, cause), stats.firings.get((outcome, cause), 0))
        yield firings
        yield _histogram(
            PREFIX + "schedule_fire_lag_seconds",
            "Seconds from a scheduled tick (its jitter included) to the submit of its job.",
            (),
            [([], stats.lag)],
        )

    def _workers(self, engine: Gauges) -> Iterator[Family]:
        """Stream workers only: the HTTP pusher's worker of a push queue is no worker an
        operator runs, so it has its own series (dispatchd_http_push_targets)."""
        workers = [w for w in engine.local_workers if w.kind == "stream"]
        connected = Family(
            PREFIX + "workers_connected", "gauge", "Open worker streams on this server."
        )
        connected.add((), len(workers))
        yield connected
        credits = Family(
            PREFIX + "worker_credits",
            "gauge",
            "Jobs connected stream workers accept at once (max_in_flight), by whether a job "
            "holds the credit.",
            ("state",),
        )
        held = sum(len(w.leases) for w in workers)
        offered = sum(w.max_in_flight for w in workers)
        credits.add(("held",), held)
        credits.add(("free",), max(0, offered - held))
        yield credits
        rows: dict[str, _WorkerGauges] = {}
        labels = self._observer.labels
        for w in engine.local_workers:
            for queue in w.queues:
                row = rows.setdefault(labels(queue), _WorkerGauges())
                if w.kind == "stream":
                    row.workers += 1
                    row.free += max(0, w.free_credits)
                else:
                    row.push += 1
        names = sorted(rows)
        per_queue: tuple[tuple[str, str, Callable[[_WorkerGauges], int]], ...] = (
            (
                "queue_workers",
                "Stream workers on this server subscribed to the queue (sum over replicas: "
                "the fleet's).",
                lambda r: r.workers,
            ),
            (
                "queue_worker_credits_free",
                "Free credits of the stream workers serving the queue on this server (a "
                "worker of several queues counts for each).",
                lambda r: r.free,
            ),
            (
                "http_push_targets",
                "HTTP push workers of the queue on this server (one per replica that pushes).",
                lambda r: r.push,
            ),
        )
        for name, doc, value in per_queue:
            family = Family(PREFIX + name, "gauge", doc, ("queue",))
            for label in names:
                family.add((label,), value(rows[label]))
            yield family

    @staticmethod
    def _storage_families(engine: Gauges) -> Iterator[Family]:
        stats = engine.storage
        if stats is None:
            return
        if engine.backend == "embedded":
            yield from DispatchdCollector._journal_families(stats)
        elif engine.backend == "redis":
            yield _histogram(
                PREFIX + "redis_call_seconds",
                "Seconds per Redis script call that got an answer, by script.",
                ("script",),
                (([script], hist) for script, hist in sorted(stats.calls.items())),
            )
            errors = Family(
                PREFIX + "redis_call_errors",
                "counter",
                "Redis calls that failed, by script (_commands: plain commands and "
                "pipelines) and kind (unreachable, refused: OOM/READONLY..., script).",
                ("script", "kind"),
            )
            for (script, kind), n in sorted(stats.call_errors.items()):
                errors.add((script, kind), n)
            yield errors

    @staticmethod
    def _journal_families(stats: StorageStats) -> Iterator[Family]:
        yield _histogram(
            PREFIX + "journal_commit_seconds",
            "Seconds per journal group commit (what an acknowledged Submit waits for).",
            (),
            [([], stats.journal_commit)],
        )
        yield _histogram(
            PREFIX + "journal_commit_records",
            "Records (new jobs, status changes, queues, schedules) per journal commit.",
            (),
            [([], stats.journal_batch)],
        )
        failures = Family(
            PREFIX + "journal_commit_failures", "counter", "Journal commits that failed."
        )
        failures.add((), stats.journal_failures)
        yield failures
        if stats.journal_bytes is not None:
            size = Family(
                PREFIX + "journal_size_bytes",
                "gauge",
                "The journal's size on disk (database and WAL).",
            )
            size.add((), stats.journal_bytes())
            yield size
        yield _histogram(
            PREFIX + "snapshot_seconds",
            "Seconds to write the drain's snapshot.",
            (),
            [([], stats.snapshot)],
        )

    def _grpc_families(self) -> Iterator[Family]:
        calls = Family(
            PREFIX + "grpc_requests",
            "counter",
            "gRPC calls handled, by service, method and status code.",
            ("service", "method", "code"),
        )
        for (service, method, code), n in sorted(self._grpc.calls.items()):
            calls.add((service, method, code), n)
        yield calls
        yield _histogram(
            PREFIX + "grpc_request_seconds",
            "Seconds from the start of a gRPC call to its status (streams: their lifetime).",
            ("service", "method"),
            ((list(key), hist) for key, hist in sorted(self._grpc.seconds.items())),
        )
        yield from self._grpc_standard()

    def _grpc_standard(self) -> Iterator[Family]:
        """The same calls under go-grpc-prometheus' (and py-grpc-prometheus') names, which
        the usual gRPC dashboards and alerts query."""
        stats = self._grpc
        types = stats.types
        labels = ("grpc_type", "grpc_service", "grpc_method")
        started = Family(
            "grpc_server_started",
            "counter",
            "Total number of RPCs started on the server.",
            labels,
        )
        for (service, method), n in sorted(stats.started.items()):
            started.add((types.get((service, method), "unary"), service, method), n)
        yield started
        handled = Family(
            "grpc_server_handled",
            "counter",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*labels, "grpc_code"),
        )
        for (service, method, code), n in sorted(stats.calls.items()):
            handled.add((types.get((service, method), "unary"), service, method, code), n)
        yield handled
        yield _histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            labels,
            (
                ([types.get(key, "unary"), *key], hist)
                for key, hist in sorted(stats.seconds.items())
            ),
        )

    def _push_families(self, stats: Mapping[str, TargetStats]) -> Iterator[Family]:
        """HTTP push (dispatchd.push.stats), folded by queue label like the rest."""
        outcomes: dict[str, Counter[str]] = {}
        in_flight: dict[str, int] = {}
        seconds: dict[str, Histogram] = {}
        for queue, target in stats.items():
            label = self._observer.labels(queue)
            outcomes.setdefault(label, Counter()).update(target.outcomes)
            in_flight[label] = in_flight.get(label, 0) + target.in_flight
            hist = seconds.get(label)
            if hist is None:
                hist = seconds[label] = Histogram(target.latency_bounds)
            hist.counts = [a + b for a, b in zip(hist.counts, target.latency_counts, strict=True)]
            hist.sum += target.latency_sum
        names = sorted(outcomes)
        requests = Family(
            PREFIX + "http_push_requests",
            "counter",
            "HTTP push attempts by outcome: 1xx-5xx by response status, timeout, connection "
            "(refused, reset, TLS), invalid (a job header HTTP cannot carry).",
            ("queue", "outcome"),
        )
        for label in names:
            for outcome, n in sorted(outcomes[label].items()):
                requests.add((label, outcome), n)
        yield requests
        flight = Family(
            PREFIX + "http_push_in_flight", "gauge", "HTTP push calls under way.", ("queue",)
        )
        for label in names:
            flight.add((label,), in_flight[label])
        yield flight
        yield _histogram(
            PREFIX + "http_push_seconds",
            "Seconds an HTTP push call took (connect, send, response), per attempt sent.",
            ("queue",),
            (([label], seconds[label]) for label in names),
        )
