"""Exceptions raised by the dispatchd client library.

Every failed RPC surfaces as a :class:`DispatchdError` subclass picked by its gRPC status code,
so callers can write ``except NotFound:`` instead of comparing ``e.code()`` against
``grpc.StatusCode`` members, and never have to know whether the sync or the asyncio client
raised it. The original :class:`grpc.RpcError` stays reachable as ``__cause__``.

:class:`PermanentError` is the odd one out: it is raised *by job handlers* to tell the worker
that a failure will not go away on retry.
"""

from __future__ import annotations

import grpc

__all__ = [
    "AlreadyExists",
    "DeadlineExceeded",
    "DispatchdError",
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


class DispatchdError(Exception):
    """An RPC to dispatchd failed.

    ``code`` and ``details`` are kept as attributes (and as ``args``, so the error pickles and
    compares like the gRPC status it came from). Status codes without a dedicated subclass
    (CANCELLED, UNKNOWN, ABORTED, ...) are raised as this class itself.
    """

    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details

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
    return _BY_CODE.get(code, DispatchdError)(code, details)
