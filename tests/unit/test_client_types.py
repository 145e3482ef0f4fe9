"""Proto -> library value conversion, request building and gRPC error mapping of the client."""

from __future__ import annotations

import datetime
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from dispatchd_client import (
    AlreadyExists,
    DeadlineExceeded,
    DispatchdError,
    FailedPrecondition,
    HttpTarget,
    Internal,
    InvalidArgument,
    Job,
    JobError,
    JobState,
    NewJob,
    NotFound,
    PermanentError,
    PermissionDenied,
    Queue,
    ReceivedJob,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
)
from dispatchd_client import _requests as rq
from dispatchd_client._runner import error_from_exception, to_output
from dispatchd_client.policies import apply_queue_changes
from dispatchd_client.v1 import dispatcher_pb2 as pb

UTC = datetime.UTC


def _ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


class _SyncRpcError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """Shaped like the errors the sync stubs raise: an RpcError that is also a Call."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


# JobState ----------------------------------------------------------------------------------


def test_job_state_mirrors_every_proto_value() -> None:
    proto = {name.removeprefix("JOB_STATE_"): num for name, num in pb.JobState.items()}
    assert {s.name: s.value for s in JobState} == proto


def test_unknown_job_state_falls_back_to_unspecified() -> None:
    job = Job.from_proto(pb.Job(id="j", queue="q", state=42))  # type: ignore[arg-type]
    assert job.state is JobState.UNSPECIFIED
    assert JobState(42) is JobState.UNSPECIFIED


@pytest.mark.parametrize(
    ("state", "finished"),
    [
        (JobState.UNSPECIFIED, False),
        (JobState.PENDING, False),
        (JobState.UNDERWAY, False),
        (JobState.SUCCEEDED, True),
        (JobState.FAILED, True),
        (JobState.CANCELLED, True),
    ],
)
def test_finished(state: JobState, finished: bool) -> None:
    assert state.finished is finished


# Job ---------------------------------------------------------------------------------------


def test_job_from_full_proto() -> None:
    msg = pb.Job(
        id="01J0",
        queue="emails",
        payload=b"\x00\x01",
        priority=-3,
        state=pb.JOB_STATE_FAILED,
        headers={"traceparent": "00-abc"},
        attempt=2,
        submit_time=_ts(1_700_000_000),
        dispatch_time=_ts(1_700_000_010, 500_000_000),
        first_dispatch_time=_ts(1_700_000_001),
        finish_time=_ts(1_700_000_020),
        lease_expire_time=_ts(1_700_000_030),
        result=b"partial",
        error=pb.JobError(message="boom", retryable=False, code="ValueError"),
        worker_id="w-1",
        content_type="application/json",
    )
    job = Job.from_proto(msg)
    assert job == Job(
        id="01J0",
        queue="emails",
        payload=b"\x00\x01",
        priority=-3,
        state=JobState.FAILED,
        headers={"traceparent": "00-abc"},
        attempt=2,
        content_type="application/json",
        submit_time=datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC),
        dispatch_time=datetime.datetime(2023, 11, 14, 22, 13, 30, 500_000, tzinfo=UTC),
        first_dispatch_time=datetime.datetime(2023, 11, 14, 22, 13, 21, tzinfo=UTC),
        finish_time=datetime.datetime(2023, 11, 14, 22, 13, 40, tzinfo=UTC),
        lease_expire_time=datetime.datetime(2023, 11, 14, 22, 13, 50, tzinfo=UTC),
        result=b"partial",
        error=JobError(message="boom", retryable=False, code="ValueError"),
        worker_id="w-1",
    )
    assert job.submit_time is not None
    assert job.submit_time.utcoffset() == datetime.timedelta(0)
    assert isinstance(job.headers, dict)


def test_unset_proto_fields_become_none() -> None:
    job = Job.from_proto(pb.Job(id="j", queue="q", state=pb.JOB_STATE_PENDING))
    assert job.state is JobState.PENDING
    assert job.submit_time is None
    assert job.dispatch_time is None
    assert job.first_dispatch_time is None
    assert job.finish_time is None
    assert job.lease_expire_time is None
    assert job.error is None
    assert job.payload == b""
    assert job.headers == {}


def test_epoch_timestamp_that_is_set_is_not_none() -> None:
    job = Job.from_proto(pb.Job(id="j", queue="q", submit_time=_ts(0)))
    assert job.submit_time == datetime.datetime(1970, 1, 1, tzinfo=UTC)


def test_job_error_round_trip() -> None:
    err = JobError(message="m", retryable=False, code="C")
    assert JobError.from_proto(err.to_proto()) == err
    assert JobError("x") == JobError(message="x", retryable=True, code="")


def test_received_job_from_delivery_prefers_the_delivery_lease_time() -> None:
    delivery = pb.Delivery(
        job=pb.Job(id="j", queue="q", payload=b"p", lease_expire_time=_ts(100)),
        lease_id="lease-1",
        lease_expire_time=_ts(200),
    )
    received = ReceivedJob.from_delivery(delivery)
    assert isinstance(received, Job)
    assert received.lease_id == "lease-1"
    assert received.lease_expire_time == datetime.datetime.fromtimestamp(200, UTC)
    assert received.payload == b"p"
    assert not received.is_cancelled
    received.cancelled.set()
    assert received.is_cancelled
    plain = received.as_job()
    assert type(plain) is Job
    assert plain.id == "j"


# Queue -------------------------------------------------------------------------------------


def test_queue_from_proto() -> None:
    msg = pb.Queue(
        name="q",
        width=4,
        paused=True,
        pending_count=10,
        underway_count=3,
        lease_duration=duration_pb2.Duration(seconds=30, nanos=250_000_000),
        worker_count=2,
    )
    assert Queue.from_proto(msg) == Queue(
        name="q",
        width=4,
        paused=True,
        pending_count=10,
        underway_count=3,
        lease_duration=30.25,
        worker_count=2,
    )
    assert Queue.from_proto(pb.Queue(name="q")).lease_duration == 0.0


def test_queue_http_target_round_trip_never_carries_the_secret_back() -> None:
    target = HttpTarget(
        url="https://h/x",
        method="PUT",
        headers={"A": "b"},
        timeout=2.5,
        success_codes=(200, 204),
        signing_secret="s",
    )
    sent = target.to_proto()
    assert (sent.signing_secret, sent.timeout.seconds, sent.timeout.nanos) == ("s", 2, 500_000_000)
    answer = pb.Queue(name="q", http_target=sent)
    answer.http_target.signing_secret = ""  # what the server does
    answer.http_target.signing_enabled = True
    got = Queue.from_proto(answer).http_target
    assert got == HttpTarget(
        url="https://h/x",
        method="PUT",
        headers={"A": "b"},
        timeout=2.5,
        success_codes=(200, 204),
        signing_enabled=True,
    )
    assert Queue.from_proto(pb.Queue(name="q")).http_target is None


def test_update_queue_sets_or_clears_the_http_target() -> None:
    queue = pb.Queue(name="q")
    assert apply_queue_changes(queue, {"http_target": HttpTarget(url="http://h/")}) == [
        "http_target"
    ]
    assert queue.http_target.url == "http://h/"
    cleared = pb.Queue(name="q")
    assert apply_queue_changes(cleared, {"http_target": None}) == ["http_target"]
    assert not cleared.HasField("http_target")


# Request building ---------------------------------------------------------------------------


def test_str_payload_is_utf8_text() -> None:
    spec = rq.job_spec("q", "héllo")
    assert spec.payload == "héllo".encode()
    assert spec.content_type == "text/plain; charset=utf-8"
    assert rq.job_spec("q", "{}", content_type="application/json").content_type == (
        "application/json"
    )
    assert rq.job_spec("q", b"raw").content_type == ""


def test_submit_batch_accepts_new_jobs_and_specs() -> None:
    rpc = rq.submit_batch([NewJob("a", "x", priority=2), pb.JobSpec(queue="b", payload=b"y")])
    assert isinstance(rpc.request, pb.SubmitBatchRequest)
    assert [(s.queue, s.payload, s.priority) for s in rpc.request.jobs] == [
        ("a", b"x", 2),
        ("b", b"y", 0),
    ]
    assert not rpc.idempotent


def test_wait_sets_server_timeout_and_a_longer_deadline() -> None:
    rpc = rq.wait_job("j", 2.5)
    assert isinstance(rpc.request, pb.WaitJobRequest)
    assert rpc.request.timeout.ToTimedelta() == datetime.timedelta(seconds=2.5)
    assert rpc.deadline(30.0) == pytest.approx(7.5)
    unbounded = rq.wait_job("j", None)
    assert isinstance(unbounded.request, pb.WaitJobRequest)
    assert not unbounded.request.HasField("timeout")
    assert unbounded.deadline(30.0) == pytest.approx(3605.0)
    with pytest.raises(ValueError, match="timeout"):
        rq.wait_job("j", -1)


def test_update_queue_mask_names_only_given_settings() -> None:
    rpc = rq.update_queue("q", width=None, paused=True, lease_duration=None, create=True)
    assert isinstance(rpc.request, pb.UpdateQueueRequest)
    assert list(rpc.request.update_mask.paths) == ["paused"]
    assert rpc.request.allow_missing
    assert rpc.request.queue.paused
    with pytest.raises(ValueError, match="at least one"):
        rq.update_queue("q", width=None, paused=None, lease_duration=None, create=False)


def test_resume_width_is_optional() -> None:
    without = rq.resume_queue("q", None).request
    with_zero = rq.resume_queue("q", 0).request
    assert isinstance(without, pb.ResumeQueueRequest)
    assert isinstance(with_zero, pb.ResumeQueueRequest)
    assert not without.HasField("width")
    assert with_zero.HasField("width")


def test_only_reads_are_idempotent() -> None:
    reads: list[rq.Rpc[Any]] = [
        rq.get_job("j"),
        rq.wait_job("j", 1),
        rq.list_jobs_page("q", None, 100, ""),
        rq.get_queue("q"),
        rq.list_queues(),
    ]
    writes: list[rq.Rpc[Any]] = [
        rq.submit("q", b"", priority=0, headers=None, content_type=""),
        rq.cancel_job("j"),
        rq.reprioritize_job("j", 1),
        rq.pause_queue("q"),
        rq.resume_queue("q", None),
        rq.drain(None),
    ]
    assert all(r.idempotent for r in reads)
    assert not any(w.idempotent for w in writes)


def test_backoff_delay_doubles_with_jitter_and_cap() -> None:
    for attempt in range(6):
        nominal = 0.05 * 2**attempt
        assert nominal / 2 <= rq.backoff_delay(attempt, base=0.05) <= nominal
    assert rq.backoff_delay(50, base=0.1, cap=5.0) <= 5.0


# Errors ------------------------------------------------------------------------------------

_MAPPING = [
    (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
    (grpc.StatusCode.NOT_FOUND, NotFound),
    (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
    (grpc.StatusCode.UNAVAILABLE, Unavailable),
    (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
    (grpc.StatusCode.ALREADY_EXISTS, AlreadyExists),
    (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
    (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
    (grpc.StatusCode.INTERNAL, Internal),
]


@pytest.mark.parametrize(("code", "cls"), _MAPPING)
def test_sync_rpc_error_maps_to_subclass(code: grpc.StatusCode, cls: type[DispatchdError]) -> None:
    err = from_rpc_error(_SyncRpcError(code, "what happened"))
    assert type(err) is cls
    assert err.code is code
    assert err.details == "what happened"
    assert str(err) == f"{code.name}: what happened"


@pytest.mark.parametrize(("code", "cls"), _MAPPING)
def test_aio_rpc_error_maps_to_subclass(code: grpc.StatusCode, cls: type[DispatchdError]) -> None:
    aio_err = grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="d", debug_error_string=None
    )
    err = from_rpc_error(aio_err)
    assert type(err) is cls
    assert (err.code, err.details) == (code, "d")


def test_unmapped_codes_and_bare_errors_use_the_root_class() -> None:
    err = from_rpc_error(
        grpc.aio.AioRpcError(
            grpc.StatusCode.CANCELLED, grpc.aio.Metadata(), grpc.aio.Metadata(), None, None
        )
    )
    assert type(err) is DispatchdError
    assert err.details == ""
    assert str(err) == "CANCELLED"
    bare = from_rpc_error(grpc.RpcError())
    assert type(bare) is DispatchdError
    assert bare.code is grpc.StatusCode.UNKNOWN


def test_dispatchd_errors_are_catchable_as_the_root() -> None:
    with pytest.raises(DispatchdError) as info:
        raise from_rpc_error(_SyncRpcError(grpc.StatusCode.NOT_FOUND, "job x"))
    assert isinstance(info.value, NotFound)


# Worker outcome conversion -------------------------------------------------------------------


def test_handler_outputs_become_bytes() -> None:
    assert to_output(None) == b""
    assert to_output("é") == "é".encode()
    assert to_output(bytearray(b"ab")) == b"ab"
    with pytest.raises(TypeError, match="int"):
        to_output(3)


def test_handler_exceptions_become_job_errors() -> None:
    assert error_from_exception(ValueError("bad")) == JobError("bad", True, "ValueError")
    assert error_from_exception(PermanentError("nope")) == JobError("nope", False, "PermanentError")

    class Invalid(PermanentError):
        pass

    assert error_from_exception(Invalid("x")) == JobError("x", False, "Invalid")


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(0, 0), (0, 999), (1, 1_000), (1_700_000_000, 123_456_789), (4_102_444_800, 999_999_999)],
)
def test_job_times_match_protobufs_own_conversion(seconds: int, nanos: int) -> None:
    """The client converts timestamps itself (faster); the result must be exactly what
    Timestamp.ToDatetime(tzinfo=UTC) gives, nanoseconds cut to microseconds."""
    ts = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    job = Job.from_proto(pb.Job(id="j", queue="q", submit_time=ts))
    expected = ts.ToDatetime(tzinfo=datetime.UTC)
    assert job.submit_time == expected
    assert job.submit_time is not None
    assert job.submit_time.utcoffset() == expected.utcoffset()


def test_throttle_settings_round_trip() -> None:
    from dispatchd_client import AdaptiveRate, KeyLimits, Queue, RateWindow

    queue = pb.Queue(name="q")
    limits = KeyLimits(per_key_windows=(RateWindow(5, 60.0),))
    paths = apply_queue_changes(
        queue,
        {
            "adaptive": AdaptiveRate(2.0, 0.8, 1.0, 3.0),
            "windows": [RateWindow(500, 60.0), RateWindow(20_000, 86_400.0)],
            "key_limits": limits,
            "max_throttle_bounces": 7,
        },
    )
    assert paths == ["adaptive", "key_limits", "max_throttle_bounces", "windows"]
    back = Queue.from_proto(queue)
    assert back.adaptive == AdaptiveRate(2.0, 0.8, 1.0, 3.0)
    assert [(w.limit, w.period) for w in back.windows] == [(500, 60.0), (20_000, 86_400.0)]
    assert back.key_limits == limits
    assert back.max_throttle_bounces == 7
