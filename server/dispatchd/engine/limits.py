"""Bounds the engine enforces, and the validation of names and sizes against them."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from dispatchd.engine.addresses import AddressPolicy
from dispatchd.engine.errors import (
    RETRY_SECONDS,
    EngineError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Reason,
    ResourceExhausted,
)
from dispatchd.engine.model import (
    FINISHED_STATES,
    JobFailure,
    JobState,
    NewJob,
)
from dispatchd.engine.model import (
    SUBMITTER_HEADER as SUBMITTER_HEADER,
)
from dispatchd.engine.policies import AdaptiveRate, KeyLimits, Rate, RateWindow, RetryPolicy
from dispatchd.engine.targets import HttpTarget
from dispatchd.engine.throttling import check_max_bounces

MAX_KEY_CHARS = 256
#: Job header names the server keeps for itself, in any case: a client may not set them.
RESERVED_HEADER_PREFIX = "dispatchd-"
QUEUE_POLICY_TYPES: dict[str, type | tuple[type, ...]] = {
    "rate": (Rate, type(None)),
    "retry_policy": (RetryPolicy, type(None)),
    "key_limits": (KeyLimits, type(None)),
    "max_pending": int,
    "dedup_window": float,
    "http_target": (HttpTarget, type(None)),
    "max_throttle_bounces": int,
    "adaptive": (AdaptiveRate, type(None)),
    "windows": tuple,
}

_QUEUE_NAME = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Queue names and schedule ids.
QUEUE_NAME_RE = _QUEUE_NAME
#: A ULID: 26 characters of Crockford base32 (engine/ids.py makes them).
ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


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
    max_queues: int = 10_000
    """Most queues the server holds (--max-queues); creating one more is refused. 0: no
    bound."""
    max_pending_total: int = 0
    """Most jobs waiting (pending and scheduled) across every queue (--max-pending-total);
    a submit that would pass it is refused. 0: no bound."""


def check_queue_name(name: str, field: str = "name") -> None:
    """``field`` is where the caller's request holds the name (``name``, ``queue``)."""
    if not name:
        raise InvalidArgument(
            "queue name is empty; use 1-128 characters of [A-Za-z0-9._:-]", field=field
        )
    if len(name) > 128:
        raise InvalidArgument(
            f"queue name is {len(name)} characters long; the limit is 128", field=field
        )
    if not _QUEUE_NAME.fullmatch(name):
        raise InvalidArgument(
            f"queue name {name!r} has characters outside [A-Za-z0-9._:-]", field=field
        )


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
        raise InvalidArgument(f"ttl must be between 1 s and 1 h, got {ttl:g} s", field="ttl")


def check_slot_request(queue: str, holder: str, ttl: float) -> None:
    """An AcquireSlot's arguments, the same on every backend."""
    check_queue_name(queue, "queue")
    if len(holder) > MAX_HOLDER_CHARS:
        raise InvalidArgument(
            f"holder is {len(holder)} characters; the limit is {MAX_HOLDER_CHARS}", field="holder"
        )
    check_slot_ttl(ttl)


def check_credit(n: int, minimum: int, limits: EngineLimits) -> None:
    """A worker's max_in_flight (hello: at least 1; a later credit may be 0)."""
    top = limits.max_in_flight_per_worker
    if not minimum <= n <= top:
        raise InvalidArgument(
            f"max_in_flight must be between {minimum} and {top}, got {n}", field="max_in_flight"
        )


def check_hello(queues: Sequence[str], max_in_flight: int, limits: EngineLimits) -> None:
    """A worker's hello, the same on every backend (fields relative to the hello)."""
    if not queues:
        raise InvalidArgument(
            "hello names no queues; list the queues this worker serves", field="queues"
        )
    if len(queues) > limits.max_queues_per_worker:
        raise InvalidArgument(
            f"hello names {len(queues)} queues; the limit is {limits.max_queues_per_worker}",
            field="queues",
        )
    for i, name in enumerate(queues):
        check_queue_name(name, f"queues[{i}]")
    check_credit(max_in_flight, 1, limits)


def slot_not_held(slot_id: str) -> NotFound:
    return NotFound(
        f"slot {slot_id!r} is not held: it was released or it expired",
        reason=Reason.SLOT_NOT_HELD,
        metadata={"slot_id": slot_id},
    )


