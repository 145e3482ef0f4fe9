"""One dispatchd process, in phases: config -> backend -> listeners -> serve -> drain.

The backend (embedded or Redis, chosen by --backend; see dispatchd.backend) makes every
dispatch decision; around it this module starts what every backend shares: the gRPC
server with its interceptors (auth, metrics, traces), health and reflection, the HTTP
pusher, /metrics and the dashboard, and it runs the drain.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import grpc
from opentelemetry.sdk.trace import TracerProvider

from dispatchd.backend import Backend, DrainReport
from dispatchd.config import Config
from dispatchd.embedded import EmbeddedBackend, StorageConfig
from dispatchd.engine import Engine, EngineError, EngineLimits, EngineObserver, QueueFigures
from dispatchd.engine.addresses import AddressPolicy
from dispatchd.listening import StartError as StartError
from dispatchd.listening import bind, grpc_server, mark_serving, serve_health
from dispatchd.observability import Observability, ObservabilityError
from dispatchd.observability.collector import Gauges
from dispatchd.push import HttpPusher, PushConfigError, PushSettings
from dispatchd.security import (
    SUBMITTER_HEADER,
    AuthInterceptor,
    SecurityError,
    TokenTable,
    load_tokens,
    server_credentials,
)
from dispatchd.service.dispatcher import DispatcherServicer
from dispatchd.service.health import HealthServicer
from dispatchd.service.work import MessageCounts, WorkStream
from dispatchd.store.journal import SqliteJournal
from dispatchd.web import Dashboard, Hooks, Trends, WebServer
from dispatchd.web.origin import allowed_hosts

log = logging.getLogger("dispatchd")

#: Young-generation threshold of the cyclic collector: a pause grows with it (about 0.4 us
#: per young object here, and most young objects survive: finished jobs, new records), the
#: total does not. 10,000 paused the loop 4-7 ms per young pass and 14-16 ms per middle
#: one; 2,000 pauses 0.7-1.9 and 0.6-4.4 ms for the same collector CPU per job
#: (bench.hotpath, 100,000 jobs, gc.callbacks on thread time).
GC_YOUNG_THRESHOLD = 2_000
#: How long a drain may take beyond its grace (the snapshot, closing the journal) before
#: it is given up, logged as failed: a drain always ends.
DRAIN_OVERRUN_SECONDS = 60.0


def engine_limits(config: Config) -> EngineLimits:
    return EngineLimits(
        max_payload_bytes=config.max_payload_bytes,
        max_batch_bytes=config.max_batch_bytes,
        default_width=config.default_width,
        default_lease_seconds=config.default_lease,
        finished_retention_seconds=config.finished_retention,
        max_finished_jobs=config.max_finished_jobs,
        http_addresses=AddressPolicy.of(config.http_allow_cidr),
        max_queues=config.max_queues,
        max_pending_total=config.max_pending_total,
    )


def push_settings(config: Config) -> PushSettings:
    return PushSettings(
        max_connections=config.http_max_connections,
        ca_bundle=config.http_ca_bundle,
        max_body_bytes=config.max_payload_bytes,
    )


def open_backend(
    config: Config,
    clock: Callable[[], float],
    observers: list[EngineObserver],
    metrics_of: Observability,
    rng: random.Random | None = None,
    open_journal: Callable[[Path], SqliteJournal] = SqliteJournal,
) -> Backend:
    """The one place that knows there are two backends."""
    limits = engine_limits(config)
    if config.backend == "redis":
        from dispatchd.redis import open_redis_backend  # redis-py only when asked for

        return open_redis_backend(config, limits, clock, observers, metrics_of.metrics)
    storage = StorageConfig(
        config.data_dir, config.journaled, config.recover_truncated, open_journal
    )
    return EmbeddedBackend(limits, clock, storage, observers, rng)


class DispatchdServer:
    """One dispatchd process, whichever backend holds its queues."""

    def __init__(
        self,
        config: Config,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        tracer_provider: TracerProvider | None = None,
        open_journal: Callable[[Path], SqliteJournal] = SqliteJournal,
    ) -> None:
        """``open_journal`` makes the embedded backend's journal (tests pass one that
        fails on purpose)."""
        self.config = config
        self.clock = clock
        self.messages = MessageCounts()
        # Metrics, spans and lifecycle logs watch the engine from outside, as observers.
        self.observability = Observability(
            config,
            clock,
            tracer_provider,
            lambda: self.pusher.stats,
            lambda: (self.messages.counts, self.messages.jobs_delivered),
        )
        observers = list(self.observability.observers)
        #: The dashboard's sparkline rings; with the dashboard off, no observer and no cost.
        self.trends = Trends(config.dashboard_bucket) if config.http_enabled else None
        if self.trends is not None:
            observers.append(self.trends)
        self.backend = open_backend(config, clock, observers, self.observability, rng, open_journal)
        self.pusher = HttpPusher(
            self.backend, clock, push_settings(config), self.observability.tracer
        )
        self.health = HealthServicer()
        self.port = 0
        self.health_port = 0
        #: Set when --auth-tokens is on; ``auth.stats`` counts refused calls.
        self.auth: AuthInterceptor | None = None
        self._tokens: TokenTable | None = None
        #: The operator dashboard (--http-listen); ``web.port`` is its bound port.
        self.web: WebServer | None = None
        self.dashboard: Dashboard | None = None
        self.stopped = asyncio.Event()
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._drain_report: asyncio.Future[DrainReport] | None = None
        self._health_tasks: set[asyncio.Task[None]] = set()
        #: Why the drain failed (its snapshot could not be written, ...); the process
        #: then exits non-zero. None: it did not, or there was no drain.
        self.drain_failure: str | None = None

    @property
    def engine(self) -> Engine:
        """The embedded backend's engine (tests of embedded-only behaviour)."""
        if not isinstance(self.backend, EmbeddedBackend):
            raise AttributeError("only the embedded backend has an engine in this process")
        return self.backend.engine

    # ---- start-up -----------------------------------------------------------------

    async def start(self) -> int:
        """Backend, then listeners, then serving; returns the bound gRPC port."""
        credentials = self._load_security()  # before anything opens: fail fast
        c = self.config
        if c.backend == "redis" and c.data_dir is not None:
            log.info("--data-dir is not used with --backend redis: Redis holds every job")
        await self.backend.start()
        try:
            await self._start_listeners(credentials)
            self._write_port_file()
        except BaseException:
            await self.stop_now()  # nothing was served yet: no drain, no snapshot
            raise
        self.backend.health.listen(self._backend_health)
        await mark_serving(self.health, self.backend.health.trouble is None)
        self._tune_gc()
        host = c.listen.rpartition(":")[0]
        if self.auth is not None and credentials is None and not _loopback(host):
            log.warning("auth tokens without TLS on %s: tokens cross the network in clear", host)
        log.info(
            "dispatchd serving on %s:%d%s (%s backend)",
            host,
            self.port,
            " (TLS)" if credentials else "",
            self.backend.capabilities.name,
        )
        return self.port

    async def _start_listeners(self, credentials: grpc.ServerCredentials | None) -> None:
        try:
            await self.pusher.start()
        except PushConfigError as e:
            raise StartError(str(e)) from None
        try:
            await self.observability.start(self._gauges)
        except ObservabilityError as e:
            raise StartError(str(e)) from None
        servicer = DispatcherServicer(
            self.backend,
            self.clock,
            WorkStream(self.backend, self.messages),
            self.start_drain,
            self.observability.metrics.submit_refused if self.observability.metrics else None,
        )
        server = grpc_server(
            # The metrics interceptor is outermost, so calls the auth check refuses count too.
            [*self.observability.interceptors, *([self.auth] if self.auth is not None else [])],
            servicer,
            self.health,
            self.config.max_message_bytes,
            self.config.keepalive_time,
        )
        self.port = bind(server, self.config.listen, credentials)
        if self.config.health_listen is not None:
            self._health_server = grpc.aio.server()
            self.health_port = await serve_health(
                self._health_server, self.health, self.config.health_listen
            )
        await server.start()
        self._server = server
        await self._start_web()

    def _backend_health(self, trouble: str | None) -> None:
        """Readiness follows the backend: NOT_SERVING while it cannot take changes (the
        journal cannot commit, Redis is away), SERVING again once it can. A drain's
        NOT_SERVING stays (the health servicer ignores changes once it began)."""
        if self._drain_task is not None:
            return
        if trouble is None:
            log.info("health SERVING again: the backend takes changes")
        else:
            log.warning("health NOT_SERVING: %s", trouble)
        task = asyncio.get_running_loop().create_task(mark_serving(self.health, trouble is None))
        self._health_tasks.add(task)
        task.add_done_callback(self._health_tasks.discard)

    def ports(self) -> dict[str, int]:
        """The bound ports (0 where a listener is off)."""
        return {
            "grpc": self.port,
            "metrics": self.observability.metrics_port,
            "dashboard": self.web.port if self.web is not None else 0,
            "health": self.health_port,
        }

    def _write_port_file(self) -> None:
        path = self.config.port_file
        if path is None:
            return
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.ports()) + "\n")
            os.replace(tmp, path)
        except OSError as e:
            raise StartError(f"--port-file {path}: {e}") from None

    async def _gauges(self) -> Gauges:
        """What one scrape of /metrics shows of the queues and this server's workers."""
        backend = self.backend
        queues: list[QueueFigures] = []
        try:
            if backend.reports_queues:
                queues = await backend.queue_figures()
        except EngineError as e:  # Redis away: the other families still render
            log.warning("metrics: cannot read the queues (%s)", e)
        return Gauges(
            queues,
            backend.local_workers(),
            backend.draining,
            now=self.clock(),
            storage=backend.storage_stats,
            backend=backend.capabilities.name,
            healthy=backend.health.trouble is None,
        )

    @staticmethod
    def _tune_gc() -> None:
        # Everything made so far (modules, grpc, restored jobs) lives as long as the
        # process: keep it out of every later full collection, whose pause grows with
        # the number of tracked objects (about 1 us each here).
        gc.freeze()
        # Each job allocates a few dozen container objects and keeps a few, so the default
        # young-generation threshold (700) ran a collection every dozen jobs or so. A larger
        # one runs it less often, but each pause is longer, and a pause is what the dispatch
        # latency's p99 sees: GC_YOUNG_THRESHOLD is the compromise.
        gen0, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(max(gen0, GC_YOUNG_THRESHOLD), gen1, gen2)

    async def _start_web(self) -> None:
        if not self.config.http_enabled:
            return
        hosts = allowed_hosts(self.config.dashboard_allowed_hosts.split(","))
        hooks = Hooks(self.clock, self.start_drain, self._tokens, self.trends, hosts)
        host, _, port = self.config.http_listen.rpartition(":")
        dashboard = Dashboard(self.backend, hooks)
        web = WebServer(dashboard.handle, host, int(port))
        try:
            await web.start()
        except OSError as e:
            raise StartError(f"--http-listen {self.config.http_listen}: {e}") from None
        self.web = web
        await dashboard.start()
        self.dashboard = dashboard
        log.info("dashboard on http://%s:%d/", host, web.port)

    def _load_security(self) -> grpc.ServerCredentials | None:
        """Reads the token and TLS files the config names; returns TLS credentials or None."""
        c = self.config
        try:
            if c.auth_tokens is not None:
                tokens = load_tokens(c.auth_tokens)
                self._tokens = tokens
                self.auth = AuthInterceptor(tokens, self._submitter_of)
                log.info("auth on: %d tokens from %s", len(tokens), c.auth_tokens)
            if c.tls_cert is None or c.tls_key is None:
                return None
            return server_credentials(c.tls_cert, c.tls_key, c.tls_client_ca)
        except SecurityError as e:
            raise StartError(str(e)) from None

    async def _submitter_of(self, job_id: str) -> str | None:
        """Who submitted a job, for the auth check of submitters touching their own jobs."""
        try:
            job = await self.backend.get_job(job_id)
        except EngineError:
            return None  # no such job (or the backend is away): the RPC itself answers
        return job.headers.get(SUBMITTER_HEADER, "")

    # ---- drain --------------------------------------------------------------------

    async def start_drain(self, grace: float | None = None) -> DrainReport | None:
        """Begins the drain once and returns the counts as it began; later calls (a second
        SIGTERM, a second Drain RPC) return None: the first drain's grace stays in force."""
        if self._drain_task is not None:
            return None
        loop = asyncio.get_running_loop()
        began: asyncio.Future[DrainReport] = loop.create_future()
        self._drain_task = loop.create_task(self._drain(grace, began))
        return await asyncio.shield(began)

    def request_drain(self) -> None:
        """For signal handlers: starts the drain with the configured grace."""
        if self._drain_task is None:
            asyncio.get_running_loop().create_task(self.start_drain(None))

    async def drain(self, grace: float | None = None) -> None:
        """Drains and returns once the server stopped."""
        await self.start_drain(grace)
        await self.stopped.wait()

    async def _drain(self, grace: float | None, began: asyncio.Future[DrainReport]) -> None:
        """Stop intake, let underway jobs finish within the grace, take the rest back,
        keep what is unfinished, stop serving."""
        grace = self.config.drain_grace if grace is None else grace
        try:
            await self.health.enter_graceful_shutdown()
            report = await self.backend.begin_drain(grace)
            log.info("draining: %d jobs underway, grace %.1f s", report.underway, grace)
            log.info(
                "drain: intake stopped, health NOT_SERVING, %d workers told to finish",
                len(self.backend.local_workers()),
            )
            began.set_result(report)
            await asyncio.wait_for(self.backend.finish_drain(), grace + DRAIN_OVERRUN_SECONDS)
        except Exception as e:  # noqa: BLE001 - a drain always ends: logged, and the exit says so
            self.drain_failure = str(e) or type(e).__name__
            log.error("drain failed: %s", self.drain_failure)
        finally:
            if not began.done():
                began.set_result(DrainReport(0, 0))
            try:
                await self.pusher.close()  # HTTP calls still running lost their leases now
            finally:
                await self._stop_serving(grace=1.0)
                log.info("drained" if self.drain_failure is None else "drain ended, failed")

    async def stop_now(self) -> None:
        """Stops without a drain (tests, a failed start): streams are cut, leases handed
        back where the backend can, no snapshot is written."""
        await self._stop_serving(grace=None)
        await self.pusher.close()
        await self.backend.close()

    async def _stop_serving(self, grace: float | None) -> None:
        if self._server is not None:
            await self._server.stop(grace=grace)
        if self._health_server is not None:
            await self._health_server.stop(grace=None)
        if self.web is not None:
            await self.web.close()
        if self.dashboard is not None:
            await self.dashboard.close()
        await self.observability.stop()
        self.stopped.set()


def with_backend(config: Config, backend: str, redis_url: str = "") -> Config:
    """``config`` served by another backend (tests, benches)."""
    data_dir = config.data_dir if backend == "embedded" else None
    return replace(config, backend=backend, redis_url=redis_url, data_dir=data_dir)


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")
