"""The Work stream: one WorkerSession per stream, reading the worker's messages into
backend calls and writing deliveries, cancellations and notices back in as few messages
as it can. The same for every backend (dispatchd.backend).

The handler is a coroutine that writes with ``context.write`` rather than an async
generator: when grpc cancels the call (the worker went away), the cancellation lands in
this coroutine wherever it waits — reading the hello, writing the welcome or a delivery —
and the ``finally`` that disconnects the worker always runs. A generator left suspended
at a ``yield`` is only closed when the garbage collector gets to it, which left streams
cancelled right after their hello connected for good (ghost workers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import grpc

from dispatchd import convert
from dispatchd.backend import Backend, WorkerSpec, WorkResult
from dispatchd.engine import EngineError, LeaseRecord, Rejection, WorkerRecord
from dispatchd.engine.errors import Reason, ResourceExhausted
from dispatchd.observability import turnaround
from dispatchd.service.errors import abort, status_of
from dispatchd.service.work_protocol import (
    empty_request,
    hello_repeated,
    log_connected,
    log_disconnected,
    outcome,
    progress_reports,
    read_hello,
    unknown_leases,
    welcome,
)
from dispatchd_client.v1 import dispatcher_pb2 as pb

log = logging.getLogger("dispatchd.sessions")
Context = grpc.aio.ServicerContext[pb.WorkRequest, pb.WorkResponse]

#: Messages a stream may have waiting to be written. Deliveries are bounded by the
#: worker's credits; what is not (rejections of results and heartbeats it keeps sending)
#: is bounded here: a worker that stops reading is ended instead of growing the server.
MAX_QUEUED_MESSAGES = 1_000
#: Rejection entries waiting to be written, over every queued message.
MAX_QUEUED_REJECTIONS = 10_000


class MessageCounts:
    """Work stream messages by (direction, kind), for /metrics: next to the job counters
    they show how many jobs a message carries, so coalescing on either side is visible."""

    __slots__ = ("counts", "jobs_delivered")

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.jobs_delivered = 0
        """Jobs the sent deliveries messages carried."""

    def add(self, direction: str, kind: str) -> None:
        key = (direction, kind)
        self.counts[key] = self.counts.get(key, 0) + 1


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Why the server ends a stream: OK, or a status the worker must see."""

    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""
    reason: str = "server ended the stream"
    """Why, for the disconnect log line."""
    error: EngineError | None = None
    """The refusal behind a non-OK end: its rich status is what the worker sees."""


def stream_error(error: EngineError) -> StreamEnd:
    return StreamEnd(status_of(error), str(error), f"protocol error: {error}", error)


