"""Bounds the engine enforces, and the validation of names and sizes against them."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from dispatchd.engine.addresses import AddressPolicy
from dispatchd.engine.errors import InvalidArgument, NotFound, ResourceExhausted
from dispatchd.engine.model import JobFailure, NewJob
from dispatchd.engine.policies import KeyLimits, Rate, RetryPolicy
from dispatchd.engine.targets import HttpTarget

MAX_KEY_CHARS = 256
#: Job header names the server keeps for itself, in any case: a client may not set them.
RESERVED_HEADER_PREFIX = "dispatchd-"
#: The one reserved header a job carries: stamped by the server on every job submitted
#: while auth is on (a client's own value of exactly this name is overwritten there).
SUBMITTER_HEADER = "dispatchd-submitter"
QUEUE_POLICY_TYPES: dict[str, type | tuple[type, ...]] = {
    "rate": (Rate, type(None)),
    "retry_policy": (RetryPolicy, type(None)),
    "key_limits": (KeyLimits, type(None)),
    "max_pending": int,
    "dedup_window": float,
    "http_target": (HttpTarget, type(None)),
}

_QUEUE_NAME = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """Every bound in one place; the server fills it from its config."""

    max_payload_bytes: int = 1 << 20
    """Cap on a job payload and on a worker's result, in bytes."""
    default_width: int = 10
    """Width of a queue created on first use."""
    default_lease_seconds: float = 30.0
    """Lease duration of a queue created on first use."""
    max_batch_jobs: int = 10_000
    """Most jobs in one SubmitBatch."""
    max_batch_bytes: int = 16 << 20
    """Cap on the payloads of one SubmitBatch together (max_payload_bytes if larger)."""
    max_headers: int = 64
    """Most headers on one job."""
    max_header_bytes: int = 16 * 1024
    """Cap on the total size of one job's header keys and values."""
    max_content_type_bytes: int = 256
    """Cap on a job's content type."""
    finished_retention_seconds: float = 3600.0
    """How long finished jobs stay readable by GetJob and WaitJob."""
    max_finished_jobs: int = 100_000
    """Most finished jobs kept; the oldest go first beyond it."""
    max_in_flight_per_worker: int = 10_000
    """Largest credit a worker may grant."""
    max_queues_per_worker: int = 100
    """Most queues one worker stream may serve."""
    min_lease_seconds: float = 1.0
    max_lease_seconds: float = 3600.0
    max_retry_after_seconds: float = 86_400.0
    """Cap on a failure's retry_after (an endpoint's Retry-After)."""
    http_addresses: AddressPolicy = field(default_factory=AddressPolicy)
    """Which addresses an HTTP target may reach (public ones, and --http-allow-cidr)."""


def check_queue_name(name: str) -> None:
    if not name:
        raise InvalidArgument("queue name is empty; use 1-128 characters of [A-Za-z0-9._:-]")
    if len(name) > 128:
        raise InvalidArgument(f"queue name is {len(name)} characters long; the limit is 128")
    if not _QUEUE_NAME.fullmatch(name):
        raise InvalidArgument(f"queue name {name!r} has characters outside [A-Za-z0-9._:-]")


MAX_HOLDER_CHARS = 256

#: Caps on a failure's message and code as a worker or an HTTP target reports them: the
#: error stays on the job (and each attempt), goes into GetJob answers and log lines, so
#: it is cut rather than kept whole. Results have --max-payload-bytes.
MAX_ERROR_MESSAGE_BYTES = 4096
MAX_ERROR_CODE_CHARS = 128
_MARKER = " [cut: {} bytes in all]"
_MARKER_ROOM = 40  # more than the marker takes, for any size a message can have


def capped_failure(
    message: str, retryable: bool = True, code: str = "", retry_after: float | None = None
) -> JobFailure:
    """A failure with ``message`` and ``code`` cut to their caps. A cut message ends with
    a marker saying how long it was; a result is never refused for its error text."""
    # A str of at most cap/4 characters cannot take more than cap bytes in UTF-8.
    if len(message) > MAX_ERROR_MESSAGE_BYTES // 4:
        data = message.encode()
        if len(data) > MAX_ERROR_MESSAGE_BYTES:
            kept = data[: MAX_ERROR_MESSAGE_BYTES - _MARKER_ROOM].decode(errors="ignore")
            message = kept + _MARKER.format(len(data))
    if len(code) > MAX_ERROR_CODE_CHARS:
        code = code[:MAX_ERROR_CODE_CHARS]
    return JobFailure(message, retryable, code, retry_after)


def check_slot_ttl(ttl: float) -> None:
    if not 1.0 <= ttl <= 3600.0:
        raise InvalidArgument(f"ttl must be between 1 s and 1 h, got {ttl:g} s")


def check_slot_request(queue: str, holder: str, ttl: float) -> None:
    """An AcquireSlot's arguments, the same on every backend."""
    check_queue_name(queue)
    if len(holder) > MAX_HOLDER_CHARS:
        raise InvalidArgument(
            f"holder is {len(holder)} characters; the limit is {MAX_HOLDER_CHARS}"
        )
    check_slot_ttl(ttl)


def check_width(width: int) -> None:
    if width < 0:
        raise InvalidArgument(f"width must be 0 or more, got {width}")


