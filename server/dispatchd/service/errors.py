"""The one table that maps engine errors to gRPC status codes, the one place that turns an
error's facts into the standard error details, and the decorator every RPC handler wears.

A refusal goes out as a ``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer
(what grpcio-status' ``rpc_status`` reads): always an ``ErrorInfo`` (a stable reason from
engine.errors.Reason, domain ``dispatchd.dev``, facts in its metadata), a ``BadRequest`` with
one ``FieldViolation`` when a request field is to blame, and a ``RetryInfo`` when a retry
makes sense. The message stays the human one. docs/errors.md lists every reason."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from dispatchd.engine import errors
from dispatchd.engine.errors import Reason

DOMAIN = "dispatchd.dev"

STATUS_OF: dict[type[errors.EngineError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Internal: grpc.StatusCode.INTERNAL,
}


def status_of(error: errors.EngineError) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        code = STATUS_OF.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def refusal_status(
    code: grpc.StatusCode,
    message: str,
    reason: Reason,
    *,
    field: str = "",
    retry_after: float | None = None,
    metadata: Mapping[str, str] | None = None,
) -> grpc.Status:
    """A non-OK status with its details, for refusals that are not engine errors (auth)."""
    status = status_pb2.Status(code=code.value[0], message=message)
    _pack(status, error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))
    if field:
        bad = error_details_pb2.BadRequest()
        bad.field_violations.add(field=field, description=message)
        _pack(status, bad)
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_after * 1e9))
        _pack(status, error_details_pb2.RetryInfo(retry_delay=delay))
    return rpc_status.to_status(status)


def rich_status(
    error: errors.EngineError, fields: Callable[[str], str] | None = None
) -> grpc.Status:
    """``error`` as the status a client sees; ``fields`` roots its field path in the
    request (see :func:`single_job_field`, :func:`queue_field`)."""
    field = error.field
    if field and fields is not None:
        field = fields(field)
    return refusal_status(
        status_of(error),
        str(error),
        error.reason,
        field=field,
        retry_after=error.retry_after,
        metadata=error.metadata,
    )


async def abort(
    context: grpc.aio.ServicerContext[Any, Any],
    error: errors.EngineError,
    fields: Callable[[str], str] | None = None,
) -> NoReturn:
    """Ends the call (unary or a Work stream) with ``error``'s rich status."""
    await abort_with(context, rich_status(error, fields))


async def abort_with(context: grpc.aio.ServicerContext[Any, Any], status: grpc.Status) -> NoReturn:
    """Ends the call with ``status`` and its details trailer (from :func:`refusal_status`)."""
    await context.abort(status.code, status.details, status.trailing_metadata)


def single_job_field(field: str) -> str:
    """Submit's job is ``job``; the engine names every submitted job ``jobs[i]``."""
    return "job" + field[len("jobs[0]") :] if field.startswith("jobs[0]") else field


def queue_field(field: str) -> str:
    """UpdateQueue's settings live in ``queue``; the mask is beside it."""
    return field if field.startswith(("update_mask", "allow_missing")) else f"queue.{field}"


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Any, Req, Context], Awaitable[Resp]]


def translating(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Turns an EngineError into its rich status, field paths as the engine named them."""
    return _translating(method, None)


def translating_fields(
    fields: Callable[[str], str],
) -> Callable[[Handler[Req, Resp]], Handler[Req, Resp]]:
    """:func:`translating` for a handler whose request holds the engine's fields elsewhere:
    ``@translating_fields(queue_field)``."""

    def decorate(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
        return _translating(method, fields)

    return decorate


def _translating(
    method: Handler[Req, Resp], fields: Callable[[str], str] | None
) -> Handler[Req, Resp]:
    async def wrapper(self: Any, request: Req, context: Context) -> Resp:
        try:
            return await method(self, request, context)
        except errors.EngineError as e:
            await abort(context, e, fields)

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


def _pack(status: status_pb2.Status, detail: Any) -> None:
    packed = any_pb2.Any()
    packed.Pack(detail)
    status.details.append(packed)
