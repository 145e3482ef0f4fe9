"""Delivers the jobs of queues that have an HTTP target, through the backend's own rules.

Each such queue gets a worker the server connects itself (``http:<queue>``), through the
same backend interface a Work stream uses, so width, rate, ordering and fairness keys,
retries and leases apply exactly as to a worker stream, on every backend: the backend
hands its leases to a TargetBinding (the worker's outbox), which makes one HTTP call per
lease and reports the outcome as a result. While calls run, their leases are extended
like a worker's heartbeats. On a shared backend every replica binds each target, and
each job is still called once: the replica whose worker claimed it calls it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry import trace

from dispatchd.backend import Backend, WorkerSpec, WorkResult
from dispatchd.engine import EngineError, HttpTarget, LeaseRecord, WorkerRecord
from dispatchd.engine.errors import NotFound
from dispatchd.engine.limits import capped_failure
from dispatchd.push.errors import InvalidJobHeader
from dispatchd.push.outcomes import INVALID, CallResult
from dispatchd.push.requests import PushRequest, build_request
from dispatchd.push.spans import end_call_span, start_call_span
from dispatchd.push.stats import TargetStats
from dispatchd.push.transport import ClientPool, ssl_context

log = logging.getLogger("dispatchd.push")

WORKER_PREFIX = "http:"
#: Longest pause between heartbeats of a target's calls.
MAX_HEARTBEAT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class PushSettings:
    max_connections: int = 100
    """Per target: the connection pool's bound and the most calls in flight at once."""
    ca_bundle: Path | None = None
    """PEM file of CAs that TLS certificates are checked against; None: certifi's."""
    max_body_bytes: int = 1 << 20
    """Cap on the response body kept as a job's result."""


@dataclass(eq=False)
class TargetBinding:
    """One queue's target: its worker, its current target and its connections. It is the
    worker's outbox: the backend delivers its leases here."""

    queue: str
    target: HttpTarget
    pool: ClientPool
    pusher: HttpPusher
    worker: WorkerRecord | None = None
    retiring: bool = False
    """The target was cleared: no new calls; detached once the last call ends."""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def deliver(self, leases: Sequence[LeaseRecord]) -> None:
        loop = asyncio.get_running_loop()
        for lease in leases:
            task = loop.create_task(self.pusher.call(self, lease))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def cancel(self, job_ids: list[str]) -> None:
        """A call already sent cannot be taken back; it ends and answers as usual."""

    def drain(self, deadline: float) -> None:
        """Calls under way finish; the backend sends no more."""

    def settings(self, heartbeat_interval: float) -> None:
        """The pusher heartbeats on its own, more often than any lease needs."""

    def close(self, reason: str) -> None:
        """The calls still running are stopped by HttpPusher.close()."""


