"""A failure's message and code are cut to their caps where they enter the server."""

from __future__ import annotations

from dispatchd.engine import HttpTarget, JobFailure
from dispatchd.engine.limits import (
    MAX_ERROR_CODE_CHARS,
    MAX_ERROR_MESSAGE_BYTES,
    capped_failure,
)
from dispatchd.push.outcomes import classify_response, connection_failure
from dispatchd.service.work_protocol import outcome
from dispatchd_client.v1 import dispatcher_pb2 as pb


def test_short_errors_are_kept_as_they_are() -> None:
    assert capped_failure("boom", False, "E1", 2.0) == JobFailure("boom", False, "E1", 2.0)
    exact = "x" * MAX_ERROR_MESSAGE_BYTES
    assert capped_failure(exact).message == exact


def test_a_long_message_is_cut_on_a_character_boundary_with_a_marker() -> None:
    text = "é" * MAX_ERROR_MESSAGE_BYTES  # two bytes each in UTF-8
    failure = capped_failure(text, code="C" * 1000)
    data = failure.message.encode()  # decodes: no character was cut in half
    assert len(data) <= MAX_ERROR_MESSAGE_BYTES
    assert failure.message.startswith("éé")
    assert failure.message.endswith(f"[cut: {2 * MAX_ERROR_MESSAGE_BYTES} bytes in all]")
    assert failure.code == "C" * MAX_ERROR_CODE_CHARS


def test_worker_results_and_http_failures_are_capped() -> None:
    result = pb.JobResult(error=pb.JobError(message="m" * 100_000, code="c" * 500))
    failure = outcome(result)
    assert isinstance(failure, JobFailure)
    assert len(failure.message) <= MAX_ERROR_MESSAGE_BYTES
    assert len(failure.code) == MAX_ERROR_CODE_CHARS
    assert outcome(pb.JobResult(output=b"ok")) == b"ok"
    long_error = connection_failure(OSError("x" * 100_000))
    assert len(long_error.message) <= MAX_ERROR_MESSAGE_BYTES
    target = HttpTarget.of("https://example.com/")
    refused = classify_response(target, 400, b"y" * 100_000, None, 0.0)
    assert isinstance(refused, JobFailure)
    assert len(refused.message) <= MAX_ERROR_MESSAGE_BYTES
