"""The worker: register handlers per queue, then ``worker.run()``.

::

    worker = Worker("dispatchd:50051", concurrency=4)

    @worker.handler("thumbnails")
    def make_thumbnail(job: ReceivedJob) -> bytes:
        return render(job.payload)

    worker.run()  # until SIGTERM/SIGINT or a server drain

The worker keeps one ``Work`` stream open and reconnects with jittered exponential backoff when
it breaks; jobs held on a broken stream are forgotten, since the server re-queues them when the
stream dies. Stopping is always graceful first: take no more jobs, finish the held ones, send
their results, close the stream. A second SIGINT/SIGTERM (or ``stop(force=True)``) abandons
whatever is still running.

The stream protocol lives in :mod:`dispatchd_client._session` and the handler/hook rules in
:mod:`dispatchd_client._runner`; this module owns the lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

import grpc

from dispatchd_client import _requests as rq
from dispatchd_client._channel import TLS, ChannelSpec
from dispatchd_client._runner import (
    AfterJobHook,
    BeforeJobHook,
    Handler,
    Hooks,
    JobRunner,
    StartStopHook,
    call_hooks,
)
from dispatchd_client._session import Session
from dispatchd_client._tracing import RunSpans
from dispatchd_client.errors import from_rpc_error, status_code_of
from dispatchd_client.v1 import dispatcher_pb2 as pb

if TYPE_CHECKING:  # OpenTelemetry is the optional `otel` extra, prometheus_client `metrics`
    from opentelemetry.trace import TracerProvider

    from dispatchd_client.metrics import WorkerMetrics

__all__ = ["Worker"]

logger = logging.getLogger("dispatchd_client.worker")

HandlerT = TypeVar("HandlerT", bound=Handler)
StartStopHookT = TypeVar("StartStopHookT", bound=StartStopHook)
BeforeJobHookT = TypeVar("BeforeJobHookT", bound=BeforeJobHook)
AfterJobHookT = TypeVar("AfterJobHookT", bound=AfterJobHook)

#: Answers that mean "this worker is refused": raised from run. Anything else ends the
#: stream as broken and reconnects - after a server crash grpc.aio may report INTERNAL
#: ("Internal error from Core", grpc/grpc#36066) rather than UNAVAILABLE.
REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
#: First reconnect delay; doubles per failed attempt up to ``reconnect_max_backoff``.
RECONNECT_BASE_DELAY = 0.1
MAX_CONCURRENCY = 10_000
#: Longest result_window: past it, held results would look like a stuck worker.
MAX_RESULT_WINDOW = 1.0


class Worker:
    """Serves jobs from the queues it has handlers for.

    ``concurrency`` is the most jobs held at once (announced to the server as max_in_flight,
    and the size of the thread pool for sync handlers). ``worker_id`` and ``labels`` are for
    people reading server logs and metrics; an empty id lets the server make one up.

    Each job runs in an OpenTelemetry ``run`` span whose parent is the trace context the
    producer's client put in the job's headers. Spans go to ``tracer_provider``, or to the
    global provider the application set before calling ``run``; with neither, no span is
    made.

    ``token`` and ``tls`` mean what they mean for :class:`~dispatchd_client.Client` (a worker
    token needs the ``work`` role).

    ``keepalive`` (seconds, at least 1) is how long the stream may stay quiet before the
    Worker pings the server; without an answer within ``keepalive_timeout`` it gives the
    connection up and reconnects, so a connection that died without a word (a partition,
    a lost NAT entry) is noticed in about their sum.

    Results go back coalesced: those of jobs finishing in the same event-loop tick travel
    in one WorkResults message, and so do those finishing while the previous message is
    being written. ``result_window`` (seconds, default 0) holds each message that much
    longer to gather more results: fewer messages for the server to read, at the cost of
    that much latency per result (and of slots freed that much later). Heartbeats always
    cover every held lease in one message.
    """

    def __init__(
        self,
        target: str = rq.DEFAULT_TARGET,
        *,
        worker_id: str = "",
        concurrency: int = 8,
        labels: Mapping[str, str] | None = None,
        reconnect_max_backoff: float = 5.0,
        tracer_provider: TracerProvider | None = None,
        token: str | None = None,
        tls: TLS | bool | None = None,
        result_window: float = 0.0,
        keepalive: float = rq.KEEPALIVE_TIME,
        keepalive_timeout: float = rq.KEEPALIVE_TIMEOUT,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        """``metrics``: this worker's Prometheus families (dispatchd_client.metrics),
        opt-in; None: none are kept."""
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency must be 1-{MAX_CONCURRENCY}")
        if not 0 <= result_window <= MAX_RESULT_WINDOW:
            raise ValueError(f"result_window must be 0-{MAX_RESULT_WINDOW:g} seconds")
        self._result_window = result_window
        if reconnect_max_backoff <= 0:
            raise ValueError("reconnect_max_backoff must be > 0")
        if keepalive < 1 or keepalive_timeout <= 0:
            raise ValueError("keepalive must be >= 1 s (the server refuses more frequent pings)")
        self._target = target
        self._max_backoff = reconnect_max_backoff
        keep = rq.keepalive_options(keepalive, keepalive_timeout)
        options = (*self._reconnect_options(), *keep)
        self._spec = ChannelSpec.of(target, tls=tls, token=token, extra_options=options)
        self._requested_id = worker_id
        self._worker_id = worker_id
        self._concurrency = concurrency
        self._labels = dict(labels or {})
        self._tracer_provider = tracer_provider
        self._metrics = metrics
        self._handlers: dict[str, Handler] = {}
        self._hooks = Hooks()
        self._running = False
        self._stop_requested = False
        # Events for the current (or next) run; replaced after each run so a Worker can run
        # again on another event loop.
        self._connected = asyncio.Event()
        self._finished = asyncio.Event()
        self._stop = asyncio.Event()
        self._force = asyncio.Event()

    # Registration ------------------------------------------------------------------------

    def handler(self, queue: str) -> Callable[[HandlerT], HandlerT]:
        """Decorator registering the handler of ``queue`` (one handler per queue)."""
        if not queue:
            raise ValueError("queue name must not be empty")

        def register(fn: HandlerT) -> HandlerT:
            if queue in self._handlers:
                raise ValueError(f"queue {queue!r} already has a handler")
            if self._running:
                raise RuntimeError("cannot add handlers while the worker runs")
            self._handlers[queue] = fn
            return fn

        return register

    def on_start(self, fn: StartStopHookT) -> StartStopHookT:
        """Decorator: call ``fn()`` once when a run starts, before connecting."""
        self._hooks.on_start.append(fn)
        return fn

    def on_stop(self, fn: StartStopHookT) -> StartStopHookT:
        """Decorator: call ``fn()`` once when a run ends, however it ends."""
        self._hooks.on_stop.append(fn)
        return fn

    def before_job(self, fn: BeforeJobHookT) -> BeforeJobHookT:
        """Decorator: call ``fn(job)`` on the loop before each handler runs."""
        self._hooks.before_job.append(fn)
        return fn

    def after_job(self, fn: AfterJobHookT) -> AfterJobHookT:
        """Decorator: call ``fn(job, outcome)`` after each job; ``outcome`` is the output bytes
        or the :class:`~dispatchd_client.JobError` about to be reported."""
        self._hooks.after_job.append(fn)
        return fn

    # State -------------------------------------------------------------------------------

    @property
    def queues(self) -> list[str]:
        """The queues this worker serves, sorted."""
        return sorted(self._handlers)

    @property
    def worker_id(self) -> str:
        """The id the server knows this worker by (from the latest welcome)."""
        return self._worker_id

    @property
    def connected(self) -> bool:
        """True while a stream is open and welcomed."""
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait until the server has welcomed this worker.

        Raises TimeoutError after ``timeout`` seconds, and RuntimeError if the run ends first
        (so a test fails fast instead of waiting out its timeout).
        """
        connected, finished = self._connected, self._finished
        waiters = [asyncio.create_task(connected.wait()), asyncio.create_task(finished.wait())]
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        if connected.is_set():
            return
        if not done:
            raise TimeoutError(f"worker not connected after {timeout} s")
        raise RuntimeError("worker stopped before connecting")

    # Stopping ----------------------------------------------------------------------------

    async def stop(self, *, force: bool = False) -> None:
        """Ask the running worker to stop and return at once (await the ``run_async`` task to
        know when it is done). Graceful: no new jobs, held jobs finish and report. ``force``,
        or a second stop, abandons held jobs instead. Calling it before ``run_async`` makes the
        next run return as soon as it starts."""
        self._request_stop(force=force)

    def _request_stop(self, *, force: bool = False) -> None:
        if force or self._stop_requested:
            self._force.set()
        self._stop_requested = True
        self._stop.set()

    def _on_signal(self, signame: str) -> None:
        logger.info(
            "%s received: %s",
            signame,
            "forcing stop" if self._stop_requested else "stopping gracefully (send again to force)",
        )
        self._request_stop()

    # Running -----------------------------------------------------------------------------

    def run(self) -> None:
        """Run until stopped by SIGTERM/SIGINT or a server drain; blocks the calling thread.

        The loop is uvloop's when uvloop is installed (``pip install dispatchd[fast]``), as
        for the server: less CPU per message than asyncio's own loop."""
        main = self.run_async(install_signal_handlers=True)
        try:
            import uvloop
        except ImportError:
            asyncio.run(main)
        else:
            uvloop.run(main)

    async def run_async(self, *, install_signal_handlers: bool = False) -> None:
        """Serve jobs on the running loop until stopped or drained.

        Raises a :class:`~dispatchd_client.DispatchdError` when the server refuses the worker
        (e.g. INVALID_ARGUMENT for a bad queue name); UNAVAILABLE only triggers a reconnect.
        """
        if not self._handlers:
            raise RuntimeError("register at least one handler before running the worker")
        if self._running:
            raise RuntimeError("worker is already running")
        self._running = True
        loop = asyncio.get_running_loop()
        signals = self._install_signal_handlers(loop) if install_signal_handlers else []
        executor = ThreadPoolExecutor(self._concurrency, thread_name_prefix="dispatchd-job")
        spans = RunSpans.resolve(self._tracer_provider)
        runner = JobRunner(dict(self._handlers), self._hooks, executor, spans, self._metrics)
        try:
            await call_hooks(self._hooks.on_start, what="on_start")
            async with self._spec.aio_channel() as ch:
                await self._serve(rq.new_stub(ch), runner)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            executor.shutdown(wait=False, cancel_futures=True)
            await call_hooks(self._hooks.on_stop, what="on_stop")
            self._end_run()

    def _reconnect_options(self) -> tuple[tuple[str, int], ...]:
        """gRPC's own reconnect backoff starts at 1 s and grows to 120 s: a worker would sit
        idle long after a restarted server is back. Keep it within our own backoff."""
        top = max(100, int(self._max_backoff * 1000))
        return (
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", top),
        )

    async def _serve(self, stub: object, runner: JobRunner) -> None:
        """Open streams until one ends by a drain or a stop is requested."""
        slots = asyncio.Semaphore(self._concurrency)
        hello = pb.WorkerHello(
            worker_id=self._requested_id,
            queues=self.queues,
            max_in_flight=self._concurrency,
            labels=self._labels,
        )
        attempt = 0
        while not self._stop.is_set():
            session = Session(
                stub,
                hello,
                runner,
                slots=slots,
                stop=self._stop,
                force=self._force,
                on_welcome=self._welcomed,
                result_window=self._result_window,
            )
            try:
                if await session.run():
                    logger.info("worker %s drained; exiting", self._worker_id)
                    return
                logger.info("stream ended by the server without a drain; reconnecting")
            except grpc.RpcError as e:
                code = status_code_of(e)
                if code in REFUSALS:
                    raise from_rpc_error(e) from e
                logger.log(
                    logging.INFO if code == grpc.StatusCode.UNAVAILABLE else logging.WARNING,
                    "stream broke (%s: %s); reconnecting",
                    code.name if code is not None else "UNKNOWN",
                    e.details(),
                )
            finally:
                self._connected.clear()
                if self._metrics is not None:
                    self._metrics.connected.set(0)
            if self._metrics is not None and not self._stop.is_set():
                self._metrics.reconnects.inc()
            if session.welcomed:
                attempt = 0
            delay = rq.backoff_delay(attempt, base=RECONNECT_BASE_DELAY, cap=self._max_backoff)
            attempt += 1
            await self._sleep_unless_stopped(delay)

    def _welcomed(self, welcome: pb.WorkerWelcome) -> None:
        self._worker_id = welcome.worker_id or self._worker_id
        logger.info(
            "connected to %s as %s, serving %s",
            self._target,
            self._worker_id,
            ", ".join(self.queues),
        )
        if self._metrics is not None:
            self._metrics.connected.set(1)
        self._connected.set()

    async def _sleep_unless_stopped(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> list[signal.Signals]:
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig.name)
            except (NotImplementedError, RuntimeError, ValueError) as e:
                # Not the main thread, or a platform without loop signal support.
                logger.debug("cannot handle %s: %s", sig.name, e)
            else:
                installed.append(sig)
        return installed

    def _end_run(self) -> None:
        """Wake anyone waiting on this run, then reset for a possible next run."""
        self._finished.set()
        self._running = False
        self._stop_requested = False
        self._connected = asyncio.Event()
        self._finished = asyncio.Event()
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
