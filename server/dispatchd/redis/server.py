"""One dispatchd replica on the Redis backend: start-up, serving, drain. No snapshot and
no journal: Redis holds every job, so a drain only finishes or hands back what this
replica's workers hold."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc
from opentelemetry.sdk.trace import TracerProvider

from dispatchd.config import Config
from dispatchd.engine import EngineError
from dispatchd.listening import StartError, bind, grpc_server, mark_serving, serve_health
from dispatchd.observability import Observability, ObservabilityError
from dispatchd.redis import connect
from dispatchd.redis.accounting import Accounting
from dispatchd.redis.errors import RedisBackendError
from dispatchd.redis.leasing import RedisLeasing
from dispatchd.redis.mirror import RedisMirror
from dispatchd.redis.replica import Replica
from dispatchd.redis.servicer import RedisDispatcherServicer
from dispatchd.redis.stream import RedisWorkStream
from dispatchd.runtime import engine_limits
from dispatchd.security import (
    SUBMITTER_HEADER,
    AuthInterceptor,
    SecurityError,
    load_tokens,
    server_credentials,
)
from dispatchd.service.health import HealthServicer

log = logging.getLogger("dispatchd")


def reap_interval(config: Config) -> float:
    """A quarter of the default lease (each pass also waits no longer than the next
    lease deadline it saw), so a dead replica's leases come back soon after they end."""
    return max(0.05, min(5.0, config.default_lease / 4))


class RedisDispatchdServer:
    """The same start/drain surface as runtime.DispatchdServer."""

    def __init__(
        self,
        config: Config,
        clock: Callable[[], float] = time.time,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.limits = engine_limits(config)
        try:
            client = connect.client(config.redis_url)
        except RedisBackendError as e:
            raise StartError(str(e)) from None
        self.backend = RedisLeasing(client, self.limits, config.finished_retention)
        self.observability = Observability(config, lambda: self.mirror, clock, tracer_provider)
        metrics = self.observability.metrics
        accounting = Accounting(metrics.of if metrics is not None else None)
        self.replica = Replica(self.backend, clock, reap_interval(config), accounting)
        self.mirror = RedisMirror(self.limits, self.replica)
        if config.metrics_enabled:
            self.replica.after_reap = self.mirror.refresh
        self.health = HealthServicer()
        self.port = 0
        self.health_port = 0
        #: Set when --auth-tokens is on.
        self.auth: AuthInterceptor | None = None
        self.stopped = asyncio.Event()
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        c = self.config
        if c.http_enabled:
            log.warning("the dashboard (--http-listen) is not served with --backend redis")
        if c.data_dir is not None:
            log.info("--data-dir is not used with --backend redis: Redis holds every job")
        try:
            if c.auth_tokens is not None:
                tokens = load_tokens(c.auth_tokens)
                self.auth = AuthInterceptor(tokens, self._submitter_of)
                log.info("auth on: %d tokens from %s", len(tokens), c.auth_tokens)
            credentials = (
                server_credentials(c.tls_cert, c.tls_key, c.tls_client_ca)
                if c.tls_cert is not None and c.tls_key is not None
                else None
            )
            await self.backend.ping()
        except SecurityError as e:
            raise StartError(str(e)) from None
        except EngineError as e:
            raise StartError(f"--redis-url: {e}") from None
        try:
            await self.observability.start()
        except ObservabilityError as e:
            raise StartError(str(e)) from None
        work = RedisWorkStream(self.replica, self.clock, c.default_lease)
        servicer = RedisDispatcherServicer(self.replica, self.clock, work, self.start_drain)
        server = grpc_server(
            # The metrics interceptor is outermost, so calls the auth check refuses count too.
            [*self.observability.interceptors, *([self.auth] if self.auth is not None else [])],
            servicer,
            self.health,
            c.max_message_bytes,
        )
        try:
            self.port = bind(server, c.listen, credentials)
        except StartError:
            await self.observability.stop()
            raise
        await self._start_health_server()
        self.replica.start()
        await server.start()
        self._server = server
        await mark_serving(self.health)
        host = c.listen.rpartition(":")[0]
        log.info(
            "dispatchd serving on %s:%d%s (redis backend, replica %s)",
            host,
            self.port,
            " (TLS)" if credentials else "",
            self.replica.replica_id,
        )
        return self.port

    async def _start_health_server(self) -> None:
        """--health-listen: a plaintext, health-only port for probes (as embedded)."""
        address = self.config.health_listen
        if address is None:
            return
        self._health_server = grpc.aio.server()
        try:
            self.health_port = await serve_health(self._health_server, self.health, address)
        except StartError:
            await self.observability.stop()
            raise

    async def _submitter_of(self, job_id: str) -> str | None:
        """Who submitted a job, for the auth check of submitters touching their own jobs."""
        try:
            job = await self.backend.get_job(job_id)
        except EngineError:
            return None  # no such job (or Redis down): the RPC itself answers
        return job.record.headers.get(SUBMITTER_HEADER, "")

    def start_drain(self, grace: float | None = None) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self.drain(grace))

    async def drain(self, grace: float | None = None) -> None:
        """Stop intake, let this replica's underway jobs finish within the grace, hand the
        rest back to Redis (pending again), stop serving. No snapshot: nothing is local."""
        grace = self.config.drain_grace if grace is None else grace
        log.info("draining: %d jobs underway here, grace %.1f s", self.replica.underway(), grace)
        await self.health.enter_graceful_shutdown()
        self.replica.begin_drain(self.clock() + grace)
        left = await self.replica.finish_drain(grace)
        if left:
            log.warning("drain grace ran out: %d underway jobs are pending again", left)
        else:
            log.info("drain: no job underway")
        await self._close()
        log.info("drained")

    async def stop_now(self) -> None:
        """Stops without a drain (tests): streams are cut; their leases are handed back."""
        await self._close()

    async def _close(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=1.0)
        if self._health_server is not None:
            await self._health_server.stop(grace=None)
        for worker in list(self.replica.workers.values()):  # before the client closes
            await self.replica.disconnect(worker)
        await self.replica.stop()
        await self.observability.stop()
        await self.backend.close()
        self.stopped.set()
