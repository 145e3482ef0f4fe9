"""How an HTTP response or a failed call becomes a job outcome.

- a status in the target's success codes (default 200-299): the job succeeds, with the
  response body (cut to the payload cap) as its result when the target has
  keep_response_body, else with an empty result;
- 429, and 503 with a Retry-After (seconds or an HTTP date): a throttle signal
  (engine/throttling.py): the job goes back to its place without counting the call as an
  attempt and the whole queue is held for the Retry-After (1 s for a 429 without one;
  capped at an hour), so the next jobs do not hit the target at once and get 429 too;
- 503 without a Retry-After: retryable (the target is down, not throttling);
- any other 4xx, and 1xx/3xx not listed as success (redirects are not followed): not
  retryable, the request itself is wrong;
- 5xx, timeouts, connection and protocol errors: retryable;
- a host with no address the server may call (TargetForbidden): not retryable.
"""

from __future__ import annotations

import datetime
import email.utils
from dataclasses import dataclass
from http import HTTPStatus

from dispatchd.engine import HttpTarget, JobFailure, Outcome
from dispatchd.engine.limits import capped_failure
from dispatchd.engine.throttling import DEFAULT_HTTP_429_SECONDS, ThrottleScope, throttle_of

RETRY_AFTER_STATUSES = frozenset({429, 503})
EXCERPT_CHARS = 200

# Stats classes of an outcome (see stats.TargetStats).
TIMEOUT = "timeout"
CONNECTION = "connection"
INVALID = "invalid"
FORBIDDEN = "forbidden"


@dataclass(frozen=True, slots=True)
class CallResult:
    """One attempt's outcome for the engine, and what the stats keep of it."""

    outcome: Outcome
    status: int
    """HTTP status; 0 when no response came."""
    latency: float
    kind: str
    """'2xx'..'5xx' (by status), 'timeout', 'connection', 'invalid' or 'forbidden'."""
    truncated: bool = False


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds from ``now`` a Retry-After value asks for, or None when it is absent or
    unreadable (then only the retry policy's backoff applies)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def classify_response(
    target: HttpTarget,
    status: int,
    body: bytes,
    retry_after: str | None,
    now: float,
) -> Outcome:
    if target.is_success(status):
        return body if target.keep_response_body else b""
    excerpt = body[:EXCERPT_CHARS].decode(errors="replace")
    message = f"HTTP {status} {_reason(status)}".rstrip()
    if excerpt:
        message += f": {excerpt}"
    code = f"HTTP_{status}"
    if status in RETRY_AFTER_STATUSES:
        delay = retry_after_seconds(retry_after, now)
        if delay is None and status == 429:
            delay = DEFAULT_HTTP_429_SECONDS
        if delay is not None:
            return throttle_of(delay, ThrottleScope.QUEUE, message)
        return capped_failure(message, True, code)
    return capped_failure(message, status >= 500, code)


def status_kind(status: int) -> str:
    return f"{status // 100}xx"


def timeout_failure(timeout: float) -> JobFailure:
    return JobFailure(f"no response within the target's timeout of {timeout:g} s", True, "Timeout")


def connection_failure(error: BaseException) -> JobFailure:
    """Exception texts can carry what the far end sent (a TLS alert, a protocol error):
    capped like a worker's error."""
    detail = str(error) or type(error).__name__
    return capped_failure(f"HTTP call failed: {detail}", True, type(error).__name__)


def forbidden_failure(error: BaseException) -> JobFailure:
    """The target's host leads only to addresses the server may not call: every attempt
    would fail alike, so none is retried."""
    return JobFailure(str(error), False, "TargetForbidden")
