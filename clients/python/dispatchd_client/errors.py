"""Exceptions raised by the dispatchd client library.

Every failed RPC surfaces as a :class:`DispatchdError` subclass picked by its gRPC status code,
so callers can write ``except NotFound:`` instead of comparing ``e.code()`` against
``grpc.StatusCode`` members, and never have to know whether the sync or the asyncio client
raised it. The original :class:`grpc.RpcError` stays reachable as ``__cause__``.

What the server says about a refusal beyond its message travels as standard error details (a
``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer) and is read into attributes:
``reason`` (ErrorInfo: a stable name such as ``QUEUE_FULL``, listed in the server's
docs/errors.md), ``info`` (ErrorInfo's metadata), ``field_violations`` (BadRequest: which
request fields are wrong) and ``retry_delay`` (RetryInfo). Programs branch on those; the
message (``details``) is for people and may change.

:class:`PermanentError` is the odd one out: it is raised *by job handlers* to tell the worker
that a failure will not go away on retry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "AlreadyExists",
    "DeadlineExceeded",
    "DispatchdError",
    "ErrorFacts",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermanentError",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
]

#: The trailer that carries a google.rpc.Status (what grpcio-status' rpc_status reads).
DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class ErrorFacts:
    """The standard error details of a refusal, as plain values."""

    reason: str = ""
    info: Mapping[str, str] = field(default_factory=dict)
    field_violations: tuple[tuple[str, str], ...] = ()
    retry_delay: float | None = None


class DispatchdError(Exception):
    """An RPC to dispatchd failed.

    ``code`` and ``details`` are kept as attributes (and as ``args``, so the error pickles and
    compares like the gRPC status it came from). Status codes without a dedicated subclass
    (CANCELLED, UNKNOWN, ABORTED, ...) are raised as this class itself.

    From the server's error details: ``reason`` ("" when it sent none), ``info``,
    ``field_violations`` (``[(field, description)]``, e.g. ``("jobs[3].queue", ...)``) and
    ``retry_delay`` (seconds to wait before a retry may succeed; None: a retry will not help,
    or the server did not say).
    """

    def __init__(
        self, code: grpc.StatusCode, details: str = "", facts: ErrorFacts | None = None
    ) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details
        self.facts = facts or ErrorFacts()

    @property
    def reason(self) -> str:
        return self.facts.reason

    @property
    def info(self) -> Mapping[str, str]:
        return self.facts.info

    @property
    def field_violations(self) -> list[tuple[str, str]]:
        return list(self.facts.field_violations)

    @property
    def retry_delay(self) -> float | None:
        return self.facts.retry_delay

    def copy(self) -> DispatchdError:
        """The same error as a new object (one per caller of a shared batch)."""
        return type(self)(self.code, self.details, self.facts)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}" if self.details else self.code.name


class InvalidArgument(DispatchdError):
    """The request itself is wrong (bad queue name, oversized payload, bad page token)."""


class NotFound(DispatchdError):
    """The job or queue does not exist (or a finished job outlived its retention)."""


class FailedPrecondition(DispatchdError):
    """The request is valid but the target's state forbids it (e.g. reprioritizing a
    finished job)."""


class ResourceExhausted(DispatchdError):
    """A server limit was hit (queue capacity, message size); retrying later may work."""


class Unavailable(DispatchdError):
    """The server cannot be reached or is draining. Idempotent reads are retried
    automatically before this is raised; submissions never are."""


class DeadlineExceeded(DispatchdError):
    """The call's deadline passed before the server answered."""


class AlreadyExists(DispatchdError):
    """The resource to create is already there."""


class PermissionDenied(DispatchdError):
    """The caller is known but not allowed to do this."""


class Unauthenticated(DispatchdError):
    """The caller could not be identified."""


class Internal(DispatchdError):
    """The server (or this library, on a protocol violation) hit a bug."""


class PermanentError(Exception):
    """Raise from a job handler to fail the job without asking for a retry.

    Any other exception is reported as retryable, because most failures (timeouts, flaky
    dependencies) are transient; only the handler knows when the input itself is bad.
    """