def check_width(width: int) -> None:
    if width < 0:
        raise InvalidArgument(f"width must be 0 or more, got {width}", field="width")


def check_job_id(job_id: str, shape: re.Pattern[str] = ULID, form: str = "a ULID") -> None:
    """A job id this server could have made; anything else is bad input, not an unknown
    job (NOT_FOUND is for ids that were right once)."""
    if not job_id:
        raise InvalidArgument("job_id is empty")
    if not shape.fullmatch(job_id):
        shown = job_id if len(job_id) <= 80 else job_id[:80] + "..."
        raise InvalidArgument(
            f"job_id {shown!r} is not a job id this server makes ({form}, as Submit returns it)"
        )


def not_found_job(job_id: str) -> NotFound:
    return NotFound(
        f"job {job_id!r} does not exist or is no longer retained",
        reason=Reason.JOB_NOT_FOUND,
        metadata={"job_id": job_id},
    )


def not_found_queue(name: str) -> NotFound:
    return NotFound(
        f"queue {name!r} does not exist",
        reason=Reason.QUEUE_NOT_FOUND,
        metadata={"queue": name},
    )


def job_finished(job_id: str, state: str, refusal: str) -> FailedPrecondition:
    """A change asked of a job that already finished (``state``); ``refusal`` adds why."""
    return FailedPrecondition(
        f"job {job_id} already finished ({state}){refusal}",
        reason=Reason.JOB_FINISHED,
        metadata={"job_id": job_id, "state": state},
    )


#: Why a finished job's priority cannot change (added to job_finished's message).
PRIORITY_IS_FINAL = "; its priority is final"


def not_reprioritizable(job_id: str, state: str) -> FailedPrecondition:
    """Only a waiting job takes a new priority: an underway one would only use it if it
    came back, and a caller who meant to hurry it would be told nothing happened."""
    return FailedPrecondition(
        f"job {job_id} is {state}; only a pending or scheduled job can be reprioritized",
        reason=Reason.JOB_UNDERWAY,
        metadata={"job_id": job_id, "state": state},
    )


def not_retryable(job_id: str, state: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"job {job_id} is {state}; only DEAD or FAILED jobs can be retried",
        reason=Reason.JOB_NOT_RETRYABLE,
        metadata={"job_id": job_id, "state": state},
    )


def queue_full(name: str, waiting: int, adding: int, bound: int) -> ResourceExhausted:
    """A submit that would pass a queue's max_pending: nothing of it was admitted."""
    return ResourceExhausted(
        f"queue {name!r} holds {waiting} waiting jobs; {adding} more would pass its "
        f"max_pending of {bound}; nothing was admitted",
        reason=Reason.QUEUE_FULL,
        retry_after=RETRY_SECONDS,
        metadata={"queue": name, "max_pending": str(bound), "waiting": str(waiting)},
    )


def too_many_queues(count: int, adding: int, bound: int) -> ResourceExhausted:
    """Creating ``adding`` queues would pass --max-queues: nothing was created or admitted."""
    return ResourceExhausted(
        f"the server holds {count} queues; {adding} more would pass --max-queues {bound}; "
        "nothing was created or admitted: use an existing queue, or delete an empty one "
        "(DeleteQueue)",
        reason=Reason.TOO_MANY_QUEUES,
        metadata={"max_queues": str(bound), "queues": str(count)},
    )


def server_full(waiting: int, adding: int, bound: int) -> ResourceExhausted:
    """A submit that would pass --max-pending-total: nothing of it was admitted."""
    return ResourceExhausted(
        f"the server holds {waiting} waiting jobs; {adding} more would pass "
        f"--max-pending-total {bound}; nothing was admitted: retry once workers have taken "
        "some",
        reason=Reason.TOO_MANY_PENDING,
        retry_after=RETRY_SECONDS,
        metadata={"max_pending_total": str(bound), "waiting": str(waiting)},
    )


#: What DeleteQueue finds in a queue that is not empty, in the words of its message.
_HOLDS = {
    "pending": ("pending job", "pending jobs"),
    "scheduled": ("scheduled job", "scheduled jobs"),
    "underway": ("underway job", "underway jobs"),
    "slots": ("slot held or requested", "slots held or requested"),
    "workers": ("connected worker", "connected workers"),
}


