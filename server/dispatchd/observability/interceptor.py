"""A grpc.aio server interceptor for call metrics and the server's ``Submit`` spans.

It wraps each registered method's handler once (cached by method) and adds per call: one
perf_counter pair and a dict increment for metrics, and for Submit/SubmitBatch, when
tracing is on, a SERVER span whose parent is the caller's context from the gRPC metadata.
The servicers stay unaware of both.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import trace

from dispatchd.engine import EngineLimits
from dispatchd.observability.metrics import GrpcStats
from dispatchd.observability.tracing import PROPAGATOR

if TYPE_CHECKING:  # generic only in the stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    _Interceptor = grpc.aio.ServerInterceptor
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]
Context = grpc.aio.ServicerContext[Any, Any]

#: Methods that get a server span: the job's trace starts (or continues) here.
TRACED_METHODS = frozenset(
    {"/dispatchd.v1.DispatcherService/Submit", "/dispatchd.v1.DispatcherService/SubmitBatch"}
)


def _code_name(context: Context, error: BaseException | None) -> str:
    """The status the call ends with: what the servicer set or aborted with, else OK, or
    CANCELLED / UNKNOWN for a call that ended by an exception."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if error is None:
        return "OK"
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    return "UNKNOWN"


class _Recorder:
    """Counts one method's calls: start() when it begins, the call itself when it ends."""

    __slots__ = ("_key", "_name", "_service", "_stats")

    def __init__(self, stats: GrpcStats, service: str, name: str) -> None:
        self._stats, self._service, self._name = stats, service, name
        self._key = (service, name)

    def start(self) -> float:
        started = self._stats.started
        started[self._key] = started.get(self._key, 0) + 1
        return time.perf_counter()

    def __call__(self, context: Context, error: BaseException | None, start: float) -> None:
        code = _code_name(context, error)
        self._stats.record(self._service, self._name, code, time.perf_counter() - start)


class _NoRecord(_Recorder):
    """Metrics off: the interceptor still traces, and counts nothing."""

    def __init__(self) -> None:
        pass

    def start(self) -> float:
        return 0.0

    def __call__(self, context: Context, error: BaseException | None, start: float) -> None:
        return None


Record = _Recorder


def _grpc_type(handler: Handler) -> str:
    """go-grpc-prometheus' grpc_type label of a method."""
    if handler.unary_unary is not None:
        return "unary"
    if handler.unary_stream is not None:
        return "server_stream"
    if handler.stream_unary is not None:
        return "client_stream"
    return "bidi_stream"