class Throttled(Exception):
    """Raise from a job handler when the provider it calls throttles (a 429, a quota):

    ::

        raise Throttled(retry_after=30)  # the whole queue waits 30 s
        raise Throttled(retry_after=5, scope="fairness_key")  # only this job's key waits

    The job goes back to its place without the delivery counting as an attempt, and the
    server dispatches nothing more of the queue (or of the job's fairness key) until
    ``retry_after`` seconds have passed. A job that keeps answering this more often than the
    queue's ``max_throttle_bounces`` has the next one counted as a failed attempt.
    """

    def __init__(self, retry_after: float = 1.0, scope: str = "queue", reason: str = "") -> None:
        if scope not in ("queue", "fairness_key"):
            raise ValueError(f"scope must be 'queue' or 'fairness_key', got {scope!r}")
        super().__init__(reason or f"throttled for {retry_after:g} s")
        self.retry_after = retry_after
        self.scope = scope
        self.reason = reason


class RetryableError(Exception):
    """Raise from a job handler to fail this attempt and ask for a retry, expectedly (a
    dependency is busy, a lock is taken): the Worker logs one line without a traceback.
    Any other exception is retryable too, but logged with its traceback, as a surprise.
    """


_BY_CODE: dict[grpc.StatusCode, type[DispatchdError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.INTERNAL: Internal,
}


def status_code_of(e: grpc.RpcError) -> grpc.StatusCode:
    """The status code of a failed call, or UNKNOWN.

    A bare ``grpc.RpcError`` has no ``code()`` at runtime (only the sync ``grpc.Call`` errors
    and ``grpc.aio.AioRpcError`` do), so this looks before it calls.
    """
    code = getattr(e, "code", None)
    value = code() if callable(code) else None
    return value if isinstance(value, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def from_rpc_error(e: grpc.RpcError) -> DispatchdError:
    """Translate a sync or asyncio gRPC error into the matching :class:`DispatchdError`.

    The caller is expected to ``raise from_rpc_error(e) from e`` so the gRPC error (with its
    debug string and metadata) stays attached for troubleshooting.
    """
    code = status_code_of(e)
    details_fn = getattr(e, "details", None)
    details = details_fn() if callable(details_fn) else None
    if not isinstance(details, str):
        details = "" if details is None else str(details)
    return _BY_CODE.get(code, DispatchdError)(code, details, facts_of(_trailer(e), code))


def _trailer(e: grpc.RpcError) -> Iterable[tuple[str, str | bytes]] | None:
    """The call's trailing metadata, when the error has any (a bare ``grpc.RpcError`` or an
    abstract ``grpc.Call`` has none)."""
    trailer = getattr(e, "trailing_metadata", None)
    if not callable(trailer):
        return None
    try:
        return trailer()  # type: ignore[no-any-return]
    except NotImplementedError:
        return None


def facts_of(
    trailing: Iterable[tuple[str, str | bytes]] | None, code: grpc.StatusCode
) -> ErrorFacts:
    """The error details in a call's trailing metadata (sync or asyncio: both iterate as
    key/value pairs). Details that do not parse, or that belong to another status than the
    call's (a proxy's), are ignored: the status code alone still says what happened."""
    raw = next((v for k, v in trailing or () if k == DETAILS_KEY), None)
    if not isinstance(raw, bytes):
        return ErrorFacts()
    try:
        status = status_pb2.Status.FromString(raw)
    except DecodeError:
        return ErrorFacts()
    if status.code != code.value[0]:
        return ErrorFacts()
    reason, info, violations, delay = "", {}, [], None
    for packed in status.details:  # Unpack is False for a detail of another type
        error_info, bad, retry = (
            error_details_pb2.ErrorInfo(),
            error_details_pb2.BadRequest(),
            error_details_pb2.RetryInfo(),
        )
        if packed.Unpack(error_info):
            reason, info = error_info.reason, dict(error_info.metadata)
        elif packed.Unpack(bad):
            violations += [(v.field, v.description) for v in bad.field_violations]
        elif packed.Unpack(retry):
            delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    return ErrorFacts(reason, info, tuple(violations), delay)
