"""Builds the observability of one server from its config: which observers watch the
engine, which interceptor wraps the gRPC server, and the /metrics endpoint.

Everything that is off costs nothing: with ``--metrics-listen 0`` there is no metrics
observer and no call timing; without a tracer provider, no spans and no span bookkeeping.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.registry import CollectorRegistry

from dispatchd import __version__
from dispatchd.config import Config
from dispatchd.engine import EngineObserver
from dispatchd.observability.collector import (
    DispatchdCollector,
    Gauges,
    PushStats,
    StreamStats,
)
from dispatchd.observability.errors import ObservabilityError
from dispatchd.observability.http import MetricsServer
from dispatchd.observability.interceptor import ObservingInterceptor
from dispatchd.observability.logs import LifecycleLog, StateLog
from dispatchd.observability.metrics import GrpcStats, MetricsObserver, QueueLabels
from dispatchd.observability.tracing import TRACER_NAME, DispatchSpans

log = logging.getLogger("dispatchd")


class Observability:
    """Metrics, tracing and lifecycle logs of one DispatchdServer."""

    def __init__(
        self,
        config: Config,
        clock: Callable[[], float],
        tracer_provider: TracerProvider | None = None,
        push_stats: PushStats | None = None,
        stream_stats: StreamStats | None = None,
    ) -> None:
        self._config = config
        self.observers: list[EngineObserver] = [LifecycleLog()]
        if logging.getLogger("dispatchd").isEnabledFor(logging.DEBUG):
            self.observers.append(StateLog())
        self.registry: CollectorRegistry | None = None
        self.metrics: MetricsObserver | None = None
        self._server: MetricsServer | None = None
        grpc_stats = None
        self._render: Callable[[], bytes] | None = None
        self._gauges: Callable[[], Awaitable[Gauges]] | None = None
        self._latest: Gauges = Gauges((), (), False)
        if config.metrics_enabled:
            grpc_stats = GrpcStats()
            self.metrics = MetricsObserver(QueueLabels(config.metrics_max_queues), clock)
            self.observers.append(self.metrics)
            collector = DispatchdCollector(
                lambda: self._latest, self.metrics, grpc_stats, push_stats, stream_stats
            )
            # /metrics renders our families itself (fast) and the small process, GC and
            # platform ones with prometheus_client; ``registry`` holds all of them.
            runtime = CollectorRegistry(auto_describe=False)
            self.registry = CollectorRegistry(auto_describe=False)
            self.registry.register(collector)
            for extra in (
                ProcessCollector(registry=runtime),
                PlatformCollector(registry=runtime),
                GCCollector(registry=runtime),
            ):
                self.registry.register(extra)
            self._render = lambda: collector.render().encode() + generate_latest(runtime)
        tracer = None
        #: The server's tracer when tracing is on (the HTTP pusher's call spans use it).
        self.tracer: trace.Tracer | None = None
        if tracer_provider is not None:
            tracer = self.tracer = tracer_provider.get_tracer(TRACER_NAME, __version__)
            self.observers.append(DispatchSpans(tracer, clock))
        self.interceptors: list[grpc.aio.ServerInterceptor[Any, Any]] = []
        if grpc_stats is not None or tracer is not None:
            self.interceptors.append(ObservingInterceptor(grpc_stats, tracer))

    @property
    def metrics_port(self) -> int:
        """The bound /metrics port, 0 while not serving."""
        return self._server.port if self._server is not None else 0

    async def _page(self) -> bytes:
        assert self._render is not None
        assert self._gauges is not None
        self._latest = await self._gauges()
        return self._render()

    def _scrape_token(self) -> bytes | None:
        path = self._config.metrics_token_file
        if path is None:
            return None
        try:
            token = path.read_bytes().strip()
        except OSError as e:
            raise ObservabilityError(f"--metrics-token-file {path}: {e.strerror}") from None
        if not token or any(b <= 0x20 or b >= 0x7F for b in token):
            raise ObservabilityError(
                f"--metrics-token-file {path}: the token must be one line of printable ASCII"
            )
        return token

    async def start(self, gauges: Callable[[], Awaitable[Gauges]]) -> None:
        """Starts the /metrics endpoint (when metrics are on); each scrape first reads
        the queue and worker gauges with ``gauges()``."""
        if self._render is None:
            return
        self._gauges = gauges
        host, _, port = self._config.metrics_listen.rpartition(":")
        server = MetricsServer(self._page, host, int(port), self._scrape_token())
        try:
            await server.start()
        except OSError as e:
            raise ObservabilityError(
                f"cannot serve metrics on {self._config.metrics_listen}: {e}; "
                "pick another --metrics-listen or 0 to turn metrics off"
            ) from None
        self._server = server
        log.info("metrics on http://%s:%d/metrics", host, server.port)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None