def not_found_job(job_id: str) -> NotFound:
    return NotFound(f"job {job_id!r} does not exist or is no longer retained")


def check_queue_policies(policies: dict[str, object]) -> None:
    for name, value in policies.items():
        kind = QUEUE_POLICY_TYPES.get(name)
        if kind is None:
            raise InvalidArgument(f"unknown queue setting {name!r}")
        if not isinstance(value, kind):
            raise InvalidArgument(f"queue setting {name} has the wrong type")
    max_pending = policies.get("max_pending")
    if isinstance(max_pending, int) and not 0 <= max_pending <= 1_000_000_000:
        raise InvalidArgument(f"max_pending must be 0 (no bound) or more, got {max_pending}")
    window = policies.get("dedup_window")
    if isinstance(window, float) and not 0 <= window <= 7 * 86_400:
        raise InvalidArgument(f"dedup_window must be 0 s to 7 days, got {window:g} s")


def check_lease_seconds(seconds: float, limits: EngineLimits) -> None:
    if not limits.min_lease_seconds <= seconds <= limits.max_lease_seconds:
        raise InvalidArgument(
            f"lease_duration must be between {limits.min_lease_seconds:g} s and "
            f"{limits.max_lease_seconds:g} s, got {seconds:g} s"
        )


def check_new_job(spec: NewJob, limits: EngineLimits, index: int | None = None) -> None:
    """Raises for the first thing wrong with ``spec``; ``index`` names it inside a batch.

    Runs for every submitted job, so the checks of fields most jobs leave empty (headers,
    keys, times) are skipped when they are empty."""
    try:
        check_queue_name(spec.queue)
    except InvalidArgument as e:
        raise InvalidArgument(f"{_where(index)}{e}") from None
    if len(spec.payload) > limits.max_payload_bytes:
        raise ResourceExhausted(
            f"{_where(index)}payload is {len(spec.payload)} bytes; the limit is "
            f"{limits.max_payload_bytes} bytes (--max-payload-bytes)"
        )
    if spec.headers:
        _check_headers(spec.headers, limits, index)
    if spec.ordering_key or spec.fairness_key or spec.idempotency_key:
        for name in ("ordering_key", "fairness_key", "idempotency_key"):
            value: str = getattr(spec, name)
            if len(value) > MAX_KEY_CHARS:
                raise InvalidArgument(
                    f"{_where(index)}{name} is {len(value)} characters; "
                    f"the limit is {MAX_KEY_CHARS}"
                )
    if not 0 <= spec.fairness_weight <= 1000:
        raise InvalidArgument(
            f"{_where(index)}fairness_weight must be 0-1000, got {spec.fairness_weight}"
        )
    if spec.not_before is not None or spec.expire_at is not None:
        for name in ("not_before", "expire_at"):
            t: float | None = getattr(spec, name)
            if t is not None and not (math.isfinite(t) and 0 <= t < 1e11):
                raise InvalidArgument(f"{_where(index)}{name} is not a usable time")
    if len(spec.content_type) > limits.max_content_type_bytes:
        raise InvalidArgument(
            f"{_where(index)}content_type is {len(spec.content_type)} characters; "
            f"the limit is {limits.max_content_type_bytes}"
        )


def check_batch(specs: Sequence[NewJob], limits: EngineLimits) -> None:
    """A submit's jobs, all checked before any is admitted; messages name the index of
    the offending job when there is more than one."""
    if not specs:
        raise InvalidArgument("no jobs given")
    if len(specs) > limits.max_batch_jobs:
        raise InvalidArgument(
            f"{len(specs)} jobs in one batch; the limit is {limits.max_batch_jobs}"
        )
    many = len(specs) > 1
    for i, spec in enumerate(specs):
        check_new_job(spec, limits, i if many else None)
    if many:
        total = sum(len(spec.payload) for spec in specs)
        bound = max(limits.max_batch_bytes, limits.max_payload_bytes)
        if total > bound:
            raise ResourceExhausted(
                f"the batch's payloads take {total} bytes; the limit is {bound} bytes "
                "(--max-batch-bytes): submit it in smaller batches"
            )


def _check_headers(headers: dict[str, str], limits: EngineLimits, index: int | None) -> None:
    if len(headers) > limits.max_headers:
        raise InvalidArgument(
            f"{_where(index)}{len(headers)} headers; the limit is {limits.max_headers}"
        )
    header_bytes = sum(len(k) + len(v) for k, v in headers.items())
    if header_bytes > limits.max_header_bytes:
        raise InvalidArgument(
            f"{_where(index)}headers take {header_bytes} bytes; "
            f"the limit is {limits.max_header_bytes}"
        )
    for k in headers:
        if not k:
            raise InvalidArgument(f"{_where(index)}a header has an empty name")
        if k[: len(RESERVED_HEADER_PREFIX)].lower() == RESERVED_HEADER_PREFIX and (
            k != SUBMITTER_HEADER
        ):
            raise InvalidArgument(
                f"{_where(index)}header {k!r}: names starting with {RESERVED_HEADER_PREFIX!r} "
                "(in any case) are reserved for the server"
            )


def _where(index: int | None) -> str:
    """Names the job inside a batch in an error message (made only when one is raised)."""
    return "" if index is None else f"jobs[{index}]: "
