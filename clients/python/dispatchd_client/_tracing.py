"""W3C trace context across a job's life: put on the job at submit, picked up by the worker.

Producers: when a span is current, :func:`trace_headers` gives its ``traceparent`` (and
``tracestate``); the request builders put them into the job's headers, where they stay for
the job's life, and into the call's gRPC metadata, where the server's ``Submit`` span
finds its parent. With no current span nothing is added.

Workers: :class:`RunSpans` opens a ``run`` span per job whose parent is the context in the
job's headers, so producer, server and worker spans share one trace. It uses the tracer
provider given to the Worker, else the global one the application set up before the run
started; when there is none, it does nothing at all (not even a no-op span).

This follows the OpenTelemetry rule for libraries: use the API, never configure the SDK.
The API is the optional extra ``dispatchd-client[otel]``; without it nothing here does
anything (no headers, no spans), and nothing else in the client imports OpenTelemetry.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from dispatchd_client.types import JobError, ReceivedJob

try:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # no `otel` extra: tracing is off
    trace = None  # type: ignore[assignment]
    TraceContextTextMapPropagator = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["RunSpans", "trace_headers", "with_trace_headers"]

TRACER_NAME = "dispatchd_client"
_PROPAGATOR: Any = None if trace is None else TraceContextTextMapPropagator()


def trace_headers() -> dict[str, str]:
    """``traceparent``/``tracestate`` of the current span, or {} when there is none (or no
    OpenTelemetry)."""
    if trace is None or not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def with_trace_headers(
    headers: Mapping[str, str] | None, context: Mapping[str, str]
) -> Mapping[str, str] | None:
    """``headers`` plus the trace ``context``, unless the caller already set a traceparent
    (theirs wins: they may be forwarding a job that belongs to another trace)."""
    if not context or (headers and "traceparent" in headers):
        return headers
    return {**context, **headers} if headers else context


class RunSpans:
    """Makes the ``run`` span of each delivered job with ``tracer`` (None: no spans)."""

    def __init__(self, tracer: Tracer | None) -> None:
        self._tracer = tracer

    @classmethod
    def resolve(cls, provider: TracerProvider | None) -> RunSpans:
        """Spans go to ``provider``, else to the global provider as the application set it
        up before the run started. With neither (or without OpenTelemetry) there is no
        tracer at all: reading the global provider per job would cost more than the rest
        of this module."""
        if trace is None:
            return cls(None)
        provider = provider or trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):
            return cls(None)  # the application configured no tracing
        return cls(provider.get_tracer(TRACER_NAME))

    def start(self, job: ReceivedJob) -> AbstractContextManager[Span] | None:
        """The job's span as a context manager that makes it current for the hooks and the
        handler (sync handlers get it through the copied contextvars); None when tracing is
        off, so the caller skips even the ``with``."""
        tracer = self._tracer
        if tracer is None:
            return None
        parent = _PROPAGATOR.extract(job.headers) if "traceparent" in job.headers else None
        return tracer.start_as_current_span(
            "run",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "dispatchd",
                "messaging.operation.type": "process",
                "messaging.destination.name": job.queue,
                "messaging.message.id": job.id,
                "dispatchd.attempt": job.attempt,
            },
        )


def record_outcome(span: Span, outcome: bytes | JobError) -> None:
    """Marks the run span failed when the job failed (the error's code and message)."""
    if not isinstance(outcome, JobError):
        return
    span.set_attribute("dispatchd.error.code", outcome.code)
    span.set_attribute("dispatchd.error.retryable", outcome.retryable)
    span.set_status(trace.Status(trace.StatusCode.ERROR, outcome.message or outcome.code))
