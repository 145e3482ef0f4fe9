"""Structured errors without a server: the engine's field paths and reasons, the one place
that packs them (service/errors.py), the client's reading of them, and the coalescers'
culprit rule that uses them instead of message text."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from dispatchd.engine import EngineLimits, NewJob
from dispatchd.engine import limits as lim
from dispatchd.engine.errors import InvalidArgument, Reason, ResourceExhausted
from dispatchd.service.errors import queue_field, rich_status, single_job_field
from dispatchd_client import _batching
from dispatchd_client.errors import DETAILS_KEY, DispatchdError, facts_of, from_rpc_error

DOCS = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
LIMITS = EngineLimits()


def test_a_batch_error_names_the_job_in_its_field_and_message() -> None:
    jobs = [NewJob(queue="a"), NewJob(queue="b c"), NewJob(queue="d")]
    with pytest.raises(InvalidArgument) as info:
        lim.check_batch(jobs, LIMITS)
    assert info.value.field == "jobs[1].queue"
    assert str(info.value).startswith("jobs[1]: queue name 'b c'")
    with pytest.raises(InvalidArgument) as info:
        lim.check_batch([NewJob(queue="b c")], LIMITS)
    assert info.value.field == "jobs[0].queue"  # one job: the path still names it,
    assert not str(info.value).startswith("jobs[")  # the message does not


def test_payload_too_large_is_its_own_reason() -> None:
    big = NewJob(queue="q", payload=b"x" * (LIMITS.max_payload_bytes + 1))
    with pytest.raises(ResourceExhausted) as info:
        lim.check_batch([NewJob(queue="q"), big], LIMITS)
    assert (info.value.field, info.value.reason) == ("jobs[1].payload", Reason.PAYLOAD_TOO_LARGE)
    assert info.value.retry_after is None


def test_under_roots_fields_and_leaves_fieldless_errors_alone() -> None:
    e = InvalidArgument("bad", field="queues[2]")
    assert e.under("hello").field == "hello.queues[2]"
    assert InvalidArgument("bad", field="[1]").under("jobs").field == "jobs[1]"
    assert InvalidArgument("no field").under("hello").field == ""
    assert str(e.under("hello", label=True)) == "hello: bad"


def test_request_roots_for_submit_and_update_queue() -> None:
    assert single_job_field("jobs[0].queue") == "job.queue"
    assert single_job_field("jobs[0]") == "job"
    assert single_job_field("jobs") == "jobs"
    assert queue_field("width") == "queue.width"
    assert queue_field("rate.per_second") == "queue.rate.per_second"
    assert queue_field("update_mask") == "update_mask"


def _details(status: grpc.Status) -> status_pb2.Status:
    ((key, raw),) = status.trailing_metadata
    assert key == DETAILS_KEY
    assert isinstance(raw, bytes)
    return status_pb2.Status.FromString(raw)


def test_rich_status_packs_info_violation_and_retry() -> None:
    error = lim.queue_full("mail", 10, 2, 10)
    status = rich_status(error)
    assert status.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status.details == str(error)
    packed = _details(status)
    assert (packed.code, packed.message) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
        str(error),
    )
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert packed.details[0].Unpack(info)
    assert (info.reason, info.domain) == ("QUEUE_FULL", "dispatchd.dev")
    assert dict(info.metadata) == {"queue": "mail", "max_pending": "10", "waiting": "10"}
    assert packed.details[1].Unpack(retry)
    assert retry.retry_delay.ToTimedelta().total_seconds() == 1.0
    bad = error_details_pb2.BadRequest()
    field_error = InvalidArgument("width must be 0 or more", field="width")
    assert _details(rich_status(field_error, queue_field)).details[1].Unpack(bad)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("queue.width", "width must be 0 or more")
    ]


class FakeRpcError(grpc.RpcError):
    """What a failed call looks like to the client's error mapping."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: Any) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailing


def test_the_client_reads_what_the_server_packs() -> None:
    error = InvalidArgument("jobs[3]: bad", field="jobs[3].queue")
    status = rich_status(error)
    got = from_rpc_error(FakeRpcError(status.code, status.details, status.trailing_metadata))
    assert (got.code, got.details, got.reason) == (status.code, "jobs[3]: bad", "INVALID_ARGUMENT")
    assert got.field_violations == [("jobs[3].queue", "jobs[3]: bad")]
    assert got.retry_delay is None
    again = got.copy()
    assert again is not got
    assert (again.reason, again.field_violations) == (got.reason, got.field_violations)


def test_the_client_ignores_details_it_cannot_trust() -> None:
    unavailable = grpc.StatusCode.UNAVAILABLE
    assert facts_of(None, unavailable).reason == ""
    assert facts_of([(DETAILS_KEY, b"\xff not a status")], unavailable).reason == ""
    other = rich_status(lim.not_found_job("j"))  # a NOT_FOUND status on an UNAVAILABLE call
    assert facts_of(other.trailing_metadata, unavailable).reason == ""
    assert facts_of(other.trailing_metadata, grpc.StatusCode.NOT_FOUND).reason == "JOB_NOT_FOUND"


def _refusal(field: str) -> DispatchdError:
    status = rich_status(InvalidArgument("bad", field=field))
    return from_rpc_error(FakeRpcError(status.code, status.details, status.trailing_metadata))


def test_the_culprit_comes_from_the_field_path_not_the_message() -> None:
    assert _batching.culprit(_refusal("jobs[2].payload"), 5) == 2
    assert _batching.culprit(_refusal("jobs[7].queue"), 5) == _batching.ONE_BY_ONE  # not ours
    assert _batching.culprit(_refusal(""), 5) == _batching.ONE_BY_ONE
    text_only = DispatchdError(grpc.StatusCode.INVALID_ARGUMENT, "jobs[1]: queue name ...")
    assert _batching.culprit(text_only, 5) == _batching.ONE_BY_ONE  # the text is not read
    assert _batching.culprit(DispatchdError(grpc.StatusCode.UNAVAILABLE, ""), 5) is None


def test_docs_list_every_reason_and_no_other() -> None:
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", DOCS.read_text(), re.MULTILINE))
    assert documented == {r.value for r in Reason}
