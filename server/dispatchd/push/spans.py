"""The CLIENT span of one HTTP push call (when tracing is on): a child of the job's trace
context, and the context the endpoint receives, so its own spans join the job's trace."""

from __future__ import annotations

from opentelemetry import trace

from dispatchd.engine import JobRecord
from dispatchd.observability.tracing import PROPAGATOR, context_from_headers
from dispatchd.push.outcomes import CallResult
from dispatchd.push.requests import PushRequest


def start_call_span(tracer: trace.Tracer, job: JobRecord, request: PushRequest) -> trace.Span:
    """Starts the span and puts its context in the request's trace headers (replacing
    the job's: the endpoint's parent is this call, which is in the job's trace)."""
    span = tracer.start_span(
        f"HTTP {request.method}",
        context=context_from_headers(job.headers),
        kind=trace.SpanKind.CLIENT,
        attributes={
            "http.request.method": request.method,
            "url.full": request.url.split("?", 1)[0],
            "dispatchd.queue": job.queue,
            "dispatchd.job_id": job.id,
            "dispatchd.attempt": job.attempt,
        },
    )
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    headers = request.headers
    for name in [k for k in headers if k.lower() in ("traceparent", "tracestate")]:
        del headers[name]
    headers.update(carrier)
    return span


def end_call_span(span: trace.Span, result: CallResult) -> None:
    if result.status:
        span.set_attribute("http.response.status_code", result.status)
    span.set_attribute("dispatchd.push_outcome", result.kind)
    if not result.kind.startswith("2"):
        span.set_status(trace.Status(trace.StatusCode.ERROR, result.kind))
    span.end()