class WorkerSession:
    """The outbox of one stream (the backend's Outbox). Backend calls happen in the
    reader; writes happen in the stream's own coroutine, so a slow worker never blocks
    the backend."""

    def __init__(self, counts: MessageCounts) -> None:
        self.outbox: asyncio.Queue[pb.WorkResponse | StreamEnd] = asyncio.Queue()
        self._sent = counts.add
        self._counts = counts
        self._rejections = 0  # rejection entries queued and not yet written
        self._ended = False
        #: The stream's own task, cancelled when the outbox overflows (see _overflow).
        self.writer: asyncio.Task[None] | None = None
        self.overflowed: StreamEnd | None = None

    def _put(self, msg: pb.WorkResponse, kind: str) -> None:
        if self._ended:
            return
        if self.outbox.qsize() >= MAX_QUEUED_MESSAGES:
            self._overflow(f"{self.outbox.qsize()} messages")
            return
        self._sent("sent", kind)
        self.outbox.put_nowait(msg)

    def _overflow(self, what: str) -> None:
        error = ResourceExhausted(
            f"the worker is not reading its stream ({what} wait to be written); "
            "its jobs go back to pending",
            reason=Reason.STREAM_BACKLOG,
        )
        self.end(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            str(error),
            "outbox overflow: the worker stopped reading",
            error,
        )
        # The writer is most likely stuck in a write the worker does not read (flow
        # control): the end it would find after it must not wait behind it.
        self.overflowed = StreamEnd(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            str(error),
            "outbox overflow: the worker stopped reading",
            error,
        )
        if self.writer is not None:
            self.writer.cancel()
            self.writer = None

    def deliver(self, leases: Sequence[LeaseRecord]) -> None:
        """Every lease one pass gave this worker, in one message."""
        msg = pb.WorkResponse()
        out = msg.deliveries.deliveries
        for lease in leases:
            d = out.add(lease_id=lease.lease_id)
            convert.fill_job(d.job, lease.job)
            convert.set_time(d.lease_expire_time, lease.deadline)
        self._counts.jobs_delivered += len(leases)
        self._put(msg, "deliveries")

    def cancel(self, job_ids: list[str]) -> None:
        msg = pb.WorkResponse(cancellations=pb.JobCancellations(job_ids=job_ids))
        self._put(msg, "cancellations")

    def drain(self, deadline: float) -> None:
        self._put(
            pb.WorkResponse(drain=pb.DrainNotice(deadline=convert.timestamp(deadline))), "drain"
        )

    def settings(self, heartbeat_interval: float) -> None:
        interval = convert.duration(heartbeat_interval)
        msg = pb.WorkResponse(settings=pb.WorkerSettings(heartbeat_interval=interval))
        self._put(msg, "settings")

    def reject(self, rejections: list[Rejection]) -> None:
        if self._rejections + len(rejections) > MAX_QUEUED_REJECTIONS:
            self._overflow(f"{self._rejections + len(rejections)} result rejections")
            return
        msg = pb.WorkResponse()
        for r in rejections:
            msg.rejections.rejections.add(job_id=r.job_id, lease_id=r.lease_id, reason=r.reason)
        self._rejections += len(rejections)
        self._put(msg, "rejections")

    def written(self, msg: pb.WorkResponse) -> None:
        if msg.HasField("rejections"):
            self._rejections -= len(msg.rejections.rejections)

    def close(self, reason: str) -> None:
        self.end(reason=reason)

    def call_done(self, _: Context) -> None:
        """grpc's word that the call is over, however it ended (a cancel among them)."""
        self.end(reason="stream cancelled: the worker went away or the connection broke")

    def end(
        self,
        code: grpc.StatusCode = grpc.StatusCode.OK,
        details: str = "",
        reason: str = "server ended the stream",
        error: EngineError | None = None,
    ) -> None:
        if not self._ended:
            self._ended = True
            self.outbox.put_nowait(StreamEnd(code, details, reason, error))

    def end_with(self, end: StreamEnd) -> None:
        self.end(end.code, end.details, end.reason, end.error)