def queue_not_empty(name: str, holds: dict[str, int], http_target: bool) -> FailedPrecondition:
    """DeleteQueue of a queue that still has work or workers: nothing was deleted. ``holds``
    counts by the keys of _HOLDS; ``http_target``: the queue has one (its HTTP pusher is a
    connected worker of it)."""
    parts = [f"{n} {_HOLDS[k][n != 1]}" for k, n in holds.items() if n]
    hint = (
        "pause it, cancel its waiting jobs or let workers finish them, let underway jobs and "
        "slots end, stop its workers"
    )
    if http_target:
        hint += " (its http_target is served by the server's HTTP pusher: clear it first)"
    return FailedPrecondition(
        f"queue {name!r} is not empty: it has {', '.join(parts)}; nothing was deleted. To "
        f"delete it, {hint}",
        reason=Reason.QUEUE_NOT_EMPTY,
        metadata={"queue": name, **{k: str(n) for k, n in holds.items()}},
    )


def check_server_bounds(
    limits: EngineLimits, queues: int, new_queues: int, waiting: int, adding: int
) -> None:
    """--max-queues and --max-pending-total, for a change that creates ``new_queues``
    queues and admits ``adding`` waiting jobs, before it changes anything."""
    bound = limits.max_queues
    if new_queues and bound and queues + new_queues > bound:
        raise too_many_queues(queues, new_queues, bound)
    bound = limits.max_pending_total
    if adding and bound and waiting + adding > bound:
        raise server_full(waiting, adding, bound)


def check_queue_policies(policies: dict[str, object]) -> None:
    for name, value in policies.items():
        kind = QUEUE_POLICY_TYPES.get(name)
        if kind is None:
            raise InvalidArgument(f"unknown queue setting {name!r}", field=name)
        if not isinstance(value, kind):
            raise InvalidArgument(f"queue setting {name} has the wrong type", field=name)
    max_pending = policies.get("max_pending")
    if isinstance(max_pending, int) and not 0 <= max_pending <= 1_000_000_000:
        raise InvalidArgument(
            f"max_pending must be 0 (no bound) or more, got {max_pending}", field="max_pending"
        )
    windows = policies.get("windows")
    if isinstance(windows, tuple):
        if not all(isinstance(w, RateWindow) for w in windows):
            raise InvalidArgument("queue setting windows has the wrong type", field="windows")
        RateWindow.several(list(windows))
    bounces = policies.get("max_throttle_bounces")
    if isinstance(bounces, int):
        check_max_bounces(bounces)
    window = policies.get("dedup_window")
    if isinstance(window, float) and not 0 <= window <= 7 * 86_400:
        raise InvalidArgument(
            f"dedup_window must be 0 s to 7 days, got {window:g} s", field="dedup_window"
        )


def check_queue_update(
    name: str,
    width: int | None,
    lease_seconds: float | None,
    policies: dict[str, object],
    limits: EngineLimits,
) -> None:
    """An UpdateQueue's changes, checked whole before anything changes, the same on every
    backend: the name, each setting's range, and an http_target's address."""
    check_queue_name(name)
    if width is not None:
        check_width(width)
    if lease_seconds is not None:
        check_lease_seconds(lease_seconds, limits)
    check_queue_policies(policies)
    target = policies.get("http_target")
    if isinstance(target, HttpTarget):
        limits.http_addresses.check_url(target.url)


def check_purge_state(state: JobState) -> None:
    if state is not JobState.UNSPECIFIED and state not in FINISHED_STATES:
        raise InvalidArgument(
            f"state {state.name} is not a finished state; purge takes SUCCEEDED, FAILED, "
            "CANCELLED, EXPIRED, DEAD or UNSPECIFIED (all of them)",
            field="state",
        )


def check_lease_seconds(seconds: float, limits: EngineLimits) -> None:
    if not limits.min_lease_seconds <= seconds <= limits.max_lease_seconds:
        raise InvalidArgument(
            f"lease_duration must be between {limits.min_lease_seconds:g} s and "
            f"{limits.max_lease_seconds:g} s, got {seconds:g} s",
            field="lease_duration",
        )


