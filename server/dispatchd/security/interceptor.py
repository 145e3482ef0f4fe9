"""The server interceptor that checks bearer tokens against :mod:`dispatchd.security.policy`.

Installed only when --auth-tokens is set, so a server without auth pays nothing per call.
A call without a known token answers UNAUTHENTICATED, a known token without the role answers
PERMISSION_DENIED; both are counted in :class:`AuthStats` (per method) for the metrics.
Health checks stay open for kubelet probes.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from dispatchd.engine.errors import Reason
from dispatchd.security.policy import SUBMITTER_HEADER, Rule, rule_for
from dispatchd.security.tokens import Identity, Role, TokenTable
from dispatchd.service.errors import abort_with, refusal_status
from dispatchd_client.v1 import dispatcher_pb2 as pb

log = logging.getLogger("dispatchd.auth")

Context = grpc.aio.ServicerContext[Any, Any]
#: Job id -> the identity name that submitted it; "" for a job submitted without auth;
#: None when there is no such job (the RPC itself then answers NOT_FOUND). The Redis
#: backend's lookup is a coroutine (the job is in Redis).
OwnerLookup = Callable[[str], str | Awaitable[str | None] | None]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
if TYPE_CHECKING:  # generic in the type stubs only
    _Interceptor: TypeAlias = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor
_Check = Callable[[Any, Context], Awaitable[None]]

BEARER = "bearer "


class AuthStats:
    """Refused calls by method (the full ``/package.Service/Method`` path)."""

    def __init__(self) -> None:
        self.unauthenticated: Counter[str] = Counter()
        self.permission_denied: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return self.unauthenticated.total() + self.permission_denied.total()


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The token of the first ``authorization: Bearer <token>`` entry, if any."""
    for key, value in metadata or ():
        if key != "authorization":
            continue
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        if text[: len(BEARER)].lower() == BEARER:
            return text[len(BEARER) :].strip()
    return None


def _roles(identity: Identity) -> str:
    return ", ".join(sorted(r.value for r in identity.roles))


class AuthInterceptor(_Interceptor):
    """Checks each call's bearer token; see the module docstring."""

    def __init__(
        self, tokens: TokenTable, owner_of: OwnerLookup, stats: AuthStats | None = None
    ) -> None:
        self._tokens = tokens
        self._owner_of = owner_of
        self.stats = stats if stats is not None else AuthStats()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        rule = rule_for(method)
        if rule is None or handler is None:  # open, or unknown: grpc answers UNIMPLEMENTED
            return handler
        token = bearer_token(handler_call_details.invocation_metadata)
        identity = self._tokens.identify(token) if token else None
        if identity is None:
            self.stats.unauthenticated[method] += 1
            log.debug("%s: %s bearer token", method, "unknown" if token else "no")
            details = (
                "unknown bearer token"
                if token
                else "missing bearer token: send metadata `authorization: Bearer <token>`"
            )
            return _refusal(
                handler, grpc.StatusCode.UNAUTHENTICATED, details, Reason.UNAUTHENTICATED
            )
        if rule.role is not None and not identity.has(rule.role):
            self.stats.permission_denied[method] += 1
            log.debug("%s: %s lacks role %s", method, identity.name, rule.role.value)
            needed = "admin" if rule.role is Role.ADMIN else f"{rule.role.value} or admin"
            return _refusal(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method.rsplit('/', 1)[-1]} needs the {needed} role; "
                f"{identity.name} has {_roles(identity)}",
                Reason.PERMISSION_DENIED,
            )
        check = self._check_for(rule, identity, method)
        return handler if check is None else _checked(handler, check)

    def _check_for(self, rule: Rule, identity: Identity, method: str) -> _Check | None:
        if rule.stamps_submitter:

            async def stamp(request: Any, context: Context) -> None:
                for spec in _submitted_specs(request):
                    spec.headers[SUBMITTER_HEADER] = identity.name

            return stamp
        if rule.own_jobs and not identity.has(Role.ADMIN):

            async def own_job(request: Any, context: Context) -> None:
                job_id: str = request.job_id
                found = self._owner_of(job_id)
                owner = await found if inspect.isawaitable(found) else found
                if owner is None or owner == identity.name:
                    return
                self.stats.permission_denied[method] += 1
                whose = f"was submitted by {owner}" if owner else "has no submitter"
                details = (
                    f"job {job_id} {whose}; {identity.name} may only touch its own jobs "
                    "(the admin role may touch any)"
                )
                await abort_with(
                    context,
                    refusal_status(
                        grpc.StatusCode.PERMISSION_DENIED,
                        details,
                        Reason.NOT_JOB_OWNER,
                        metadata={"job_id": job_id},
                    ),
                )

            return own_job
        return None


def _submitted_specs(request: Any) -> list[pb.JobSpec]:
    """The job specs a request submits, now (Submit, SubmitBatch) or at every tick of a
    schedule (CreateSchedule, UpdateSchedule: its template becomes the schedule's owner)."""
    if isinstance(request, pb.SubmitRequest):
        return [request.job]
    if isinstance(request, pb.CreateScheduleRequest | pb.UpdateScheduleRequest):
        has = request.schedule.HasField("template")
        return [request.schedule.template] if has else []
    if isinstance(request, pb.CreateBatchRequest):  # its callbacks (docs/workflows.md)
        b = request.batch
        return [getattr(b, f) for f in ("on_success", "on_complete") if b.HasField(f)]
    return list(request.jobs)


def _refusal(handler: Handler, code: grpc.StatusCode, details: str, reason: Reason) -> Handler:
    """A handler of the same shape as ``handler`` that only aborts."""
    status = refusal_status(code, details, reason)

    async def refuse(request: Any, context: Context) -> None:
        await abort_with(context, status)

    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse)
    return grpc.stream_stream_rpc_method_handler(refuse)


def _checked(handler: Handler, check: _Check) -> Handler:
    """``handler`` (a unary-unary one) with ``check`` run on the request first."""
    inner: Callable[..., Any] | None = handler.unary_unary
    if inner is None:
        raise TypeError("request checks apply to unary calls only")

    async def behavior(request: Any, context: Context) -> Any:
        await check(request, context)
        result = inner(request, context)
        return await result if inspect.isawaitable(result) else result

    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