class HttpPusher:
    """Keeps one TargetBinding per queue with an http_target, following the queues'
    settings as the backend reports their changes."""

    def __init__(
        self,
        backend: Backend,
        clock: Callable[[], float],
        settings: PushSettings,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._backend = backend
        self._tracer = tracer
        """Each call gets a CLIENT span when set (tracing on)."""
        self._clock = clock
        self.settings = settings
        self.bindings: dict[str, TargetBinding] = {}
        self.stats: dict[str, TargetStats] = {}
        """Queue name -> counts since start: the metrics seam (see stats.py)."""
        self._dirty: set[str] = set()
        self._unsettled: set[str] = set()
        """Queues heard to have changed whose binding is not brought up to date yet."""
        self._reconciling: asyncio.Task[None] | None = None
        self._ssl: ssl.SSLContext | None = None
        self._heartbeats: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Loads the CA bundle (PushConfigError when unreadable) and binds every queue
        that already has a target (restored from the journal, or in Redis)."""
        self._ssl = ssl_context(self.settings.ca_bundle)
        self._backend.on_queue_changed(self.queue_changed)
        for view in await self._backend.list_queues():
            if view.settings.http_target is not None:
                self._dirty.add(view.name)
        await self._reconcile()
        self._heartbeats = asyncio.get_running_loop().create_task(self._heartbeat_loop())

    # ---- following queue settings -------------------------------------------------

    def queue_changed(self, name: str) -> None:
        if self._closed:
            return
        self._dirty.add(name)
        self._unsettled.add(name)
        if self._reconciling is None:
            self._reconciling = asyncio.get_running_loop().create_task(self._reconcile_soon())

    async def _reconcile_soon(self) -> None:
        try:
            await self._reconcile()
        finally:
            self._reconciling = None

    async def _reconcile(self) -> None:
        while self._dirty and not self._closed:
            dirty, self._dirty = self._dirty, set()
            for name in sorted(dirty):
                try:
                    try:
                        target = (await self._backend.get_queue(name)).settings.http_target
                    except NotFound:  # deleted (DeleteQueue): nothing to call any more
                        target = None
                    await self._follow(name, target)
                except EngineError as e:
                    log.warning("queue %s: cannot follow its HTTP target (%s)", name, e)
                finally:
                    if name not in self._dirty:  # changed again meanwhile: not settled yet
                        self._unsettled.discard(name)

    async def _settled(self, queue: str) -> None:
        """Returns once a change heard for ``queue`` is followed: a job claimed just after
        UpdateQueue returned goes to the target it set, not the one before."""
        while queue in self._unsettled and self._reconciling is not None:
            try:
                await asyncio.shield(self._reconciling)
            except Exception:  # noqa: BLE001 - its failure is the reconciler's to log
                return

    async def _follow(self, name: str, target: HttpTarget | None) -> None:
        binding = self.bindings.get(name)
        if target is not None and binding is None:
            await self._bind(name, target)
        elif target is not None and binding is not None:
            binding.target = target  # calls under way finish with the old one
            if binding.retiring and binding.worker is not None:
                binding.retiring = False
                await self._backend.set_credit(binding.worker, self.settings.max_connections)
        elif binding is not None and not binding.retiring and binding.worker is not None:
            binding.retiring = True
            await self._backend.set_credit(binding.worker, 0)
            if not binding.worker.leases:
                await self._unbind(binding)

    async def _bind(self, name: str, target: HttpTarget) -> None:
        if self._closed or self._backend.draining:
            return
        assert self._ssl is not None
        pool = ClientPool(
            self.settings.max_connections, self._ssl, self._backend.limits.http_addresses
        )
        binding = TargetBinding(name, target, pool, self)
        self.bindings[name] = binding
        self.stats.setdefault(name, TargetStats())
        spec = WorkerSpec(
            WORKER_PREFIX + name,
            [name],
            self.settings.max_connections,
            {"kind": "http"},
            kind="http",
        )
        try:
            binding.worker = await self._backend.connect(spec, binding)
        except EngineError as e:
            del self.bindings[name]
            await binding.pool.aclose()
            log.error("cannot serve the HTTP target of queue %s: %s", name, e)
            return
        log.info("queue %s: delivering to %s %s", name, target.method, target.url)

    async def _unbind(self, binding: TargetBinding) -> None:
        if self.bindings.get(binding.queue) is binding:
            del self.bindings[binding.queue]
        if binding.worker is not None:
            await self._backend.disconnect(binding.worker)
        await binding.pool.aclose()
        log.info("queue %s: HTTP target cleared", binding.queue)

    # ---- calls ----------------------------------------------------------------------

    async def call(self, binding: TargetBinding, lease: LeaseRecord) -> None:
        """One attempt: build, send, classify, answer. Cancelled only by close()."""
        job = lease.job
        await self._settled(binding.queue)
        target = binding.target
        stats = self.stats[binding.queue]
        stats.in_flight += 1
        try:
            result = await self._attempt(binding, lease, target)
        finally:
            stats.in_flight -= 1
        latency = result.latency if result.kind != INVALID else None
        answer = WorkResult(job.id, lease.lease_id, result.outcome, result.status, latency)
        worker = binding.worker
        assert worker is not None  # a lease came through the worker's outbox
        try:
            rejected = await self._backend.results(worker, [answer])
        except EngineError as e:
            log.warning("queue %s: result of job %s not recorded: %s", binding.queue, job.id, e)
            rejected = []
        stats.record(result.kind, latency, result.truncated, bool(rejected))
        for rejection in rejected:
            log.warning(
                "queue %s: result of job %s dropped: %s", binding.queue, job.id, rejection.reason
            )
        if binding.retiring and not worker.leases and binding.queue in self.bindings:
            await self._unbind(binding)

    async def _attempt(
        self, binding: TargetBinding, lease: LeaseRecord, target: HttpTarget
    ) -> CallResult:
        try:
            request = build_request(target, lease.job, self._clock())
        except InvalidJobHeader as e:
            return CallResult(capped_failure(str(e), False, "InvalidHeader"), 0, 0.0, INVALID)
        if self._tracer is None:
            return await self._send(binding, lease, target, request)
        span = start_call_span(self._tracer, lease.job, request)
        try:
            result = await self._send(binding, lease, target, request)
        except BaseException:
            span.end()  # cancelled by close()
            raise
        end_call_span(span, result)
        return result

    async def _send(
        self, binding: TargetBinding, lease: LeaseRecord, target: HttpTarget, request: PushRequest
    ) -> CallResult:
        try:
            return await binding.pool.send(
                target, request, self.settings.max_body_bytes, self._clock
            )
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # A bug here must not hold the lease until it expires: the attempt fails
            # (retryable) and the traceback is logged.
            log.exception("queue %s: push of job %s failed", binding.queue, lease.job.id)
            failure = capped_failure(f"internal error: {e!r}", True, "InternalError")
            return CallResult(failure, 0, 0.0, INVALID)

    # ---- leases of calls that take long ----------------------------------------------

    def _heartbeat_interval(self) -> float:
        """At most 1 s, and well inside every bound queue's lease: a lease never ends
        under a call that is still running, even right after lease_duration shrinks."""
        intervals = [
            self._backend.heartbeat_interval(b.worker)
            for b in self.bindings.values()
            if b.worker is not None
        ]
        return min([MAX_HEARTBEAT_SECONDS, *intervals])

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_interval())
            for binding in list(self.bindings.values()):
                worker = binding.worker
                if worker is not None and worker.leases:
                    try:
                        await self._backend.heartbeat(worker, ())
                    except EngineError as e:
                        log.warning("queue %s: heartbeat failed (%s)", binding.queue, e)

    # ---- shutting down -------------------------------------------------------------------

    async def close(self) -> None:
        """Stops every call still running (after a drain, their leases were taken back)
        and closes the HTTP clients."""
        self._closed = True
        tasks = [t for b in self.bindings.values() for t in b.tasks]
        for extra in (self._heartbeats, self._reconciling):
            if extra is not None:
                tasks.append(extra)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for binding in self.bindings.values():
            await binding.pool.aclose()