def check_new_job(spec: NewJob, limits: EngineLimits) -> None:
    """Raises for the first thing wrong with ``spec``, naming its field (``queue``).

    Runs for every submitted job, so the checks of fields most jobs leave empty (headers,
    keys, times) are skipped when they are empty."""
    check_queue_name(spec.queue, "queue")
    if len(spec.payload) > limits.max_payload_bytes:
        raise ResourceExhausted(
            f"payload is {len(spec.payload)} bytes; the limit is "
            f"{limits.max_payload_bytes} bytes (--max-payload-bytes)",
            field="payload",
            reason=Reason.PAYLOAD_TOO_LARGE,
            metadata={"max_payload_bytes": str(limits.max_payload_bytes)},
        )
    if spec.headers:
        _check_headers(spec.headers, limits)
    if spec.ordering_key or spec.fairness_key or spec.idempotency_key:
        for name in ("ordering_key", "fairness_key", "idempotency_key"):
            value: str = getattr(spec, name)
            if len(value) > MAX_KEY_CHARS:
                raise InvalidArgument(
                    f"{name} is {len(value)} characters; the limit is {MAX_KEY_CHARS}",
                    field=name,
                )
    if not 0 <= spec.fairness_weight <= 1000:
        raise InvalidArgument(
            f"fairness_weight must be 0-1000, got {spec.fairness_weight}",
            field="fairness_weight",
        )
    if spec.not_before is not None or spec.expire_at is not None:
        for name in ("not_before", "expire_at"):
            t: float | None = getattr(spec, name)
            if t is not None and not (math.isfinite(t) and 0 <= t < 1e11):
                raise InvalidArgument(f"{name} is not a usable time", field=name)
    if len(spec.content_type) > limits.max_content_type_bytes:
        raise InvalidArgument(
            f"content_type is {len(spec.content_type)} characters; "
            f"the limit is {limits.max_content_type_bytes}",
            field="content_type",
        )


def check_batch(specs: Sequence[NewJob], limits: EngineLimits) -> None:
    """A submit's jobs, all checked before any is admitted. Errors name the job's field as
    ``jobs[i].<field>``; messages name the index only when there is more than one job."""
    if not specs:
        raise InvalidArgument("no jobs given", field="jobs")
    if len(specs) > limits.max_batch_jobs:
        raise InvalidArgument(
            f"{len(specs)} jobs in one batch; the limit is {limits.max_batch_jobs}",
            field="jobs",
        )
    for i, spec in enumerate(specs):
        try:
            check_new_job(spec, limits)
        except EngineError as e:
            raise e.under(f"jobs[{i}]", label=len(specs) > 1) from None
    if len(specs) > 1:
        total = sum(len(spec.payload) for spec in specs)
        bound = max(limits.max_batch_bytes, limits.max_payload_bytes)
        if total > bound:
            raise ResourceExhausted(
                f"the batch's payloads take {total} bytes; the limit is {bound} bytes "
                "(--max-batch-bytes): submit it in smaller batches",
                field="jobs",
                reason=Reason.PAYLOAD_TOO_LARGE,
                metadata={"max_batch_bytes": str(bound)},
            )


def _check_headers(headers: dict[str, str], limits: EngineLimits) -> None:
    if len(headers) > limits.max_headers:
        raise InvalidArgument(
            f"{len(headers)} headers; the limit is {limits.max_headers}", field="headers"
        )
    header_bytes = sum(len(k) + len(v) for k, v in headers.items())
    if header_bytes > limits.max_header_bytes:
        raise InvalidArgument(
            f"headers take {header_bytes} bytes; the limit is {limits.max_header_bytes}",
            field="headers",
        )
    for k in headers:
        if not k:
            raise InvalidArgument("a header has an empty name", field="headers")
        if k[: len(RESERVED_HEADER_PREFIX)].lower() == RESERVED_HEADER_PREFIX and (
            k != SUBMITTER_HEADER
        ):
            raise InvalidArgument(
                f"header {k!r}: names starting with {RESERVED_HEADER_PREFIX!r} "
                "(in any case) are reserved for the server",
                field="headers",
            )
