"""W3C trace context across a job's life: put on the job at submit, picked up by the worker.

Producers: when a span is current, :func:`trace_headers` gives its ``traceparent`` (and
``tracestate``); the request builders put them into the job's headers, where they stay for
the job's life, and into the call's gRPC metadata, where the server's ``Submit`` span
finds its parent. With no current span nothing is added.

Workers: :class:`RunSpans` opens a ``run`` span per job whose parent is the context in the
job's headers, so producer, server and worker spans share one trace. It uses the tracer
provider given to the Worker, else the global one the application set up; when the
application set up none, it does nothing at all (not even a no-op span).

This follows the OpenTelemetry rule for libraries: use the API, never configure the SDK.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from dispatchd_client.types import JobError, ReceivedJob

__all__ = ["RunSpans", "trace_headers", "with_trace_headers"]

TRACER_NAME = "dispatchd_client"
_PROPAGATOR = TraceContextTextMapPropagator()


def trace_headers() -> dict[str, str]:
    """``traceparent``/``tracestate`` of the current span, or {} when there is none."""
    if not trace.get_current_span().get_span_context().is_valid:
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
    """Makes the ``run`` span of each delivered job."""

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        self._provider = provider
        self._tracers: dict[int, tuple[trace.TracerProvider, trace.Tracer]] = {}

    def _tracer(self) -> trace.Tracer | None:
        provider = self._provider or trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):
            return None  # the application configured no tracing
        cached = self._tracers.get(id(provider))
        if cached is None or cached[0] is not provider:
            cached = (provider, provider.get_tracer(TRACER_NAME))
            self._tracers[id(provider)] = cached
        return cached[1]

    @contextlib.contextmanager
    def run(self, job: ReceivedJob) -> Iterator[trace.Span | None]:
        """The job's span, current for the hooks and the handler (sync handlers get it
        through the copied contextvars); None when tracing is off."""
        tracer = self._tracer()
        if tracer is None:
            yield None
            return
        parent = _PROPAGATOR.extract(job.headers) if "traceparent" in job.headers else None
        with tracer.start_as_current_span(
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
        ) as span:
            yield span


def record_outcome(span: trace.Span | None, outcome: bytes | JobError) -> None:
    """Marks the run span failed when the job failed (the error's code and message)."""
    if span is None or not isinstance(outcome, JobError):
        return
    span.set_attribute("dispatchd.error.code", outcome.code)
    span.set_attribute("dispatchd.error.retryable", outcome.retryable)
    span.set_status(trace.Status(trace.StatusCode.ERROR, outcome.message or outcome.code))