class WorkStream:
    """Serves one Work call from hello to the end of the stream."""

    def __init__(self, backend: Backend, counts: MessageCounts | None = None) -> None:
        self._backend = backend
        self.counts = counts or MessageCounts()
        self._undoing: set[asyncio.Task[int]] = set()
        self._probe = turnaround.PROBE  # bench only (observability/turnaround.py); None: off

    async def serve(self, requests: AsyncIterator[pb.WorkRequest], context: Context) -> None:
        hello = await read_hello(requests, context, self._received)
        if hello is None:
            return
        session = WorkerSession(self.counts)
        spec = WorkerSpec(
            hello.worker_id, list(hello.queues), hello.max_in_flight, dict(hello.labels)
        )
        worker = await self._connect(spec, session, context)
        end = StreamEnd(reason="stream cancelled: the worker went away or the connection broke")
        reader: asyncio.Task[None] | None = None
        try:
            # However the call ends, the writer below wakes up and the worker goes.
            # (grpc-stubs declares the callback type as a class rather than a Protocol.)
            context.add_done_callback(session.call_done)  # type: ignore[arg-type]
            log_connected(worker)
            self.counts.add("sent", "welcome")
            await context.write(
                welcome(
                    worker.worker_id,
                    self._backend.heartbeat_interval(worker),
                    self._backend.limits.max_payload_bytes,
                )
            )
            reader = asyncio.create_task(self._read(requests, worker, session))
            me = session.writer = asyncio.current_task()
            try:
                end = await self._write(session, context, self._probe)
            except asyncio.CancelledError:
                if session.overflowed is None or me is None:
                    raise  # grpc's cancel: the call is over
                me.uncancel()  # our own, to get past a write nobody reads
                end = session.overflowed
        finally:
            if reader is not None:
                reader.cancel()
            # Shielded: a second cancel must not stop the disconnect half-way (a worker
            # left connected keeps its jobs until their leases expire).
            held = await asyncio.shield(self._backend.disconnect(worker))
            log_disconnected(worker, end.reason, held)
        if end.error is not None:
            await abort(context, end.error)
        if end.code is not grpc.StatusCode.OK:
            await context.abort(end.code, end.details)

    async def _connect(
        self, spec: WorkerSpec, session: WorkerSession, context: Context
    ) -> WorkerRecord:
        """Registers the worker. A cancel that lands while a backend is still registering it
        (Redis: several round trips) does not leave it registered: once registered, it is
        disconnected again."""
        backend = self._backend
        connecting = asyncio.ensure_future(backend.connect(spec, session))
        try:
            return await asyncio.shield(connecting)
        except EngineError as e:
            await abort(context, e.under("hello"))
        except asyncio.CancelledError:
            connecting.add_done_callback(self._undo_connect)
            raise

    def _undo_connect(self, connecting: asyncio.Future[WorkerRecord]) -> None:
        if connecting.cancelled() or connecting.exception() is not None:
            return
        task = asyncio.get_running_loop().create_task(self._backend.disconnect(connecting.result()))
        self._undoing.add(task)
        task.add_done_callback(self._undoing.discard)

    @staticmethod
    async def _write(
        session: WorkerSession, context: Context, probe: turnaround.TurnaroundProbe | None
    ) -> StreamEnd:
        """Writes the outbox until the stream ends; returns how it ends."""
        outbox = session.outbox
        while True:
            msg = await outbox.get()
            if isinstance(msg, StreamEnd):
                return msg
            await context.write(msg)
            session.written(msg)
            if probe is not None and msg.HasField("deliveries"):
                probe.delivered(len(msg.deliveries.deliveries))

    def _received(self, req: pb.WorkRequest) -> None:
        self.counts.add("received", req.WhichOneof("kind") or "empty")

    async def _read(
        self, requests: AsyncIterator[pb.WorkRequest], worker: WorkerRecord, session: WorkerSession
    ) -> None:
        """Applies the worker's messages; ends the stream on a protocol error or when the
        worker half-closes."""
        try:
            async for req in requests:
                end = await self._apply(req, worker, session)
                if end is not None:
                    session.end_with(end)
                    return
            session.end(reason="worker closed the stream")
        except asyncio.CancelledError:
            raise
        except grpc.RpcError:  # the stream broke; the writer's finally cleans up
            session.end(reason="stream broke")
        except EngineError as e:  # the backend went away mid-stream: the worker reconnects
            session.end(status_of(e), str(e), f"backend error: {e}", e)
        except Exception:  # a bug here must still end the stream and free its jobs
            log.exception("the reader of worker %s's stream failed", worker.worker_id)
            session.end(grpc.StatusCode.INTERNAL, "internal error", "reader failed")

    async def _apply(
        self, req: pb.WorkRequest, worker: WorkerRecord, session: WorkerSession
    ) -> StreamEnd | None:
        kind = req.WhichOneof("kind")
        self.counts.add("received", kind or "empty")
        backend = self._backend
        if kind == "results":
            items = [WorkResult(r.job_id, r.lease_id, outcome(r)) for r in req.results.results]
            if self._probe is not None:
                self._probe.results_read(len(items))
            rejected = await backend.results(worker, items)
            if rejected:
                session.reject(rejected)
        elif kind == "heartbeat":
            unknown = await backend.heartbeat(worker, req.heartbeat.lease_ids)
            if unknown:
                session.reject(unknown_leases(unknown))
        elif kind == "credit":
            try:
                await backend.set_credit(worker, req.credit.max_in_flight)
            except EngineError as e:
                return stream_error(e.under("credit"))
        elif kind == "progress":  # workflows (docs/workflows.md): advisory, never answered
            try:
                await backend.report_progress(worker, progress_reports(req.progress))
            except EngineError as e:
                return stream_error(e.under("progress"))
        elif kind == "hello":
            return stream_error(hello_repeated())
        else:
            return stream_error(empty_request())
        return None
