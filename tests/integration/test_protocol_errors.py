"""Errors a generated stub can provoke that the Python client never sends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc


@pytest.fixture
async def stub(target: str) -> AsyncIterator[pb_grpc.DispatcherServiceStub]:
    async with grpc.aio.insecure_channel(target) as channel:
        yield pb_grpc.DispatcherServiceStub(channel)


async def _messages(*msgs: pb.WorkRequest) -> AsyncIterator[pb.WorkRequest]:
    for m in msgs:
        yield m


async def _error_of(call: grpc.aio.StreamStreamCall) -> grpc.aio.AioRpcError:  # type: ignore[type-arg]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    return info.value


async def test_work_request_before_hello_is_failed_precondition(
    stub: pb_grpc.DispatcherServiceStub,
) -> None:
    call = stub.Work(_messages(pb.WorkRequest(credit=pb.WorkerCredit(max_in_flight=1))))
    err = await _error_of(call)
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "first WorkRequest must be hello" in (err.details() or "")


@pytest.mark.parametrize(
    ("hello", "message"),
    [
        (pb.WorkerHello(worker_id="w", queues=[], max_in_flight=1), "names no queues"),
        (pb.WorkerHello(worker_id="w", queues=["q"], max_in_flight=0), "max_in_flight"),
        (pb.WorkerHello(worker_id="w", queues=["bad q"], max_in_flight=1), "queue name"),
    ],
)
async def test_bad_hello_is_invalid_argument(
    stub: pb_grpc.DispatcherServiceStub, hello: pb.WorkerHello, message: str
) -> None:
    err = await _error_of(stub.Work(_messages(pb.WorkRequest(hello=hello))))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.details() or "")


async def test_second_hello_ends_the_stream(stub: pb_grpc.DispatcherServiceStub) -> None:
    hello = pb.WorkRequest(hello=pb.WorkerHello(worker_id="w", queues=["q"], max_in_flight=1))
    err = await _error_of(stub.Work(_messages(hello, hello)))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_result_for_a_job_not_held_is_rejected_and_changes_nothing(
    stub: pb_grpc.DispatcherServiceStub,
) -> None:
    submitted = await stub.Submit(pb.SubmitRequest(job=pb.JobSpec(queue="other", payload=b"x")))
    job_id = submitted.job.id
    hello = pb.WorkRequest(hello=pb.WorkerHello(worker_id="w", queues=["q"], max_in_flight=1))
    forged = pb.WorkRequest(
        results=pb.WorkResults(
            results=[pb.JobResult(job_id=job_id, lease_id="forged", output=b"done")]
        )
    )
    call = stub.Work(_messages(hello, forged))
    kinds = []
    rejection = None
    async for resp in call:
        kinds.append(resp.WhichOneof("kind"))
        if resp.HasField("rejections"):
            rejection = resp.rejections.rejections[0]
    assert kinds == ["welcome", "rejections"]
    assert rejection is not None
    assert rejection.job_id == job_id
    assert "stale lease" in rejection.reason
    got = await stub.GetJob(pb.GetJobRequest(job_id=job_id))
    assert got.job.state == pb.JOB_STATE_PENDING


async def test_unknown_update_mask_field_is_invalid_argument(
    stub: pb_grpc.DispatcherServiceStub,
) -> None:
    await stub.Submit(pb.SubmitRequest(job=pb.JobSpec(queue="m", payload=b"x")))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.UpdateQueue(
            pb.UpdateQueueRequest(
                queue=pb.Queue(name="m", width=1), update_mask=FieldMask(paths=["width", "colour"])
            )
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "colour" in (info.value.details() or "")
    got = await stub.GetQueue(pb.GetQueueRequest(name="m"))
    assert got.queue.width == 10


async def test_bad_page_token_is_invalid_argument(stub: pb_grpc.DispatcherServiceStub) -> None:
    await stub.Submit(pb.SubmitRequest(job=pb.JobSpec(queue="p", payload=b"x")))
    for token in ("garbage", "MXxvdGhlcnwwfDF8MXwx"):  # the second is a token for queue 'other'
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListJobs(pb.ListJobsRequest(queue="p", page_token=token))
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in (info.value.details() or "")
