"""One ``Work`` stream, from hello to its end.

A :class:`Session` speaks the worker half of the protocol in ``dispatcher.proto``: hello and
welcome, deliveries in, results out, heartbeats while holding leases, cancellations, rejections
and the drain. It knows nothing about reconnecting: when the stream breaks it forgets the jobs
it held (the server re-queues them when the stream dies) and reports how it ended, and the
:class:`~dispatchd_client.Worker` decides what to do next.

Writes are serialized through one lock because a gRPC stream accepts one write at a time, and
no write is ever cancelled while the stream should live on: grpc.aio cancels the whole call
when a pending write is cancelled.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
from google.protobuf import duration_pb2

from dispatchd_client._runner import CANCELLED_ERROR, JobRunner, Outcome
from dispatchd_client.errors import Internal
from dispatchd_client.types import ReceivedJob, Throttle
from dispatchd_client.v1 import dispatcher_pb2 as pb

if TYPE_CHECKING:
    WorkCall = grpc.aio.StreamStreamCall[pb.WorkRequest, pb.WorkResponse]

logger = logging.getLogger("dispatchd_client.worker")

#: Used when the welcome names no heartbeat interval.
DEFAULT_HEARTBEAT_INTERVAL = 10.0
#: After a drain, how long to wait for the server to end the stream before cutting it.
CLOSE_TIMEOUT = 5.0
#: On a broken stream, how long to let cancelled job tasks unwind before moving on.
ABANDON_TIMEOUT = 1.0


#: Seconds between two progress messages of one session (the server keeps one report per
#: job per 200 ms: a little more, so the latest report of a job always lands).
PROGRESS_EVERY = 0.25


class HeartbeatSchedule:
    """When the next heartbeat is due, on the loop's clock. The interval comes from the
    welcome and from WorkerSettings when the server changes it (a served queue got another
    lease): a shorter interval applies at once, counted from the last beat, since the leases
    it protects may already be shorter; a longer one after the next beat."""

    __slots__ = ("_gap", "interval", "last")

    def __init__(self, interval: float, now: float) -> None:
        self.interval = interval
        self.last = now
        self._gap = interval

    @property
    def due(self) -> float:
        return self.last + self._gap

    def beat(self, now: float) -> None:
        self.last = now
        self._gap = self.interval

    def change(self, interval: float) -> bool:
        """Takes a new interval; True when the pending beat moved earlier."""
        self.interval = interval
        if interval < self._gap:
            self._gap = interval
            return True
        return False


def split_results(results: list[pb.JobResult], max_result_bytes: int) -> list[list[pb.JobResult]]:
    """``results`` in consecutive parts of at most ``max_result_bytes`` serialized bytes each
    (a larger result goes alone), in order. The server reads messages of at most its payload
    cap plus headroom: results finishing together may add up to more, and one message over
    it ends the stream. 0 (an old server said nothing) sends one part."""
    if max_result_bytes <= 0 or len(results) == 1:
        return [results]
    parts: list[list[pb.JobResult]] = [[]]
    size = 0
    for result in results:
        n = result.ByteSize()
        if parts[-1] and size + n > max_result_bytes:
            parts.append([])
            size = 0
        parts[-1].append(result)
        size += n
    return parts


class _Held:
    """A job this session holds the lease of."""

    __slots__ = ("abandoned", "job", "task")

    def __init__(self, job: ReceivedJob) -> None:
        self.job = job
        self.task: asyncio.Task[None] | None = None
        #: Set when this session gives the job up; its result must not be sent.
        self.abandoned = False


class Session:
    """Runs one Work stream. Use once: ``ended_by_drain = await Session(...).run()``."""

    def __init__(
        self,
        stub: object,
        hello: pb.WorkerHello,
        runner: JobRunner,
        *,
        slots: asyncio.Semaphore,
        stop: asyncio.Event,
        force: asyncio.Event,
        on_welcome: Callable[[pb.WorkerWelcome], None],
        result_window: float = 0.0,
    ) -> None:
        self._stub = stub
        self._result_window = result_window
        self._hello = hello
        self._runner = runner
        self._slots = slots
        self._stop = stop
        self._force = force
        self._on_welcome = on_welcome
        self._held: dict[str, _Held] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._pending: list[pb.JobResult] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._drain_notice: pb.DrainNotice | None = None
        self._drain_requested = asyncio.Event()
        self._heartbeat_stop = asyncio.Event()
        self._heartbeat_moved = asyncio.Event()
        self._heartbeat_interval = DEFAULT_HEARTBEAT_INTERVAL
        self._schedule: HeartbeatSchedule | None = None
        self._max_result_bytes = 0
        self._closed = False
        self._call: WorkCall | None = None
        #: True once the server welcomed this session (the Worker resets its backoff then).
        self.welcomed = False
        # Progress reports (ReceivedJob.report_progress): the latest per job, sent at most
        # every PROGRESS_EVERY seconds, so the server's per-job limit never drops the last.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._progress: dict[str, pb.ProgressReport] = {}
        self._progress_task: asyncio.Task[None] | None = None

    async def run(self) -> bool:
        """Run the stream to its end.

        Returns True when it ended by a drain (server notice or local stop: the worker should
        exit), False when the server ended it without one (reconnect). Raises
        ``grpc.RpcError`` when the stream failed.
        """
        call: WorkCall = getattr(self._stub, "Work")()  # noqa: B009 - untyped generated stub
        self._call = call
        self._loop = asyncio.get_running_loop()
        reader: asyncio.Task[None] | None = None
        heartbeat: asyncio.Task[None] | None = None
        try:
            await self._write(pb.WorkRequest(hello=self._hello))
            if not await self._handshake(call):
                return False
            reader = asyncio.create_task(self._read_loop(call), name="dispatchd-work-reader")
            heartbeat = asyncio.create_task(self._heartbeat_loop(), name="dispatchd-heartbeat")
            if await self._wait_for_end(reader):
                await self._drain(call, reader, heartbeat)
                return True
            reader.result()  # raises the stream's error, if it failed
            return False
        finally:
            await self._close(call, reader, heartbeat)

    async def _handshake(self, call: WorkCall) -> bool:
        msg = await call.read()
        if not isinstance(msg, pb.WorkResponse):
            return False  # EOF: the server hung up before welcoming us
        kind = msg.WhichOneof("kind")
        if kind != "welcome":
            raise Internal(grpc.StatusCode.INTERNAL, f"expected a welcome first, got {kind}")
        welcome = msg.welcome
        self._heartbeat_interval = _interval(welcome.heartbeat_interval)
        self._max_result_bytes = welcome.max_result_bytes
        self.welcomed = True
        self._on_welcome(welcome)
        return True

    async def _wait_for_end(self, reader: asyncio.Task[None]) -> bool:
        """Wait until the stream ends (False) or a drain is asked for (True)."""
        waiters = [
            asyncio.create_task(self._stop.wait()),
            asyncio.create_task(self._drain_requested.wait()),
        ]
        try:
            await asyncio.wait([reader, *waiters], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return self._stop.is_set() or self._drain_requested.is_set()

    async def _read_loop(self, call: WorkCall) -> None:
        while True:
            msg = await call.read()
            if not isinstance(msg, pb.WorkResponse):
                return  # EOF
            kind = msg.WhichOneof("kind")
            if kind == "deliveries":
                sink = self._report_progress
                for delivery in msg.deliveries.deliveries:
                    self._start(ReceivedJob.from_delivery(delivery, sink))
            elif kind == "cancellations":
                for job_id in msg.cancellations.job_ids:
                    self._cancel(job_id)
            elif kind == "drain":
                self._drain_notice = msg.drain
                self._drain_requested.set()
            elif kind == "settings":
                self._apply_settings(msg.settings)
            elif kind == "rejections":
                for r in msg.rejections.rejections:
                    logger.warning(
                        "server rejected the result of job %s (lease %s): %s",
                        r.job_id,
                        r.lease_id,
                        r.reason,
                    )
            else:
                logger.debug("ignoring unexpected %s message", kind)

    def _apply_settings(self, settings: pb.WorkerSettings) -> None:
        """The server changed what it asks of this worker: heartbeat at the new interval."""
        if not settings.HasField("heartbeat_interval"):
            return
        interval = _interval(settings.heartbeat_interval)
        logger.info("server asks for a heartbeat every %.3g s from now on", interval)
        self._heartbeat_interval = interval
        if self._schedule is not None and self._schedule.change(interval):
            self._heartbeat_moved.set()

    def _start(self, job: ReceivedJob) -> None:
        old = self._held.get(job.id)
        if old is not None:
            # Same job, new lease: the old lease expired and the server re-dispatched the job
            # here. The old run's result would be rejected as stale, so drop it.
            logger.warning("job %s redelivered with a new lease; dropping the old run", job.id)
            self._abandon(old)
        held = _Held(job)
        self._held[job.id] = held
        self._idle.clear()
        if len(self._held) > self._hello.max_in_flight:
            # The server should never exceed our credit; the slots semaphore makes the extra
            # job wait for a free slot (its lease is still heartbeated meanwhile).
            logger.warning(
                "holding %d jobs with max_in_flight %d; job %s waits for a free slot",
                len(self._held),
                self._hello.max_in_flight,
                job.id,
            )
        held.task = asyncio.create_task(self._run_job(held), name=f"dispatchd-job-{job.id}")

    def _cancel(self, job_id: str) -> None:
        held = self._held.get(job_id)
        if held is None:
            logger.debug("cancellation for job %s, which this worker no longer holds", job_id)
            return
        logger.info("job %s cancelled by the server", job_id)
        held.job.cancelled.set()
        if held.task is not None and self._runner.cancels_as_task(held.job.queue):
            held.task.cancel()

    def _abandon(self, held: _Held) -> None:
        held.abandoned = True
        held.job.cancelled.set()
        if held.task is not None:
            held.task.cancel()
        if self._held.get(held.job.id) is held:
            del self._held[held.job.id]
            if not self._held:
                self._idle.set()

    async def _run_job(self, held: _Held) -> None:
        outcome: Outcome
        try:
            async with self._slots:  # the server honours credits; this guards anyway
                outcome = await self._runner.execute(held.job, self._max_result_bytes)
        except asyncio.CancelledError:
            if held.abandoned or not held.job.is_cancelled:
                raise
            # Cancelled by the server: swallow our own cancellation and still answer, or the
            # server keeps the slot busy until the lease expires.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            outcome = CANCELLED_ERROR
            await self._runner.after_job(held.job, outcome)
        self._complete(held, outcome)

    def _complete(self, held: _Held, outcome: Outcome) -> None:
        if self._held.get(held.job.id) is held:
            del self._held[held.job.id]
            if not self._held:
                self._idle.set()
        if held.abandoned or self._closed:
            return
        result = pb.JobResult(job_id=held.job.id, lease_id=held.job.lease_id)
        if isinstance(outcome, bytes):
            result.output = outcome
        elif isinstance(outcome, Throttle):
            result.throttled.CopyFrom(outcome.throttle_proto())
        else:
            result.error.CopyFrom(outcome.to_proto())
        self._pending.append(result)
        # Results finishing in the same loop tick (or within the result window) share one
        # message: the flush task's first step runs only after every callback already
        # scheduled for this tick, and results finishing while a write is under way go
        # together in the next one.
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self._flush(), name="dispatchd-flush")

    async def _flush(self) -> None:
        if self._result_window > 0:
            await asyncio.sleep(self._result_window)
        while self._pending:
            batch, self._pending = self._pending, []
            for part in split_results(batch, self._max_result_bytes):
                request = pb.WorkRequest(results=pb.WorkResults(results=part))
                if not await self._try_write(request):
                    logger.info("could not send %d results: the stream is closed", len(batch))
                    return

    def _report_progress(self, job_id: str, lease_id: str, percent: int | None, msg: str) -> None:
        """From any thread (sync handlers run in threads): queued on the session's loop."""
        if self._loop is not None and not self._closed:
            self._loop.call_soon_threadsafe(self._queue_progress, job_id, lease_id, percent, msg)

    def _queue_progress(self, job_id: str, lease_id: str, percent: int | None, msg: str) -> None:
        report = pb.ProgressReport(job_id=job_id, lease_id=lease_id, message=msg)
        if percent is not None:
            report.percent = percent
        self._progress[job_id] = report
        if self._progress_task is None or self._progress_task.done():
            self._progress_task = asyncio.create_task(
                self._send_progress(), name="dispatchd-progress"
            )

    async def _send_progress(self) -> None:
        while self._progress and not self._closed:
            reports, self._progress = list(self._progress.values()), {}
            request = pb.WorkRequest(progress=pb.WorkerProgress(reports=reports))
            if not await self._try_write(request):
                return
            await asyncio.sleep(PROGRESS_EVERY)

    async def _heartbeat_loop(self) -> None:
        """Extend every held lease once per interval while holding any."""
        loop = asyncio.get_running_loop()
        schedule = self._schedule = HeartbeatSchedule(self._heartbeat_interval, loop.time())
        while True:
            self._heartbeat_moved.clear()
            stop = asyncio.create_task(self._heartbeat_stop.wait())
            moved = asyncio.create_task(self._heartbeat_moved.wait())
            try:
                await asyncio.wait(
                    [stop, moved],
                    timeout=max(0.0, schedule.due - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                stop.cancel()
                moved.cancel()
            if self._heartbeat_stop.is_set():
                return
            if loop.time() < schedule.due:
                continue  # the schedule moved: wait for its new due time
            schedule.beat(loop.time())
            # A finished job whose result waits out the result window is still leased: keep
            # it alive too, or a window longer than the lease would cost the job its lease.
            if (self._held or self._pending) and not await self._try_write(
                pb.WorkRequest(heartbeat=pb.WorkerHeartbeat())
            ):
                return

    async def _drain(
        self, call: WorkCall, reader: asyncio.Task[None], heartbeat: asyncio.Task[None]
    ) -> None:
        """Stop taking jobs, finish the held ones, send their results, close our side."""
        why = "server drain notice" if self._drain_notice is not None else "stop requested"
        logger.info("draining (%s); %d jobs held", why, len(self._held))
        await self._try_write(pb.WorkRequest(credit=pb.WorkerCredit(max_in_flight=0)))
        if not await self._wait_idle(reader, self._drain_timeout()):
            logger.warning("drain: giving up on %d unfinished jobs", len(self._held))
            for held in list(self._held.values()):
                self._abandon(held)
        if self._flush_task is not None:
            await self._flush_task
        self._heartbeat_stop.set()
        await heartbeat
        if not reader.done():
            try:
                async with self._write_lock:
                    await call.done_writing()
            except (grpc.RpcError, asyncio.InvalidStateError) as e:
                logger.debug("done_writing failed: %s", e)
            # Let the server end the stream so the results just sent are not cut off.
            await asyncio.wait([reader], timeout=CLOSE_TIMEOUT)
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            logger.info("stream ended with an error during drain: %s", reader.exception())

    def _drain_timeout(self) -> float | None:
        """Seconds until the server's drain deadline, or None (no deadline: a local stop)."""
        if self._drain_notice is None or not self._drain_notice.HasField("deadline"):
            return None
        deadline = self._drain_notice.deadline.ToDatetime(tzinfo=datetime.UTC)
        return max(0.0, (deadline - datetime.datetime.now(datetime.UTC)).total_seconds())

    async def _wait_idle(self, reader: asyncio.Task[None], limit: float | None) -> bool:
        """Wait until no job is held; give up early if forced or the stream ends."""
        waiters = [asyncio.create_task(self._idle.wait()), asyncio.create_task(self._force.wait())]
        try:
            await asyncio.wait(
                [reader, *waiters], timeout=limit, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        return self._idle.is_set()

    async def _write(self, request: pb.WorkRequest) -> None:
        if self._call is None:
            raise RuntimeError("Session.run() has not started the stream")
        async with self._write_lock:
            try:
                await self._call.write(request)
            except grpc.aio.AioRpcError:
                # A write that races the server ending the stream (e.g. refusing a bad token
                # at once) fails with a bare INTERNAL "execute_batch" error; the stream's own
                # status says why. Reading a finished call raises exactly that status.
                if self._call.done():
                    await self._call.read()
                raise

    async def _try_write(self, request: pb.WorkRequest) -> bool:
        """Write, or return False if the stream is gone (the reader reports why)."""
        try:
            await self._write(request)
        except (grpc.RpcError, asyncio.InvalidStateError) as e:
            logger.debug("write of %s failed: %s", request.WhichOneof("kind"), e)
            return False
        return True

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between heartbeats, as the server last asked."""
        return self._heartbeat_interval

    async def _close(
        self,
        call: WorkCall,
        reader: asyncio.Task[None] | None,
        heartbeat: asyncio.Task[None] | None,
    ) -> None:
        """Forget held jobs, stop helper tasks and cut the call. Runs however the stream ended."""
        self._closed = True
        self._heartbeat_stop.set()
        jobs = [h.task for h in self._held.values() if h.task is not None]
        if self._held:
            logger.info(
                "stream closed; forgetting results of %d held jobs (the server re-queues them)",
                len(self._held),
            )
            for held in list(self._held.values()):
                self._abandon(held)
        helpers = [t for t in (reader, heartbeat, self._flush_task) if t is not None]
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        if jobs:
            await asyncio.wait(jobs, timeout=ABANDON_TIMEOUT)
        call.cancel()


def _interval(d: duration_pb2.Duration) -> float:
    seconds = d.seconds + d.nanos / 1e9
    return seconds if seconds > 0 else DEFAULT_HEARTBEAT_INTERVAL
