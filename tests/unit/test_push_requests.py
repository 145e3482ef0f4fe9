"""The pure parts of HTTP push: request headers and signature, how responses become
outcomes, Retry-After, latency buckets, and the target's wire form."""

from __future__ import annotations

import email.utils
import hashlib
import hmac

import pytest

from dispatchd import convert
from dispatchd.engine import (
    AttemptRecord,
    HttpTarget,
    JobFailure,
    JobRecord,
    JobThrottle,
    QueueSettings,
    QueueView,
    ThrottleScope,
)
from dispatchd.push import InvalidJobHeader, TargetStats
from dispatchd.push.outcomes import classify_response, retry_after_seconds
from dispatchd.push.requests import build_request, signature
from dispatchd_client.v1 import dispatcher_pb2 as pb

NOW = 1_800_000_000.0


def job(
    headers: dict[str, str] | None = None, content_type: str = "", payload: bytes = b"{}"
) -> JobRecord:
    return JobRecord(
        id="01JOB",
        queue="hooks",
        payload=payload,
        priority=0,
        headers=headers or {},
        content_type=content_type,
        seq=1,
        submit_time=0.0,
        attempt=3,
    )


def test_headers_precedence_and_server_headers() -> None:
    target = HttpTarget.of(
        "https://h/x", headers={"Authorization": "Bearer q", "traceparent": "from-target"}
    )
    request = build_request(
        target,
        job(
            {
                "authorization": "from-job",
                "traceparent": "00-trace",
                "X-Tenant": "t1",
                "Host": "evil",
                "X-Dispatchd-Job-Id": "forged",
                "Content-Type": "text/plain",
            },
            content_type="application/json",
        ),
        NOW,
    )
    assert request.headers == {
        "Authorization": "Bearer q",
        "traceparent": "00-trace",
        "X-Tenant": "t1",
        "Content-Type": "application/json",
        "X-Dispatchd-Job-Id": "01JOB",
        "X-Dispatchd-Attempt": "3",
        "X-Dispatchd-Queue": "hooks",
    }
    assert (request.method, request.url, request.body) == ("POST", "https://h/x", b"{}")


def test_content_type_falls_back_to_the_target_then_octet_stream() -> None:
    plain = HttpTarget.of("http://h/")
    assert build_request(plain, job(), NOW).headers["Content-Type"] == "application/octet-stream"
    assert "Content-Type" not in build_request(plain, job(payload=b""), NOW).headers
    typed = HttpTarget.of("http://h/", headers={"Content-Type": "application/cbor"})
    assert build_request(typed, job(), NOW).headers["Content-Type"] == "application/cbor"


@pytest.mark.parametrize(
    "headers", [{"bad name": "x"}, {"X-Ok": "line\r\nbreak"}, {"X-Nul": "a\x00b"}]
)
def test_job_headers_http_cannot_carry_fail_the_attempt(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidJobHeader):
        build_request(HttpTarget.of("http://h/"), job(headers), NOW)


def test_signature_is_an_hmac_of_timestamp_and_body() -> None:
    target = HttpTarget.of("http://h/", signing_secret="k3y")
    header = build_request(target, job(payload=b"body"), NOW + 0.7).headers["X-Dispatchd-Signature"]
    t = int(NOW)
    mac = hmac.new(b"k3y", f"{t}.body".encode(), hashlib.sha256).hexdigest()
    assert header == f"t={t},v1={mac}"
    assert signature("k3y", t, b"body") == header
    assert signature("other", t, b"body") != header


@pytest.mark.parametrize(
    ("status", "retryable", "code"),
    [
        (400, False, "HTTP_400"),
        (404, False, "HTTP_404"),
        (408, False, "HTTP_408"),
        (500, True, "HTTP_500"),
        (503, True, "HTTP_503"),
        (302, False, "HTTP_302"),
    ],
)
def test_failures_by_status(status: int, retryable: bool, code: str) -> None:
    outcome = classify_response(HttpTarget.of("http://h/"), status, b"why", None, NOW)
    assert isinstance(outcome, JobFailure)
    assert (outcome.retryable, outcome.code, outcome.retry_after) == (retryable, code, None)
    assert outcome.message.startswith(f"HTTP {status}")
    assert outcome.message.endswith(": why")


