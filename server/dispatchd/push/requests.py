"""What one push attempt sends: method, URL, headers and body, signed when asked.

Pure functions of the target, the job and the time, so tests check them with numbers.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from dispatchd.engine import HttpTarget, JobRecord
from dispatchd.engine.targets import HEADER_NAME, RESERVED_HEADERS, RESERVED_PREFIX
from dispatchd.push.errors import InvalidJobHeader

JOB_ID_HEADER = "X-Dispatchd-Job-Id"
ATTEMPT_HEADER = "X-Dispatchd-Attempt"
QUEUE_HEADER = "X-Dispatchd-Queue"
SIGNATURE_HEADER = "X-Dispatchd-Signature"
# Trace context belongs to the job: a target header may not replace it.
TRACE_HEADERS = ("traceparent", "tracestate")
DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class PushRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Dispatchd-Signature value: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of
    "<t>." + body under the secret>``. The timestamp inside the MAC lets the endpoint
    refuse replays of an old call."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def _job_headers(job: JobRecord) -> dict[str, tuple[str, str]]:
    """The job's headers keyed by lower-case name. Names the server sets itself are left
    out; one that HTTP cannot carry fails the attempt (it would fail every attempt)."""
    out: dict[str, tuple[str, str]] = {}
    for name, value in job.headers.items():
        low = name.lower()
        if low in RESERVED_HEADERS or low.startswith(RESERVED_PREFIX) or low == "content-type":
            continue
        if not HEADER_NAME.fullmatch(name):
            raise InvalidJobHeader(f"job header {name!r} is not a valid HTTP header name")
        if any(c in value for c in "\r\n\x00"):
            raise InvalidJobHeader(f"the value of job header {name!r} contains CR, LF or NUL")
        out[low] = (name, value)
    return out


def build_request(target: HttpTarget, job: JobRecord, now: float) -> PushRequest:
    """Headers, later ones winning: the job's, the target's, the job's trace context, then
    Content-Type (the job's content_type, else a target header, else octet-stream) and
    the X-Dispatchd-* headers."""
    merged = _job_headers(job)
    for name, value in target.headers:
        merged[name.lower()] = (name, value)
    for name in TRACE_HEADERS:
        for key, value in job.headers.items():
            if key.lower() == name:
                merged[name] = (key, value)
    if job.content_type:
        merged["content-type"] = ("Content-Type", job.content_type)
    elif "content-type" not in merged and job.payload:
        merged["content-type"] = ("Content-Type", DEFAULT_CONTENT_TYPE)
    headers = dict(merged.values())
    headers[JOB_ID_HEADER] = job.id
    headers[ATTEMPT_HEADER] = str(job.attempt)
    headers[QUEUE_HEADER] = job.queue
    if target.signing_secret:
        headers[SIGNATURE_HEADER] = signature(target.signing_secret, int(now), job.payload)
    return PushRequest(target.method, target.url, headers, job.payload)
