"""OpenTelemetry for the server: the tracer provider chosen by OTEL_* variables, and the
``dispatch`` span of each job.

With no OTEL_* variable set there is no provider, no interceptor span and no observer:
the hot path runs no tracing code at all. The W3C ``traceparent`` in the job's headers
ties the spans of one job together across processes: the producer's when it sent one (the
server never rewrites it), else the server's own Submit span's, which the interceptor puts
in the job as it is submitted, so a producer without tracing still gets one connected
trace from Submit through dispatch to the worker's run.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from dispatchd.engine import EngineObserver, FinishedJob, JobRecord, LeaseRecord
from dispatchd.observability.errors import TracingConfigError

TRACER_NAME = "dispatchd"
PROPAGATOR = TraceContextTextMapPropagator()
EXPORTERS = ("otlp", "console", "none")


def _otlp_exporter(env: Mapping[str, str]) -> SpanExporter:
    protocol = env.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    protocol = protocol or "http/protobuf"
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            exporter: SpanExporter = GrpcExporter()
            return exporter
        if protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )

            exporter = HttpExporter()
            return exporter
    except ImportError:
        raise TracingConfigError(
            "OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: pip install 'dispatchd[otlp]'"
        ) from None
    raise TracingConfigError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use grpc or http/protobuf"
    )


def exporter_names(env: Mapping[str, str]) -> list[str]:
    """The exporters OTEL_* asks for. Unlike the OpenTelemetry default ("otlp"), nothing
    set means no tracing: a server nobody configured should not try to reach a collector.
    An OTLP endpoint alone is taken as asking for otlp."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip()
    if not raw:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER names {', '.join(unknown)}; use {', '.join(EXPORTERS)}"
        )
    return [n for n in names if n != "none"]


def provider_from_env(env: Mapping[str, str]) -> TracerProvider | None:
    """A provider exporting through what OTEL_* names, or None when tracing is off.

    The SDK reads the rest of the standard variables itself: OTEL_SERVICE_NAME and
    OTEL_RESOURCE_ATTRIBUTES (the service name defaults to "dispatchd"), OTEL_TRACES_SAMPLER,
    OTEL_BSP_* and OTEL_EXPORTER_OTLP_* (endpoint, headers, timeout).
    """
    names = exporter_names(env)
    if not names:
        return None
    exporters: list[SpanExporter] = []
    for name in names:
        exporters.append(_otlp_exporter(env) if name == "otlp" else ConsoleSpanExporter())
    named = "OTEL_SERVICE_NAME" in env or "service.name" in env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    resource = Resource.create({} if named else {"service.name": "dispatchd"})
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def context_from_headers(headers: Mapping[str, str]) -> otel_context.Context | None:
    """The trace context a job's ``traceparent`` header carries, if any."""
    if "traceparent" not in headers:
        return None
    return PROPAGATOR.extract(headers)


class DispatchSpans(EngineObserver):
    """Records a ``dispatch`` span per delivery: from when the job could run (submit or the
    end of its delay, requeue, retry due time) to its dispatch. Its parent is the server's
    ``Submit`` span when this process saw the submit, else the trace context in the job's
    headers (a job restored from a snapshot or journal, a later attempt, or a job another
    replica took in). At most MAX_SUBMIT_PARENTS submits are remembered: with several
    replicas a job submitted here may be dispatched elsewhere, and its entry would
    otherwise stay forever."""

    MAX_SUBMIT_PARENTS = 100_000

    def __init__(self, tracer: trace.Tracer, clock: Callable[[], float]) -> None:
        self._tracer = tracer
        self._clock = clock
        self._submit_parent: OrderedDict[str, otel_context.Context] = OrderedDict()
        self._pending_since: dict[str, float] = {}

    def jobs_submitted(self, jobs: Sequence[JobRecord]) -> None:
        span = trace.get_current_span()  # the interceptor's Submit span, during the call
        if not span.get_span_context().is_valid:
            return
        parent = trace.set_span_in_context(span)
        remembered = self._submit_parent
        for job in jobs:
            remembered[job.id] = parent
        while len(remembered) > self.MAX_SUBMIT_PARENTS:
            remembered.popitem(last=False)

    def job_dispatched(self, lease: LeaseRecord) -> None:
        job = lease.job
        parent, links = self._parent_of(job)
        since = self._pending_since.pop(job.id, None)
        if since is None:  # first dispatch: from submit, or from the end of its delay
            since = max(job.submit_time, job.not_before or job.submit_time)
        dispatched = job.dispatch_time if job.dispatch_time is not None else self._clock()
        span = self._tracer.start_span(
            "dispatch",
            context=parent,
            kind=trace.SpanKind.INTERNAL,
            links=links,
            start_time=int(since * 1e9),
            attributes={
                "dispatchd.queue": job.queue,
                "dispatchd.job_id": job.id,
                "dispatchd.attempt": job.attempt,
                "dispatchd.worker_id": lease.worker.worker_id,
            },
        )
        span.end(end_time=int(dispatched * 1e9))

    def _parent_of(
        self, job: JobRecord
    ) -> tuple[otel_context.Context | None, Sequence[trace.Link]]:
        """The Submit span that took the job in, when it is in the job's own trace (or
        the job carries none); else the job's own context, linked to that Submit span:
        coalesced submits arrive in one SubmitBatch whose span is in the first producer's
        trace, and each job's dispatch must stay in its own producer's trace."""
        submit = self._submit_parent.pop(job.id, None)
        own = context_from_headers(job.headers)
        if submit is None or own is None:
            return submit or own, ()
        submit_ctx = trace.get_current_span(submit).get_span_context()
        if trace.get_current_span(own).get_span_context().trace_id == submit_ctx.trace_id:
            return submit, ()
        return own, (trace.Link(submit_ctx),)

    def job_requeued(self, job: JobRecord, reason: str) -> None:
        self._pending_since[job.id] = self._clock()

    def job_retrying(self, job: JobRecord, due: float) -> None:
        self._pending_since[job.id] = due

    def job_finished(self, job: FinishedJob) -> None:
        self._submit_parent.pop(job.id, None)
        self._pending_since.pop(job.id, None)
