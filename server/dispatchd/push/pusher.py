"""Delivers the jobs of queues that have an HTTP target, through the engine's own rules.

Each such queue gets a worker the server connects itself (``http:<queue>``, a plain
WorkerRecord subscribed to that queue only), so width, rate, ordering and fairness keys,
retries and leases apply exactly as to a worker stream: the pump hands its leases to a
TargetBinding, which makes one HTTP call per lease and reports the outcome with
Engine.complete. While calls run, their leases are extended like a worker's heartbeats.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dispatchd.engine import (
    Engine,
    EngineError,
    EngineObserver,
    HttpTarget,
    LeaseRecord,
    QueueSettings,
    WorkerRecord,
)
from dispatchd.engine.limits import capped_failure
from dispatchd.push.errors import InvalidJobHeader
from dispatchd.push.outcomes import INVALID, CallResult
from dispatchd.push.requests import build_request
from dispatchd.push.stats import TargetStats
from dispatchd.push.transport import ClientPool, ssl_context
from dispatchd.service.pump import DispatchPump

log = logging.getLogger("dispatchd.push")

WORKER_PREFIX = "http:"


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
    """One queue's target: its worker record, its current target and its connections."""

    queue: str
    worker: WorkerRecord
    target: HttpTarget
    pool: ClientPool
    pusher: HttpPusher
    retiring: bool = False
    """The target was cleared: no new calls; detached once the last call ends."""
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def deliver(self, leases: list[LeaseRecord]) -> None:
        for lease in leases:
            task = asyncio.get_running_loop().create_task(self.pusher.call(self, lease))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)


class HttpPusher(EngineObserver):
    """Keeps one TargetBinding per queue with an http_target. An engine observer only to
    notice target changes: it reacts on the next loop iteration, never inside the
    engine's call."""

    def __init__(
        self,
        engine: Engine,
        pump: DispatchPump,
        clock: Callable[[], float],
        settings: PushSettings,
    ) -> None:
        self._engine = engine
        self._pump = pump
        self._clock = clock
        self.settings = settings
        self.bindings: dict[str, TargetBinding] = {}
        self.stats: dict[str, TargetStats] = {}
        """Queue name -> counts since start: the metrics seam (see stats.py)."""
        self._dirty: set[str] = set()
        self._reconcile_due = False
        self._closing: set[asyncio.Task[None]] = set()
        self._ssl: ssl.SSLContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heartbeats: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        """Loads the CA bundle (PushConfigError when unreadable) and binds every queue
        that already has a target (restored from the journal or snapshot)."""
        self._ssl = ssl_context(self.settings.ca_bundle)
        self._loop = asyncio.get_running_loop()
        self._dirty.update(v.name for v in self._engine.list_queues() if v.settings.http_target)
        self._reconcile()
        self._heartbeats = self._loop.create_task(self._heartbeat_loop())

    # ---- following queue settings -------------------------------------------------

    def queue_changed(self, name: str, settings: QueueSettings) -> None:
        if settings.http_target is None and name not in self.bindings:
            return
        self._dirty.add(name)
        if self._loop is not None and not self._closed and not self._reconcile_due:
            self._reconcile_due = True
            self._loop.call_soon(self._reconcile)

    def _reconcile(self) -> None:
        self._reconcile_due = False
        dirty, self._dirty = self._dirty, set()
        for name in sorted(dirty):
            target = self._engine.get_queue(name).settings.http_target
            binding = self.bindings.get(name)
            if target is not None and binding is None:
                self._bind(name, target)
            elif target is not None and binding is not None:
                binding.target = target  # calls under way finish with the old one
                if binding.retiring:
                    binding.retiring = False
                    self._engine.set_credit(binding.worker, self.settings.max_connections)
            elif binding is not None and not binding.retiring:
                binding.retiring = True
                self._engine.set_credit(binding.worker, 0)
                if not binding.worker.leases:
                    self._unbind(binding)
        self._pump.kick()

    def _bind(self, name: str, target: HttpTarget) -> None:
        if self._closed or self._engine.draining:
            return
        assert self._ssl is not None
        try:
            worker = self._engine.connect(
                WORKER_PREFIX + name,
                [name],
                self.settings.max_connections,
                self._clock(),
                {"kind": "http"},
            )
        except EngineError as e:
            log.error("cannot serve the HTTP target of queue %s: %s", name, e)
            return
        pool = ClientPool(
            self.settings.max_connections, self._ssl, self._engine.limits.http_addresses
        )
        binding = TargetBinding(name, worker, target, pool, self)
        self.bindings[name] = binding
        self.stats.setdefault(name, TargetStats())
        self._pump.register_sink(worker.key, binding)
        log.info("queue %s: delivering to %s %s", name, target.method, target.url)

    def _unbind(self, binding: TargetBinding) -> None:
        del self.bindings[binding.queue]
        self._pump.unregister_sink(binding.worker.key)
        self._engine.disconnect(binding.worker, self._clock())
        if self._loop is not None:
            task = self._loop.create_task(binding.pool.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        log.info("queue %s: HTTP target cleared", binding.queue)

    # ---- calls ----------------------------------------------------------------------

    async def call(self, binding: TargetBinding, lease: LeaseRecord) -> None:
        """One attempt: build, send, classify, complete. Cancelled only by close()."""
        job = lease.job
        target = binding.target
        stats = self.stats[binding.queue]
        stats.in_flight += 1
        try:
            result = await self._attempt(binding, lease, target)
        finally:
            stats.in_flight -= 1
        rejection = self._engine.complete(
            binding.worker,
            job.id,
            lease.lease_id,
            result.outcome,
            self._clock(),
            http_status=result.status,
            latency=result.latency if result.kind != INVALID else None,
        )
        stats.record(
            result.kind,
            result.latency if result.kind != INVALID else None,
            result.truncated,
            rejection is not None,
        )
        if rejection is not None:
            log.warning(
                "queue %s: result of job %s dropped: %s", binding.queue, job.id, rejection.reason
            )
        if binding.retiring and not binding.worker.leases and binding.queue in self.bindings:
            self._unbind(binding)
        self._pump.kick()

    async def _attempt(
        self, binding: TargetBinding, lease: LeaseRecord, target: HttpTarget
    ) -> CallResult:
        try:
            request = build_request(target, lease.job, self._clock())
        except InvalidJobHeader as e:
            return CallResult(capped_failure(str(e), False, "InvalidHeader"), 0, 0.0, INVALID)
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
        """A third of the shortest lease among bound queues, at most 1 s: a lease never
        ends under a call that is still running, even right after lease_duration shrinks."""
        leases = [self._engine.get_queue(name).settings.lease_seconds for name in self.bindings]
        return max(0.1, min([1.0, *(s / 3 for s in leases)]))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_interval())
            now = self._clock()
            for binding in list(self.bindings.values()):
                if binding.worker.leases:
                    self._engine.heartbeat(binding.worker, (), now)

    # ---- shutting down -------------------------------------------------------------------

    async def close(self) -> None:
        """Stops every call still running (after a drain, their leases were taken back)
        and closes the HTTP clients."""
        self._closed = True
        tasks = [t for b in self.bindings.values() for t in b.tasks]
        if self._heartbeats is not None:
            tasks.append(self._heartbeats)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for binding in self.bindings.values():
            await binding.pool.aclose()
        await asyncio.gather(*self._closing, return_exceptions=True)
