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
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from dispatchd import __version__
from dispatchd.engine import QueueView, WorkerRecord
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
)

if TYPE_CHECKING:
    from dispatchd.push import TargetStats

PREFIX = "dispatchd_"
PushStats = Callable[[], "Mapping[str, TargetStats]"]
#: Work stream messages by (direction, kind); see dispatchd.service.sessions.MessageCounts.
StreamStats = Callable[[], Mapping[tuple[str, str], int]]


class GaugeSource(Protocol):
    """Where the gauges come from at scrape time: the engine itself, or a Gauges read
    from any backend just before the scrape renders."""

    @property
    def draining(self) -> bool: ...

    def list_queues(self) -> Sequence[QueueView]: ...

    def workers(self) -> Sequence[WorkerRecord]: ...


@dataclass(frozen=True, slots=True)
class Gauges:
    """What a backend said about its queues and this server's workers, for one scrape."""

    queues: Sequence[QueueView]
    local_workers: Sequence[WorkerRecord]
    draining: bool

    def list_queues(self) -> Sequence[QueueView]:
        return self.queues

    def workers(self) -> Sequence[WorkerRecord]:
        return self.local_workers


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
    rates: list[float | None] = field(default_factory=list)

    def add(self, view: QueueView) -> None:
        s = view.settings
        self.pending += view.pending_count
        self.scheduled += view.scheduled_count
        self.underway += view.underway_count
        self.width += s.width
        self.paused += int(s.paused)
        self.throttled += int(view.throttled_until is not None)
        self.throttled_keys += view.throttled_key_count
        self.rates.append(None if s.rate is None else s.rate.per_second)

    @property
    def rate(self) -> float | None:
        """Tokens per second, or None when any queue behind the label is unlimited."""
        if not self.rates or any(r is None for r in self.rates):
            return None
        return sum(r for r in self.rates if r is not None)


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
        engine: Callable[[], GaugeSource],
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
        yield from self._grpc_families()
        if self._streams is not None:
            yield self._stream_family(self._streams())
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

    @staticmethod
    def _stream_family(counts: Mapping[tuple[str, str], int]) -> Family:
        family = Family(
            PREFIX + "work_messages",
            "counter",
            "Work stream messages by direction (received from workers, sent to them) and "
            "kind; jobs_dispatched over sent deliveries is the jobs per delivery message.",
            ("direction", "kind"),
        )
        for (direction, kind), n in sorted(counts.items()):
            family.add((direction, kind), n)
        return family

    def _queue_gauges(self, engine: GaugeSource) -> Iterator[Family]:
        rows: dict[str, _QueueGauges] = {}
        labels = self._observer.labels
        for view in engine.list_queues():
            label = labels(view.name)
            row = rows.get(label)
            if row is None:
                row = rows[label] = _QueueGauges()
            row.add(view)
        # Queues the engine forgot (none today) keep their counters; gauges only show
        # queues that exist now.
        names = sorted(rows)
        gauges: tuple[tuple[str, str, Callable[[_QueueGauges], int]], ...] = (
            ("jobs_pending", "Jobs waiting for a worker.", lambda r: r.pending),
            ("jobs_scheduled", "Jobs waiting for their not_before time.", lambda r: r.scheduled),
            ("jobs_underway", "Jobs leased to a worker.", lambda r: r.underway),
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

    def _workers(self, engine: GaugeSource) -> Iterator[Family]:
        workers = engine.workers()
        connected = Family(PREFIX + "workers_connected", "gauge", "Open worker streams.")
        connected.add((), len(workers))
        yield connected
        credits = Family(
            PREFIX + "worker_credits",
            "gauge",
            "Jobs connected workers accept at once (max_in_flight), by whether a job holds "
            "the credit.",
            ("state",),
        )
        held = sum(len(w.leases) for w in workers)
        offered = sum(w.max_in_flight for w in workers)
        credits.add(("held",), held)
        credits.add(("free",), max(0, offered - held))
        yield credits

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
