"""A worker written from the raw proto, as a third-party client would: one Work stream
whose messages the test sends and reads itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc

Call = grpc.aio.StreamStreamCall[pb.WorkRequest, pb.WorkResponse]


class RawWorker:
    """``async with RawWorker(target, ["q"], credits=1) as w: await w.next("deliveries")``."""

    def __init__(self, target: str, queues: list[str], credits: int = 1, worker_id: str = "raw"):
        self._target = target
        self._hello = pb.WorkerHello(worker_id=worker_id, queues=queues, max_in_flight=credits)
        self._out: asyncio.Queue[pb.WorkRequest | None] = asyncio.Queue()
        # Everything the server sent, read by one task: a read of the call itself must
        # never be cancelled (that cancels the call), but waiting on this queue may be.
        self._in: asyncio.Queue[pb.WorkResponse | None] = asyncio.Queue()
        self._channel: grpc.aio.Channel | None = None
        self._reader: asyncio.Task[None] | None = None
        self.call: Call | None = None

    async def __aenter__(self) -> RawWorker:
        self._channel = grpc.aio.insecure_channel(self._target)
        stub = pb_grpc.DispatcherServiceStub(self._channel)
        self.send(pb.WorkRequest(hello=self._hello))
        self.call = stub.Work(self._requests())
        self._reader = asyncio.create_task(self._read(self.call))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.call is not None:
            self.call.cancel()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close(None)

    async def _read(self, call: Call) -> None:
        try:
            while True:
                msg = await call.read()
                if msg is grpc.aio.EOF:  # type: ignore[attr-defined]
                    return
                assert isinstance(msg, pb.WorkResponse)
                self._in.put_nowait(msg)
        finally:
            self._in.put_nowait(None)

    async def _requests(self) -> AsyncIterator[pb.WorkRequest]:
        while True:
            msg = await self._out.get()
            if msg is None:
                return
            yield msg

    def send(self, msg: pb.WorkRequest) -> None:
        self._out.put_nowait(msg)

    def half_close(self) -> None:
        self._out.put_nowait(None)

    async def next(self, kind: str, within: float = 10.0) -> pb.WorkResponse:
        """The next message of ``kind``, skipping others (welcome, rejections...)."""
        async with asyncio.timeout(within):
            while True:
                msg = await self._in.get()
                if msg is None:
                    self._in.put_nowait(None)  # the end stays visible to later calls
                    raise AssertionError(f"the stream ended before a {kind} message")
                if msg.WhichOneof("kind") == kind:
                    return msg

    def heartbeat(self, *lease_ids: str) -> None:
        self.send(pb.WorkRequest(heartbeat=pb.WorkerHeartbeat(lease_ids=list(lease_ids))))

    def result(self, delivery: pb.Delivery, output: bytes = b"ok") -> None:
        r = pb.JobResult(job_id=delivery.job.id, lease_id=delivery.lease_id, output=output)
        self.send(pb.WorkRequest(results=pb.WorkResults(results=[r])))
