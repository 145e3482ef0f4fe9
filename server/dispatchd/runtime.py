"""Start-up, restore, and the drain: the orchestration around engine and servicers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import time
from collections.abc import Callable

import grpc
from opentelemetry.sdk.trace import TracerProvider

from dispatchd import convert
from dispatchd.config import Config
from dispatchd.engine import Engine, EngineError, EngineLimits, EngineObserver, ObserverChain
from dispatchd.engine.addresses import AddressPolicy
from dispatchd.listening import StartError as StartError
from dispatchd.listening import bind, grpc_server, mark_serving, serve_health
from dispatchd.observability import Observability, ObservabilityError
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
from dispatchd.service.journaling import JournalWriter
from dispatchd.service.pump import DispatchPump
from dispatchd.service.sessions import MessageCounts, WorkStream
from dispatchd.service.waiters import Waiters
from dispatchd.store.journal import JournalError, SqliteJournal
from dispatchd.store.snapshot import SnapshotData, SnapshotStore
from dispatchd.web import Dashboard, Hooks, Trends, WebServer

log = logging.getLogger("dispatchd")

GC_YOUNG_THRESHOLD = 10_000


class _IdleWatch(EngineObserver):
    """Wakes the drain when the last underway job releases its slot."""

    def __init__(self, engine_ref: Callable[[], Engine]) -> None:
        self._engine_ref = engine_ref
        self.idle = asyncio.Event()

    def lease_released(self, queue: str) -> None:
        if self._engine_ref().underway_total() == 0:
            self.idle.set()


def engine_limits(config: Config) -> EngineLimits:
    return EngineLimits(
        max_payload_bytes=config.max_payload_bytes,
        max_batch_bytes=config.max_batch_bytes,
        default_width=config.default_width,
        default_lease_seconds=config.default_lease,
        finished_retention_seconds=config.finished_retention,
        max_finished_jobs=config.max_finished_jobs,
        http_addresses=AddressPolicy.of(config.http_allow_cidr),
    )


def push_settings(config: Config) -> PushSettings:
    return PushSettings(
        max_connections=config.http_max_connections,
        ca_bundle=config.http_ca_bundle,
        max_body_bytes=config.max_payload_bytes,
    )


class DispatchdServer:
    """One dispatchd process: engine, gRPC server, health, reflection, snapshot."""

    def __init__(
        self,
        config: Config,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.waiters = Waiters()
        self._idle = _IdleWatch(lambda: self.engine)
        self.observers = ObserverChain([self.waiters, self._idle])
        self.engine = Engine(engine_limits(config), self.observers, rng)
        # Metrics, spans and lifecycle logs watch the engine from outside, as observers.
        self.messages = MessageCounts()
        self.observability = Observability(
            config,
            lambda: self.engine,
            clock,
            tracer_provider,
            lambda: self.pusher.stats,
            lambda: self.messages.counts,
        )
        for observer in self.observability.observers:
            self.observers.add(observer)
        self.pump = DispatchPump(self.engine, clock)
        self.pusher = HttpPusher(self.engine, self.pump, clock, push_settings(config))
        self.observers.add(self.pusher)
        #: The dashboard's sparkline rings; with the dashboard off, no observer and no cost.
        self.trends = Trends(config.dashboard_bucket) if config.http_enabled else None
        if self.trends is not None:
            self.observers.add(self.trends)
        self.store = SnapshotStore(config.data_dir) if config.data_dir else None
        self.journal: JournalWriter | None = None
        self.health = HealthServicer()
        self.port = 0
        self.health_port = 0
        #: Set when --auth-tokens is on; ``auth.stats`` counts refused calls.
        self.auth: AuthInterceptor | None = None
        self._tokens: TokenTable | None = None
        #: The operator dashboard (--http-listen); ``web.port`` is its bound port.
        self.web: WebServer | None = None
        self.stopped = asyncio.Event()
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Restores the snapshot, binds, starts serving; returns the bound port."""
        credentials = self._load_security()  # before the journal opens: fail fast
        self._restore()
        try:
            self.pusher.start()  # first: an unreadable CA bundle leaves nothing running
        except PushConfigError as e:
            raise StartError(str(e)) from None
        try:
            await self.observability.start()
        except ObservabilityError as e:
            raise StartError(str(e)) from None
        servicer = DispatcherServicer(
            self.engine,
            self.pump,
            self.waiters,
            self.clock,
            WorkStream(self.engine, self.pump, self.clock, self.messages),
            self.start_drain,
            self.sync,
        )
        server = grpc_server(
            # The metrics interceptor is outermost, so calls the auth check refuses count too.
            [*self.observability.interceptors, *([self.auth] if self.auth is not None else [])],
            servicer,
            self.health,
            self.config.max_message_bytes,
        )
        try:
            self.port = bind(server, self.config.listen, credentials)
        except StartError:
            await self.observability.stop()
            raise
        if self.config.health_listen is not None:
            self._health_server = grpc.aio.server()
            self.health_port = await serve_health(
                self._health_server, self.health, self.config.health_listen
            )
        await server.start()
        self._server = server
        await self._start_web()
        await mark_serving(self.health)
        # Everything made so far (modules, grpc, restored jobs) lives as long as the
        # process: keep it out of every later full collection, whose pause grows with
        # the number of tracked objects (about 1 us each here).
        gc.freeze()
        # Each job allocates a few dozen container objects and keeps a few, so the default
        # young-generation threshold (700) ran a collection every dozen jobs or so. A larger
        # one runs it a fifteenth as often; the little cyclic garbage a job leaves waits a
        # little longer for it.
        gen0, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(max(gen0, GC_YOUNG_THRESHOLD), gen1, gen2)
        host = self.config.listen.rpartition(":")[0]
        if self.auth is not None and credentials is None and not _loopback(host):
            log.warning("auth tokens without TLS on %s: tokens cross the network in clear", host)
        log.info("dispatchd serving on %s:%d%s", host, self.port, " (TLS)" if credentials else "")
        return self.port

    async def _start_web(self) -> None:
        if not self.config.http_enabled:
            return
        hooks = Hooks(self.pump, self.clock, self.start_drain, self._tokens, self.trends)
        host, _, port = self.config.http_listen.rpartition(":")
        web = WebServer(Dashboard(self.engine, hooks).handle, host, int(port))
        try:
            await web.start()
        except OSError as e:
            await self.stop_now()  # nothing was served yet: no drain, no snapshot
            raise StartError(f"--http-listen {self.config.http_listen}: {e}") from None
        self.web = web
        log.info("dashboard on http://%s:%d/", host, web.port)

    async def _stop_web(self) -> None:
        if self.web is not None:
            await self.web.close()

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

    def _submitter_of(self, job_id: str) -> str | None:
        try:
            job = self.engine.get_job(job_id)
        except EngineError:
            return None
        return job.headers.get(SUBMITTER_HEADER, "")

    def _restore(self) -> None:
        """The journal, when there is one, is the truth; a snapshot next to it is the
        last drain's copy and is moved aside. Without a journal the snapshot is restored
        (and, with journaling on, written into a new journal)."""
        if self.store is None:
            return
        if self.config.journaled:
            assert self.config.data_dir is not None
            journal = SqliteJournal(self.config.data_dir)
            try:
                had_journal = journal.exists()
                journal.open()
                if had_journal and self._restore_journal(journal):
                    if self.store.path.exists():
                        self.store.mark_restored()
                    self._attach_journal(journal)
                    return
                self._restore_snapshot()
                self._seed_journal(journal)
            except JournalError as e:
                raise StartError(str(e)) from None
            self._attach_journal(journal)
            return
        self._restore_snapshot()

    def _restore_journal(self, journal: SqliteJournal) -> bool:
        started = time.monotonic()
        recovered = journal.load(self.config.recover_truncated)
        if not recovered.jobs and not recovered.queues:
            return False
        queues = [(q.name, convert.settings_from_pb(q)) for q in recovered.queues]
        self.engine.restore(queues, [convert.job_from_pb(j) for j in recovered.jobs], self.clock())
        for job_id in recovered.skipped:
            log.warning("--recover-truncated: dropped damaged journal record of job %s", job_id)
        log.info(
            "recovered %d jobs and %d queues from %s in %.2f s",
            len(recovered.jobs),
            len(queues),
            journal.path,
            time.monotonic() - started,
        )
        return True

    def _seed_journal(self, journal: SqliteJournal) -> None:
        """Writes the engine's whole state into a fresh journal (after a snapshot restore)."""
        engine = self.engine
        queues = [
            (v.name, convert.settings_to_pb(v.name, v.settings).SerializeToString())
            for v in engine.list_queues()
        ]
        jobs = [
            (j.id, j.payload, convert.job_to_pb(j, with_payload=False).SerializeToString())
            for j in engine.unfinished_jobs()
        ]
        journal.replace_all(queues, jobs)

    def _attach_journal(self, journal: SqliteJournal) -> None:
        self.journal = JournalWriter(self.engine, journal)
        self.observers.add(self.journal)

    async def sync(self) -> None:
        """Returns once every change so far is durable (a no-op without a journal)."""
        if self.journal is not None:
            await self.journal.sync()

    def _restore_snapshot(self) -> None:
        assert self.store is not None
        data = self.store.load(recover=self.config.recover_truncated)
        if data is None:
            return
        self.engine.restore(data.queues, data.jobs)
        self.store.mark_restored()
        log.info(
            "restored %d jobs and %d queues from %s",
            len(data.jobs),
            len(data.queues),
            self.store.path,
        )

    def start_drain(self, grace: float | None = None) -> bool:
        """Begins the drain once; later calls (a second SIGTERM) are no-ops and say so by
        returning False: the first drain's grace stays in force."""
        if self._drain_task is not None:
            return False
        self._drain_task = asyncio.get_running_loop().create_task(self.drain(grace))
        return True

    async def drain(self, grace: float | None = None) -> None:
        """Stop intake, let underway jobs finish within the grace, take the rest back,
        snapshot what is unfinished, stop serving."""
        grace = self.config.drain_grace if grace is None else grace
        engine = self.engine
        log.info("draining: %d jobs underway, grace %.1f s", engine.underway_total(), grace)
        engine.begin_drain()
        await self.health.enter_graceful_shutdown()
        deadline = self.clock() + grace
        sessions = self.pump.sessions
        for session in sessions:
            session.drain(deadline)
        log.info(
            "drain: intake stopped, health NOT_SERVING, %d workers told to finish", len(sessions)
        )
        if engine.underway_total() > 0:
            self._idle.idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.idle.wait(), grace)
        reclaimed = engine.reclaim_underway()
        if reclaimed:
            log.warning("drain grace ran out: %d underway jobs are pending again", reclaimed)
        else:
            log.info("drain: no job underway")
        await self.pusher.close()  # HTTP calls still running lost their leases just now
        self._snapshot()
        if self.journal is not None:
            await self.journal.close()
        for session in self.pump.sessions:
            session.end(reason="server drained")
        if self._server is not None:
            await self._server.stop(grace=1.0)
        await self._stop_health_server()
        await self._stop_web()
        self.pump.close()
        await self.observability.stop()
        self.stopped.set()
        log.info("drained")

    async def _stop_health_server(self) -> None:
        if self._health_server is not None:
            await self._health_server.stop(grace=None)

    def _snapshot(self) -> None:
        if self.store is None:
            log.warning(
                "no --data-dir: %d unfinished jobs are not kept", len(self.engine.unfinished_jobs())
            )
            return
        queues = [(v.name, v.settings) for v in self.engine.list_queues()]
        jobs = self.engine.unfinished_jobs()
        size = self.store.save(SnapshotData(queues, jobs), self.clock())
        log.info(
            "snapshot of %d jobs, %d queues (%d bytes) in %s",
            len(jobs),
            len(queues),
            size,
            self.store.path,
        )

    async def stop_now(self) -> None:
        """Stops without a drain (tests): streams are cut, no snapshot is written."""
        if self._server is not None:
            await self._server.stop(grace=None)
        await self._stop_health_server()
        await self._stop_web()
        await self.pusher.close()
        if self.journal is not None:
            await self.journal.close()
        self.pump.close()
        await self.observability.stop()
        self.stopped.set()


def _loopback(host: str) -> bool:
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")
