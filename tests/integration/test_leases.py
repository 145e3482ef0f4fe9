"""Leases over a raw stream: expiry re-queues, heartbeats extend, stale results are fenced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from dispatchd.runtime import DispatchdServer
from dispatchd_client import AsyncClient, JobState
from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc
from tests.grpc_probes import check_health_and_reflection

from .helpers import eventually


class RawWorker:
    """A worker that does only what the test tells it to."""

    def __init__(self, stub: pb_grpc.DispatcherServiceStub, queue: str, credits: int) -> None:
        self.outbox: asyncio.Queue[pb.WorkRequest | None] = asyncio.Queue()
        self.outbox.put_nowait(
            pb.WorkRequest(
                hello=pb.WorkerHello(worker_id="raw", queues=[queue], max_in_flight=credits)
            )
        )
        self.call = stub.Work(self._requests())
        self.inbox: asyncio.Queue[pb.WorkResponse] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _requests(self) -> AsyncIterator[pb.WorkRequest]:
        while (msg := await self.outbox.get()) is not None:
            yield msg

    async def _read(self) -> None:
        async for resp in self.call:
            self.inbox.put_nowait(resp)

    async def next(self, kind: str) -> pb.WorkResponse:
        while True:
            resp = await asyncio.wait_for(self.inbox.get(), 10)
            if resp.WhichOneof("kind") == kind:
                return resp

    def send(self, msg: pb.WorkRequest) -> None:
        self.outbox.put_nowait(msg)

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


@pytest.fixture
async def stub(target: str) -> AsyncIterator[pb_grpc.DispatcherServiceStub]:
    async with grpc.aio.insecure_channel(target) as channel:
        yield pb_grpc.DispatcherServiceStub(channel)


def _result(d: pb.Delivery, output: bytes) -> pb.WorkRequest:
    return pb.WorkRequest(
        results=pb.WorkResults(
            results=[pb.JobResult(job_id=d.job.id, lease_id=d.lease_id, output=output)]
        )
    )


async def test_expired_lease_requeues_and_fences_the_late_result(
    target: str, stub: pb_grpc.DispatcherServiceStub
) -> None:
    async with AsyncClient(target) as client:
        await client.update_queue("l", lease_duration=1.0, create=True)
        job = await client.submit("l", b"x")
        worker = RawWorker(stub, "l", 1)
        first = (await worker.next("deliveries")).deliveries.deliveries[0]
        assert (first.job.id, first.job.attempt) == (job.id, 1)
        # No heartbeat: the lease ends and the job goes back. The silent worker gets
        # nothing until it shows life and lets go of the job it lost (its late result).
        await eventually(lambda: _state_is(client, job.id, JobState.PENDING))
        worker.send(_result(first, b"late"))
        rejected = (await worker.next("rejections")).rejections.rejections[0]
        assert (rejected.job_id, rejected.lease_id) == (job.id, first.lease_id)
        assert "stale lease" in rejected.reason
        # Its credit is free again: the job comes back as a new attempt, a new lease.
        again = (await worker.next("deliveries")).deliveries.deliveries[0]
        assert (again.job.id, again.job.attempt) == (job.id, 2)
        assert again.lease_id != first.lease_id
        assert (await client.get(job.id)).state is JobState.UNDERWAY
        worker.send(_result(again, b"on time"))
        done = await client.wait(job.id, timeout=10)
        assert (done.state, done.result, done.attempt) == (JobState.SUCCEEDED, b"on time", 2)
        await worker.close()


async def _state_is(client: AsyncClient, job_id: str, state: JobState) -> bool:
    return (await client.get(job_id)).state is state


async def test_heartbeat_extends_the_lease(
    target: str, stub: pb_grpc.DispatcherServiceStub
) -> None:
    async with AsyncClient(target) as client:
        await client.update_queue("hb", lease_duration=1.0, create=True)
        job = await client.submit("hb", b"x")
        worker = RawWorker(stub, "hb", 1)
        welcome = (await worker.next("welcome")).welcome
        assert welcome.heartbeat_interval.ToTimedelta().total_seconds() == pytest.approx(1 / 3)
        delivery = (await worker.next("deliveries")).deliveries.deliveries[0]
        first_deadline = delivery.lease_expire_time.ToDatetime()
        worker.send(pb.WorkRequest(heartbeat=pb.WorkerHeartbeat()))
        await eventually(
            lambda: _deadline_after(client, job.id, first_deadline), what="a later deadline"
        )
        worker.send(pb.WorkRequest(heartbeat=pb.WorkerHeartbeat(lease_ids=["not-mine"])))
        rejected = (await worker.next("rejections")).rejections.rejections[0]
        assert rejected.lease_id == "not-mine"
        await worker.close()
        await eventually(
            lambda: _state_is(client, job.id, JobState.PENDING),
            what="the job to return when the stream breaks",
        )


async def _deadline_after(client: AsyncClient, job_id: str, t: object) -> bool:
    job = await client.get(job_id)
    assert job.lease_expire_time is not None
    return job.lease_expire_time.replace(tzinfo=None) > t  # type: ignore[operator]


async def test_health_and_reflection(target: str, server: DispatchdServer) -> None:
    async def shut_down() -> None:
        await server.backend.begin_drain(30.0)
        await server.health.enter_graceful_shutdown()

    await check_health_and_reflection(target, shut_down)
