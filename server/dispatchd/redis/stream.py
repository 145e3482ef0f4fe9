"""The Work stream on the Redis backend: the same protocol and messages as the embedded
one (service/sessions.py), with a replica instead of the engine behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc

from dispatchd import convert
from dispatchd.engine import EngineError, Rejection
from dispatchd.redis.records import StoredJob
from dispatchd.redis.replica import Replica
from dispatchd.redis.workers import RemoteWorker
from dispatchd.service.errors import abort, status_of
from dispatchd.service.sessions import StreamEnd, stream_error
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

Context = grpc.aio.ServicerContext[pb.WorkRequest, pb.WorkResponse]


def fill_delivery(d: pb.Delivery, job: StoredJob) -> None:
    convert.fill_job(d.job, job.record)
    d.lease_id = job.lease_id
    if job.lease_deadline is not None:
        convert.set_time(d.lease_expire_time, job.lease_deadline)
        convert.set_time(d.job.lease_expire_time, job.lease_deadline)


class RedisSession:
    """The outbox of one stream; the stream's generator writes it out."""

    def __init__(self) -> None:
        self.outbox: asyncio.Queue[pb.WorkResponse | StreamEnd] = asyncio.Queue()

    def deliver(self, jobs: list[StoredJob]) -> None:
        msg = pb.WorkResponse()
        add = msg.deliveries.deliveries.add
        for job in jobs:
            fill_delivery(add(), job)
        self.outbox.put_nowait(msg)

    def cancel(self, job_ids: list[str]) -> None:
        self.outbox.put_nowait(pb.WorkResponse(cancellations=pb.JobCancellations(job_ids=job_ids)))

    def drain(self, deadline: float) -> None:
        self.outbox.put_nowait(
            pb.WorkResponse(drain=pb.DrainNotice(deadline=convert.timestamp(deadline)))
        )

    def reject(self, rejections: list[Rejection]) -> None:
        msg = pb.WorkResponse()
        for r in rejections:
            msg.rejections.rejections.add(job_id=r.job_id, lease_id=r.lease_id, reason=r.reason)
        self.outbox.put_nowait(msg)

    def end(self, end: StreamEnd) -> None:
        self.outbox.put_nowait(end)

    def close(self, reason: str) -> None:
        self.end(StreamEnd(reason=reason))


class RedisWorkStream:
    """Serves one Work call from hello to the end of the stream."""

    def __init__(self, replica: Replica, clock: Callable[[], float], lease: float) -> None:
        self._replica = replica
        self._clock = clock
        self._lease = lease

    async def serve(
        self, requests: AsyncIterator[pb.WorkRequest], context: Context
    ) -> AsyncIterator[pb.WorkResponse]:
        session = RedisSession()
        worker = await self._hello(requests, context, session)
        if worker is None:
            return
        yield welcome(
            worker.worker_id,
            await self._heartbeat_interval(worker),
            self._replica.backend.limits.max_payload_bytes,
        )
        for name in worker.queues:
            self._replica.kick(name)
        reader = asyncio.create_task(self._read(requests, worker, session))
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
            held = await self._replica.disconnect(worker)
            log_disconnected(worker, reason, held)

    async def _heartbeat_interval(self, worker: RemoteWorker) -> float:
        """A third of the shortest lease among the worker's queues, as on the embedded
        backend: two heartbeats may be lost before a lease ends."""
        try:
            views = [await self._replica.backend.get_queue(q) for q in worker.queues]
            shortest = min(v.settings.lease_seconds for v in views)
        except EngineError:
            shortest = self._lease
        return max(0.1, min(10.0, shortest / 3))

    async def _hello(
        self, requests: AsyncIterator[pb.WorkRequest], context: Context, session: RedisSession
    ) -> RemoteWorker | None:
        h = await read_hello(requests, context)
        if h is None:
            return None
        try:
            worker = await self._replica.connect(
                h.worker_id, list(h.queues), h.max_in_flight, session
            )
        except EngineError as e:
            await abort(context, e.under("hello"))
        log_connected(worker)
        return worker

    async def _read(
        self, requests: AsyncIterator[pb.WorkRequest], worker: RemoteWorker, session: RedisSession
    ) -> None:
        try:
            async for req in requests:
                end = await self._apply(req, worker, session)
                if end is not None:
                    reason = f"protocol error: {end.details}"
                    session.end(StreamEnd(end.code, end.details, reason, end.error))
                    return
            session.end(StreamEnd(reason="worker closed the stream"))
        except asyncio.CancelledError:
            raise
        except grpc.RpcError:
            session.end(StreamEnd(reason="stream broke"))
        except EngineError as e:  # Redis went away mid-stream: the worker reconnects
            session.end(StreamEnd(status_of(e), str(e), f"backend error: {e}", e))

    async def _apply(
        self, req: pb.WorkRequest, worker: RemoteWorker, session: RedisSession
    ) -> StreamEnd | None:
        kind = req.WhichOneof("kind")
        replica = self._replica
        if kind == "results":
            items = [(r.job_id, r.lease_id, outcome(r)) for r in req.results.results]
            rejected = await replica.results(worker, items)
            if rejected:
                session.reject(rejected)
        elif kind == "heartbeat":
            unknown = await replica.heartbeat(worker, req.heartbeat.lease_ids)
            if unknown:
                session.reject(unknown_leases(unknown))
        elif kind == "credit":
            try:
                replica.set_credit(worker, req.credit.max_in_flight)
            except EngineError as e:
                return stream_error(e.under("credit"))
        elif kind == "hello":
            return stream_error(hello_repeated())
        else:
            return stream_error(empty_request())
        return None
