"""One WorkerSession per Work stream: reads the worker's messages into engine calls and
writes deliveries, cancellations and notices back in as few messages as it can."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc

from dispatchd import convert
from dispatchd.engine import (
    Engine,
    EngineError,
    LeaseRecord,
    Rejection,
    WorkerRecord,
)
from dispatchd.service.errors import abort, status_of
from dispatchd.service.pump import DispatchPump
from dispatchd.service.work_protocol import (
    empty_request,
    hello_repeated,
    log_connected,
    log_disconnected,
    outcome,
    read_hello,
    unknown_leases,
    welcome,
)
from dispatchd_client.v1 import dispatcher_pb2 as pb


class MessageCounts:
    """Work stream messages by (direction, kind), for /metrics: next to the job counters
    they show how many jobs a message carries, so coalescing on either side is visible."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

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
    return StreamEnd(status_of(error), str(error), error=error)


class WorkerSession:
    """Holds the outbox of one stream. Engine calls happen in the reader; writes happen
    in the stream's own generator, so a slow worker never blocks the engine."""

    def __init__(self, worker: WorkerRecord, counts: MessageCounts) -> None:
        self.worker = worker
        self.outbox: asyncio.Queue[pb.WorkResponse | StreamEnd] = asyncio.Queue()
        self._sent = counts.add

    def deliver(self, leases: list[LeaseRecord]) -> None:
        """Every lease one pass gave this worker, in one message."""
        self._sent("sent", "deliveries")
        msg = pb.WorkResponse()
        out = msg.deliveries.deliveries
        for lease in leases:
            d = out.add(lease_id=lease.lease_id)
            convert.fill_job(d.job, lease.job)
            convert.set_time(d.lease_expire_time, lease.deadline)
        self.outbox.put_nowait(msg)

    def cancel(self, job_ids: list[str]) -> None:
        self._sent("sent", "cancellations")
        self.outbox.put_nowait(pb.WorkResponse(cancellations=pb.JobCancellations(job_ids=job_ids)))

    def drain(self, deadline: float) -> None:
        self._sent("sent", "drain")
        self.outbox.put_nowait(
            pb.WorkResponse(drain=pb.DrainNotice(deadline=convert.timestamp(deadline)))
        )

    def reject(self, rejections: list[Rejection]) -> None:
        self._sent("sent", "rejections")
        msg = pb.WorkResponse()
        for r in rejections:
            msg.rejections.rejections.add(job_id=r.job_id, lease_id=r.lease_id, reason=r.reason)
        self.outbox.put_nowait(msg)

    def end(
        self,
        code: grpc.StatusCode = grpc.StatusCode.OK,
        details: str = "",
        reason: str = "server ended the stream",
        error: EngineError | None = None,
    ) -> None:
        self.outbox.put_nowait(StreamEnd(code, details, reason, error))


class WorkStream:
    """Serves one Work call from hello to the end of the stream."""

    def __init__(
        self,
        engine: Engine,
        pump: DispatchPump,
        clock: Callable[[], float],
        counts: MessageCounts | None = None,
    ) -> None:
        self._engine = engine
        self._pump = pump
        self._clock = clock
        self.counts = counts or MessageCounts()

    def _heartbeat_interval(self, worker: WorkerRecord) -> float:
        """A third of the shortest lease among the worker's queues: two heartbeats may be
        lost before a lease ends."""
        shortest = min(self._engine.get_queue(q).settings.lease_seconds for q in worker.queues)
        return max(0.1, min(10.0, shortest / 3))

    async def serve(
        self,
        requests: AsyncIterator[pb.WorkRequest],
        context: grpc.aio.ServicerContext[pb.WorkRequest, pb.WorkResponse],
    ) -> AsyncIterator[pb.WorkResponse]:
        session = await self._hello(requests, context)
        if session is None:
            return
        self._pump.register(session)
        self.counts.add("sent", "welcome")
        worker = session.worker
        yield welcome(
            worker.worker_id,
            self._heartbeat_interval(worker),
            self._engine.limits.max_payload_bytes,
        )
        self._pump.kick()
        reader = asyncio.create_task(self._read(requests, session))
        reason = "stream cancelled: the worker went away or the connection broke"
        try:
            while True:
                msg = await session.outbox.get()
                if isinstance(msg, StreamEnd):
                    reason = msg.reason
                    if msg.error is not None:
                        await abort(context, msg.error)
                    if msg.code is not grpc.StatusCode.OK:
                        await context.abort(msg.code, msg.details)
                    return
                yield msg
        finally:
            reader.cancel()
            self._pump.unregister(session)
            held = self._engine.disconnect(worker, self._clock())
            log_disconnected(worker, reason, held)
            self._pump.kick()

    async def _hello(
        self,
        requests: AsyncIterator[pb.WorkRequest],
        context: grpc.aio.ServicerContext[pb.WorkRequest, pb.WorkResponse],
    ) -> WorkerSession | None:
        h = await read_hello(requests, context, self._received)
        if h is None:
            return None
        try:
            worker = self._engine.connect(
                h.worker_id, list(h.queues), h.max_in_flight, self._clock(), dict(h.labels)
            )
        except EngineError as e:
            await abort(context, e.under("hello"))
        log_connected(worker)
        return WorkerSession(worker, self.counts)

    def _received(self, req: pb.WorkRequest) -> None:
        self.counts.add("received", req.WhichOneof("kind") or "empty")

    async def _read(self, requests: AsyncIterator[pb.WorkRequest], session: WorkerSession) -> None:
        """Applies the worker's messages; ends the stream on a protocol error or when the
        worker half-closes."""
        try:
            async for req in requests:
                end = self._apply(req, session)
                if end is not None:
                    session.end(end.code, end.details, f"protocol error: {end.details}", end.error)
                    return
            session.end(reason="worker closed the stream")
        except asyncio.CancelledError:
            raise
        except grpc.RpcError:  # the stream broke; the generator's finally cleans up
            session.end(reason="stream broke")

    def _apply(self, req: pb.WorkRequest, session: WorkerSession) -> StreamEnd | None:
        kind = req.WhichOneof("kind")
        self.counts.add("received", kind or "empty")
        engine, worker = self._engine, session.worker
        if kind == "results":
            now = self._clock()
            rejected = []
            for r in req.results.results:
                rej = engine.complete(worker, r.job_id, r.lease_id, outcome(r), now)
                if rej is not None:
                    rejected.append(rej)
            if rejected:
                session.reject(rejected)
        elif kind == "heartbeat":
            unknown = engine.heartbeat(worker, req.heartbeat.lease_ids, self._clock())
            if unknown:
                session.reject(unknown_leases(unknown))
            return None
        elif kind == "credit":
            try:
                engine.set_credit(worker, req.credit.max_in_flight)
            except EngineError as e:
                return stream_error(e.under("credit"))
        elif kind == "hello":
            return stream_error(hello_repeated())
        else:
            return stream_error(empty_request())
        self._pump.kick()
        return None