def test_success_codes_decide_success() -> None:
    assert classify_response(HttpTarget.of("http://h/"), 204, b"", None, NOW) == b""
    accepted = HttpTarget.of("http://h/", success_codes=[202], keep_response_body=True)
    assert classify_response(accepted, 202, b"queued", None, NOW) == b"queued"
    assert isinstance(classify_response(accepted, 200, b"", None, NOW), JobFailure)
    dropped = HttpTarget.of("http://h/", success_codes=[202])
    assert classify_response(dropped, 202, b"queued", None, NOW) == b""  # unless asked


def test_429_and_503_with_retry_after_are_throttle_signals_for_the_queue() -> None:
    target = HttpTarget.of("http://h/")
    for status in (429, 503):
        outcome = classify_response(target, status, b"slow down", "7", NOW)
        assert isinstance(outcome, JobThrottle)
        assert (outcome.delay, outcome.scope) == (7.0, ThrottleScope.QUEUE)
        assert outcome.reason.startswith(f"HTTP {status}")
    # A 429 without a word on when: a short hold; a 503 without one: the target is down.
    assert classify_response(target, 429, b"", None, NOW) == JobThrottle(
        1.0, ThrottleScope.QUEUE, "HTTP 429 Too Many Requests"
    )
    down = classify_response(target, 503, b"", None, NOW)
    assert isinstance(down, JobFailure)
    assert (down.retryable, down.code) == (True, "HTTP_503")
    # A day's Retry-After is capped; another status's Retry-After means nothing.
    capped = classify_response(target, 429, b"", "86400", NOW)
    assert isinstance(capped, JobThrottle)
    assert capped.delay == 3600.0
    outcome = classify_response(target, 500, b"", "7", NOW)
    assert isinstance(outcome, JobFailure)
    assert outcome.retry_after is None


def test_retry_after_forms() -> None:
    assert retry_after_seconds("120", NOW) == 120.0
    assert retry_after_seconds(" 0 ", NOW) == 0.0
    date = email.utils.formatdate(NOW + 90, usegmt=True)
    assert retry_after_seconds(date, NOW) == 90.0
    past = email.utils.formatdate(NOW - 90, usegmt=True)
    assert retry_after_seconds(past, NOW) == 0.0
    for unreadable in (None, "", "soon", "-5", "1.5"):
        assert retry_after_seconds(unreadable, NOW) is None


def test_latency_buckets() -> None:
    stats = TargetStats()
    for latency in (0.001, 0.005, 0.3, 700.0):
        stats.record("2xx", latency, truncated=False, stale=False)
    stats.record("timeout", None, truncated=False, stale=True)
    cumulative = dict(stats.cumulative_buckets())
    assert (cumulative[0.005], cumulative[0.25], cumulative[0.5], cumulative[600.0]) == (2, 2, 3, 3)
    assert cumulative[float("inf")] == stats.latency_count == 4
    assert stats.outcomes == {"2xx": 4, "timeout": 1}
    assert stats.stale == 1


def test_wire_form_keeps_the_secret_in_storage_only() -> None:
    target = HttpTarget.of("https://h/", "PATCH", {"A": "b"}, 2.5, [200, 201], "s3cret")
    settings = QueueSettings(width=3, http_target=target)
    stored = convert.settings_to_pb("q", settings)
    assert stored.http_target.signing_secret == "s3cret"
    assert convert.settings_from_pb(stored) == settings
    shown = convert.queue_to_pb(QueueView("q", settings, 0, 0, 0))
    assert shown.http_target.signing_secret == ""
    assert shown.http_target.signing_enabled
    assert (shown.http_target.method, list(shown.http_target.success_codes)) == (
        "PATCH",
        [200, 201],
    )


def test_unset_wire_fields_take_defaults() -> None:
    msg = pb.Queue(http_target=pb.HttpTarget(url="http://h/"))
    assert convert.http_target(msg) == HttpTarget("http://h/")
    assert convert.http_target(pb.Queue()) is None


def test_attempts_keep_http_status_and_latency_through_the_journal_form() -> None:
    record = job()
    record.attempts = (
        AttemptRecord(
            1, "http:hooks", 1.0, 1.5, JobFailure("HTTP 503", True, "HTTP_503"), 503, 0.5
        ),
        AttemptRecord(2, "http:hooks", 3.0, 3.25, None, 200, 0.25),
        AttemptRecord(3, "w", 4.0, 5.0, None),
    )
    back = convert.job_from_pb(convert.job_to_pb(record))
    assert back.attempts == record.attempts
