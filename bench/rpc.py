"""Typed grpc.aio callables for the few dispatchd methods the benchmark uses.

The generated ``*_pb2_grpc`` stub is untyped, so the benchmark builds its own multicallables
from the method paths and the typed ``pb2`` (de)serializers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2

from dispatchd_client.v1 import dispatcher_pb2 as pb

SERVICE = "/dispatchd.v1.DispatcherService/"
SETTLE_TIMEOUT = 30.0
CHANNEL_OPTIONS = [
    # A connection of its own per channel: producers and workers are separate clients.
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]

WorkCall = grpc.aio.StreamStreamCall[pb.WorkRequest, pb.WorkResponse]


def channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


class Dispatchd:
    """The DispatcherService calls of the benchmark, on one channel."""

    def __init__(self, chan: grpc.aio.Channel) -> None:
        self.submit: grpc.aio.UnaryUnaryMultiCallable[pb.SubmitRequest, pb.SubmitResponse] = (
            chan.unary_unary(
                SERVICE + "Submit", pb.SubmitRequest.SerializeToString, pb.SubmitResponse.FromString
            )
        )
        self.submit_batch: grpc.aio.UnaryUnaryMultiCallable[
            pb.SubmitBatchRequest, pb.SubmitBatchResponse
        ] = chan.unary_unary(
            SERVICE + "SubmitBatch",
            pb.SubmitBatchRequest.SerializeToString,
            pb.SubmitBatchResponse.FromString,
        )
        self.get_queue: grpc.aio.UnaryUnaryMultiCallable[
            pb.GetQueueRequest, pb.GetQueueResponse
        ] = chan.unary_unary(
            SERVICE + "GetQueue",
            pb.GetQueueRequest.SerializeToString,
            pb.GetQueueResponse.FromString,
        )
        self.update_queue: grpc.aio.UnaryUnaryMultiCallable[
            pb.UpdateQueueRequest, pb.UpdateQueueResponse
        ] = chan.unary_unary(
            SERVICE + "UpdateQueue",
            pb.UpdateQueueRequest.SerializeToString,
            pb.UpdateQueueResponse.FromString,
        )
        self.work: grpc.aio.StreamStreamMultiCallable[pb.WorkRequest, pb.WorkResponse] = (
            chan.stream_stream(
                SERVICE + "Work", pb.WorkRequest.SerializeToString, pb.WorkResponse.FromString
            )
        )
        self.health: grpc.aio.UnaryUnaryMultiCallable[
            health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
        ] = chan.unary_unary(
            "/grpc.health.v1.Health/Check",
            health_pb2.HealthCheckRequest.SerializeToString,
            health_pb2.HealthCheckResponse.FromString,
        )

    async def set_width(self, queue: str, width: int) -> None:
        """Creates the queue if needed and sets its width (and nothing else)."""
        await self.configure(pb.Queue(name=queue, width=width), "width")

    async def configure(self, queue: pb.Queue, *paths: str) -> pb.Queue:
        """Creates ``queue.name`` if needed and sets the fields named in ``paths``; a
        message path (``rate``, ``key_limits``) whose field is unset clears it."""
        req = pb.UpdateQueueRequest(queue=queue, allow_missing=True)
        req.update_mask.paths.extend(paths)
        return (await self.update_queue(req, timeout=5.0)).queue

    async def submit_all(self, specs: Sequence[pb.JobSpec], batch: int) -> None:
        """Submits ``specs`` in order, ``batch`` at a time, one SubmitBatch after another."""
        for i in range(0, len(specs), batch):
            req = pb.SubmitBatchRequest(jobs=specs[i : i + batch])
            await self.submit_batch(req, timeout=SETTLE_TIMEOUT)

    async def serving(self) -> bool:
        try:
            resp = await self.health(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
        except grpc.RpcError:
            return False
        serving: bool = resp.status == health_pb2.HealthCheckResponse.SERVING
        return serving

    async def settled(self, queue: str) -> None:
        """Waits until the server has applied every result: nothing pending or underway."""
        async with asyncio.timeout(SETTLE_TIMEOUT):
            while True:
                q = (await self.get_queue(pb.GetQueueRequest(name=queue), timeout=5.0)).queue
                if q.pending_count == 0 and q.underway_count == 0:
                    return
                await asyncio.sleep(0.005)
