"""Refusals carry their facts as standard error details (google.rpc.Status in the
grpc-status-details-bin trailer), read here the way any gRPC user would: grpcio-status'
``rpc_status.from_call`` on a raw stub's error. The Python client's attributes are checked
beside them. tests/backends/test_shared.py runs these on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from dispatchd_client import AsyncClient, InvalidArgument, NewJob, NotFound, ResourceExhausted
from dispatchd_client import Unavailable as ClientUnavailable
from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc
from tests.integration.test_leases import RawWorker, stub

__all__ = ["stub"]  # the raw stub fixture

DOMAIN = "dispatchd.dev"


@dataclass
class Details:
    code: grpc.StatusCode
    reason: str = ""
    domain: str = ""
    info: dict[str, str] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)
    retry_delay: float | None = None


def details_of(e: grpc.aio.AioRpcError) -> Details:
    # AioRpcError has the code(), details() and trailing_metadata() that from_call reads;
    # it raises when the status' code or message disagree with the call's.
    status = rpc_status.from_call(cast(grpc.Call, e))
    assert status is not None, f"no error details on {e.code()}: {e.details()}"
    out = Details(e.code())
    for packed in status.details:
        info, bad, retry = (
            error_details_pb2.ErrorInfo(),
            error_details_pb2.BadRequest(),
            error_details_pb2.RetryInfo(),
        )
        if packed.Unpack(info):
            out.reason, out.domain, out.info = info.reason, info.domain, dict(info.metadata)
        elif packed.Unpack(bad):
            out.fields += [v.field for v in bad.field_violations]
        elif packed.Unpack(retry):
            out.retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
    return out


async def test_a_bad_job_in_a_batch_names_its_field(
    stub: pb_grpc.DispatcherServiceStub, target: str
) -> None:
    jobs = [pb.JobSpec(queue="ok", payload=b"a"), pb.JobSpec(queue="bad queue!", payload=b"b")]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.SubmitBatch(pb.SubmitBatchRequest(jobs=jobs))
    got = details_of(info.value)
    assert got.code is grpc.StatusCode.INVALID_ARGUMENT
    assert (got.reason, got.domain) == ("INVALID_ARGUMENT", DOMAIN)
    assert got.fields == ["jobs[1].queue"]
    assert got.retry_delay is None
    assert (info.value.details() or "").startswith("jobs[1]: queue name")  # still for people
    async with AsyncClient(target, coalesce=False) as client:
        with pytest.raises(InvalidArgument) as caught:
            await client.submit_batch([NewJob("ok", b"a"), NewJob("bad queue!", b"b")])
    assert caught.value.reason == "INVALID_ARGUMENT"
    assert [f for f, _ in caught.value.field_violations] == ["jobs[1].queue"]
    assert caught.value.retry_delay is None


async def test_a_lone_submit_names_the_field_of_its_job(
    stub: pb_grpc.DispatcherServiceStub,
) -> None:
    ttl = duration_pb2.Duration(seconds=-5)
    for spec, path in (
        (pb.JobSpec(queue="", payload=b"x"), "job.queue"),
        (pb.JobSpec(queue="q", ttl=ttl), "job.ttl"),
        (pb.JobSpec(queue="q", retry_policy=pb.RetryPolicy(max_attempts=0)), "job.retry_policy"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Submit(pb.SubmitRequest(job=spec))
        got = details_of(info.value)
        assert got.code is grpc.StatusCode.INVALID_ARGUMENT
        assert got.fields, spec
        assert got.fields[0].startswith(path), got.fields


async def test_update_queue_fields_are_rooted_in_the_queue(
    stub: pb_grpc.DispatcherServiceStub,
) -> None:
    request = pb.UpdateQueueRequest(queue=pb.Queue(name="uq", width=-1), allow_missing=True)
    request.update_mask.paths.append("width")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.UpdateQueue(request)
    assert details_of(info.value).fields == ["queue.width"]
    request.update_mask.paths[:] = ["colour"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.UpdateQueue(request)
    assert details_of(info.value).fields == ["update_mask"]


async def test_max_pending_is_queue_full_with_a_retry_delay(
    stub: pb_grpc.DispatcherServiceStub, target: str
) -> None:
    async with AsyncClient(target, coalesce=False) as client:
        await client.update_queue("full", max_pending=1, create=True)
        await client.submit("full", b"1")
        with pytest.raises(ResourceExhausted) as caught:
            await client.submit("full", b"2")
    assert caught.value.reason == "QUEUE_FULL"
    assert caught.value.retry_delay == pytest.approx(1.0)
    assert caught.value.info["queue"] == "full"
    assert caught.value.info["max_pending"] == "1"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Submit(pb.SubmitRequest(job=pb.JobSpec(queue="full", payload=b"3")))
    got = details_of(info.value)
    assert (got.code, got.reason, got.domain) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "QUEUE_FULL",
        DOMAIN,
    )
    assert got.retry_delay == pytest.approx(1.0)
    assert got.fields == []


async def test_an_oversized_payload_is_payload_too_large_without_a_retry(
    stub: pb_grpc.DispatcherServiceStub,
) -> None:
    spec = pb.JobSpec(queue="big", payload=b"x" * ((1 << 20) + 1))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Submit(pb.SubmitRequest(job=spec))
    got = details_of(info.value)
    assert (got.code, got.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "PAYLOAD_TOO_LARGE")
    assert got.fields == ["job.payload"]
    assert got.retry_delay is None


async def test_an_unknown_job_is_job_not_found(
    stub: pb_grpc.DispatcherServiceStub, target: str
) -> None:
    async with AsyncClient(target) as client:
        job = await client.submit("nf", b"x")
    missing = ("0" if job.id[0] != "0" else "1") + job.id[1:]  # same shape, never issued
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetJob(pb.GetJobRequest(job_id=missing))
    got = details_of(info.value)
    assert (got.code, got.reason, got.domain) == (
        grpc.StatusCode.NOT_FOUND,
        "JOB_NOT_FOUND",
        DOMAIN,
    )
    assert got.info == {"job_id": missing}
    async with AsyncClient(target) as client:
        with pytest.raises(NotFound) as caught:
            await client.cancel(missing)
    assert caught.value.reason == "JOB_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetQueue(pb.GetQueueRequest(name="never-made"))
    assert details_of(info.value).reason == "QUEUE_NOT_FOUND"


async def test_a_submit_during_a_drain_is_draining_with_a_retry_delay(
    stub: pb_grpc.DispatcherServiceStub, target: str
) -> None:
    async with AsyncClient(target) as client:
        await client.submit("held", b"x")
        worker = RawWorker(stub, "held", 1)  # holds the job: the drain waits for it
        await worker.next("deliveries")
        await client.drain(grace=30)
        await worker.next("drain")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Submit(pb.SubmitRequest(job=pb.JobSpec(queue="held", payload=b"y")))
        got = details_of(info.value)
        assert (got.code, got.reason, got.domain) == (
            grpc.StatusCode.UNAVAILABLE,
            "DRAINING",
            DOMAIN,
        )
        assert got.retry_delay == pytest.approx(1.0)
        with pytest.raises(ClientUnavailable) as caught:
            await client.submit("held", b"z")
        assert (caught.value.reason, caught.value.retry_delay) == ("DRAINING", 1.0)
        await worker.close()  # the held job goes back; the drain ends


async def test_a_work_stream_refusal_carries_details(
    stub: pb_grpc.DispatcherServiceStub,
) -> None:
    async def hello(*queues: str) -> AsyncIterator[pb.WorkRequest]:
        yield pb.WorkRequest(hello=pb.WorkerHello(queues=list(queues), max_in_flight=1))

    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Work(hello("fine", "not fine")):
            pass
    got = details_of(info.value)
    assert (got.code, got.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert got.fields == ["hello.queues[1]"]

    async def no_hello() -> AsyncIterator[pb.WorkRequest]:
        yield pb.WorkRequest(credit=pb.WorkerCredit(max_in_flight=1))

    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Work(no_hello()):
            pass
    got = details_of(info.value)
    assert (got.code, got.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "HELLO_REQUIRED")
