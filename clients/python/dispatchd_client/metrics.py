"""Opt-in Prometheus metrics of a Worker, with ``prometheus_client``
(``pip install 'dispatchd-client[metrics]'``)::

    from prometheus_client import start_http_server
    from dispatchd_client import Worker
    from dispatchd_client.metrics import WorkerMetrics

    start_http_server(9100)
    worker = Worker("dispatchd:50051", metrics=WorkerMetrics())

Families (docs/observability.md lists them with the server's):

- ``dispatchd_worker_jobs_total{queue,outcome}``: jobs this process ran, by outcome
  (succeeded, retryable: failed and asked for a retry, permanent: failed for good,
  cancelled).
- ``dispatchd_worker_job_seconds{queue}``: seconds each handler ran (hooks included).
- ``dispatchd_worker_jobs_running{queue}``: handlers running now.
- ``dispatchd_worker_reconnects_total``: Work streams that ended other than by a drain or a
  stop, so the Worker connected again.
- ``dispatchd_worker_connected``: 1 while the Worker has a welcomed stream.

One WorkerMetrics registers its families once in ``registry`` (prometheus_client's default
one unless given); several Workers of one process may share it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

#: Seconds. Handlers take from milliseconds to an hour.
JOB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        try:
            from prometheus_client import REGISTRY, Counter, Gauge, Histogram
        except ImportError:
            raise ImportError(
                "WorkerMetrics needs prometheus_client: pip install 'dispatchd-client[metrics]'"
            ) from None
        reg = REGISTRY if registry is None else registry
        self.jobs = Counter(
            "dispatchd_worker_jobs",
            "Jobs this worker process ran, by queue and outcome (succeeded, retryable, "
            "permanent, cancelled).",
            ["queue", "outcome"],
            registry=reg,
        )
        self.job_seconds = Histogram(
            "dispatchd_worker_job_seconds",
            "Seconds each job's handler ran, hooks included.",
            ["queue"],
            buckets=JOB_BUCKETS,
            registry=reg,
        )
        self.running = Gauge(
            "dispatchd_worker_jobs_running", "Handlers running now.", ["queue"], registry=reg
        )
        self.reconnects = Counter(
            "dispatchd_worker_reconnects",
            "Work streams that ended without a drain or stop, so the worker connected again.",
            registry=reg,
        )
        self.connected = Gauge(
            "dispatchd_worker_connected",
            "1 while the worker has a stream the server welcomed.",
            registry=reg,
        )

    def started(self, queue: str) -> float:
        self.running.labels(queue).inc()
        return time.perf_counter()

    def finished(self, queue: str, start: float, outcome: str) -> None:
        """``outcome``: succeeded, retryable, permanent or cancelled."""
        self.running.labels(queue).dec()
        self.job_seconds.labels(queue).observe(time.perf_counter() - start)
        self.jobs.labels(queue, outcome).inc()