def _split(method: str) -> tuple[str, str]:
    """Splits "/pkg.Service/Method" into ("pkg.Service", "Method")."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


class ObservingInterceptor(_Interceptor):
    """Counts and times every call into ``stats`` (when given) and traces the submit
    methods with ``tracer`` (when given)."""

    def __init__(self, stats: GrpcStats | None, tracer: trace.Tracer | None) -> None:
        self._stats = stats
        self._tracer = tracer
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # unknown method: grpc answers UNIMPLEMENTED; no label for it
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: Handler) -> Handler:
        service, name = _split(method)
        record = self._recorder(service, name, _grpc_type(handler))
        ser, de = handler.response_serializer, handler.request_deserializer
        # The stubs type behaviors as the sync API's; grpc.aio's are coroutine functions.
        inner: Any
        if handler.unary_unary is not None:
            inner = handler.unary_unary
            behavior = self._unary(inner, record, method)
            return grpc.unary_unary_rpc_method_handler(behavior, de, ser)
        if handler.unary_stream is not None:
            inner = handler.unary_stream
            return grpc.unary_stream_rpc_method_handler(self._streaming(inner, record), de, ser)
        if handler.stream_unary is not None:
            inner = handler.stream_unary
            return grpc.stream_unary_rpc_method_handler(self._unary(inner, record, method), de, ser)
        inner = handler.stream_stream
        return grpc.stream_stream_rpc_method_handler(self._streaming(inner, record), de, ser)

    def _recorder(self, service: str, name: str, grpc_type: str) -> Record:
        """The call's end; its start is counted when the recorder is asked for the time
        (``record.start``) so go-grpc-prometheus' started/handled pair holds."""
        stats = self._stats
        if stats is None:
            return _NoRecord()
        stats.method(service, name, grpc_type)
        return _Recorder(stats, service, name)

    def _unary(
        self,
        inner: Callable[[Any, Context], Awaitable[Any]],
        record: Record,
        method: str,
    ) -> Callable[[Any, Context], Awaitable[Any]]:
        tracer = self._tracer if method in TRACED_METHODS else None
        if tracer is not None:
            inner = self._traced(inner, tracer, method)

        async def behavior(request: Any, context: Context) -> Any:
            start = record.start()
            try:
                response = await inner(request, context)
            except BaseException as e:
                record(context, e, start)
                raise
            record(context, None, start)
            return response

        return behavior

    def _streaming(
        self,
        inner: Callable[[Any, Context], Any],
        record: Record,
    ) -> Callable[[Any, Context], Any]:
        if inspect.isasyncgenfunction(inner):

            async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
                start = record.start()
                try:
                    async for response in inner(request, context):
                        yield response
                except BaseException as e:
                    record(context, e, start)
                    raise
                record(context, None, start)

            return generator

        # A handler that answers with context.write() and returns None (grpc's health Watch).
        async def writer(request: Any, context: Context) -> None:
            start = record.start()
            try:
                await inner(request, context)
            except BaseException as e:
                record(context, e, start)
                raise
            record(context, None, start)

        return writer

    @staticmethod
    def _traced(
        inner: Callable[[Any, Context], Awaitable[Any]], tracer: trace.Tracer, method: str
    ) -> Callable[[Any, Context], Awaitable[Any]]:
        service, name = _split(method)

        async def behavior(request: Any, context: Context) -> Any:
            carrier = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
            parent = PROPAGATOR.extract(carrier)
            specs = _specs(request)
            with tracer.start_as_current_span(
                name,
                context=parent,
                kind=trace.SpanKind.SERVER,
                links=_job_links(specs),
                attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                _stamp(specs)
                try:
                    response = await inner(request, context)
                except BaseException as e:
                    _end_status(span, context, e)
                    raise
                _end_status(span, context, None)
                _describe(span, response)
                return response

        return behavior


#: Most span links a SubmitBatch span carries (one per job with a trace of its own).
MAX_LINKS = 128
#: Most job ids the SubmitBatch span lists in dispatchd.job_ids.
MAX_NAMED_JOBS = 100
_LIMITS = EngineLimits()
#: What a traceparent and a tracestate add to a job's headers, at most (W3C's sizes).
_TRACE_HEADER_BYTES = len("traceparent") + 55 + len("tracestate") + 512


def _specs(request: Any) -> Sequence[Any]:
    """The JobSpecs of a Submit (one) or SubmitBatch request."""
    jobs = getattr(request, "jobs", None)
    if jobs is not None:
        return list(jobs)
    job = getattr(request, "job", None)
    return [job] if job is not None else []


def _job_links(specs: Sequence[Any]) -> list[trace.Link]:
    """A link to each job's own trace (a coalesced SubmitBatch carries jobs of several
    producers), so the batch's span leads to every job's trace."""
    links: list[trace.Link] = []
    for spec in specs:
        if "traceparent" in spec.headers and len(links) < MAX_LINKS:
            ctx = trace.get_current_span(PROPAGATOR.extract(spec.headers)).get_span_context()
            if ctx.is_valid:
                links.append(trace.Link(ctx))
    return links


def _stamp(specs: Sequence[Any]) -> None:
    """Puts the current (Submit) span's context into each job that carries none, so the
    worker's run joins the server's trace. A job whose headers are at their limit is left
    as sent: the header must not be what makes a valid submit invalid."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    if not carrier:
        return
    for spec in specs:
        headers = spec.headers
        if "traceparent" in headers or len(headers) + len(carrier) > _LIMITS.max_headers:
            continue
        size = sum(len(k) + len(v) for k, v in headers.items())
        if size + _TRACE_HEADER_BYTES > _LIMITS.max_header_bytes:
            continue
        headers.update(carrier)


def _end_status(span: trace.Span, context: Context, error: BaseException | None) -> None:
    code = _code_name(context, error)
    span.set_attribute("rpc.grpc.status_code", grpc.StatusCode[code].value[0])
    if code != "OK":
        span.set_status(trace.Status(trace.StatusCode.ERROR, code))
    if error is not None and not isinstance(error, grpc.aio.AbortError | asyncio.CancelledError):
        span.record_exception(error)


def _describe(span: trace.Span, response: Any) -> None:
    """Queue and job ids on the Submit span, so a trace search by job id finds it."""
    jobs = getattr(response, "jobs", None)
    if jobs is not None:  # SubmitBatch
        span.set_attribute("dispatchd.job_count", len(jobs))
        queues = sorted({j.queue for j in jobs})
        span.set_attribute("dispatchd.queues", queues)
        span.set_attribute("dispatchd.job_ids", [j.id for j in jobs[:MAX_NAMED_JOBS]])
        return
    job = getattr(response, "job", None)
    if job is not None:
        span.set_attribute("dispatchd.queue", job.queue)
        span.set_attribute("dispatchd.job_id", job.id)
