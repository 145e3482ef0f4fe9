"""A real dispatchd process configured only by flags and OTEL_* variables: JSON logs on
stderr, /metrics over HTTP, spans exported over OTLP/HTTP to a stand-in collector and
linked to the producer's span in this process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from dispatchd_client import AsyncClient, Client, JobState, ReceivedJob, Worker

from .conftest import ServerProcess
from .otlp import Collector

METRICS_LINE = re.compile(r"metrics on http://([^/]+)/metrics")


def _scrape(log: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    m = METRICS_LINE.search(log)
    assert m, log
    with urllib.request.urlopen(f"http://{m.group(1)}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _start_worker(target: str) -> threading.Thread:
    worker = Worker(target, worker_id="obs-worker", concurrency=2)

    @worker.handler("obs")
    def handle(job: ReceivedJob) -> bytes:
        return b"ok"

    thread = threading.Thread(target=asyncio.run, args=(worker.run_async(),), daemon=True)
    thread.start()
    return thread


def test_logs_metrics_and_otlp_spans_of_a_real_process(
    tmp_path: Path, start_server: type[ServerProcess]
) -> None:
    collector = Collector()
    producer = TracerProvider()
    producer.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    try:
        proc = start_server(
            tmp_path,
            "--log-format",
            "json",
            env={
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_BSP_SCHEDULE_DELAY": "50",
                "OTEL_SERVICE_NAME": "dispatchd-e2e",
            },
        )
        target = proc.wait_ready()
        with Client(target) as client:
            with producer.get_tracer("e2e").start_as_current_span("produce") as produce:
                ids = [client.submit("obs", f"job {i}").id for i in range(5)]
            worker_thread = _start_worker(target)
            for job_id in ids:
                assert client.wait(job_id, timeout=10).state is JobState.SUCCEEDED
        samples = _scrape(proc.log)
        proc.terminate()
        assert proc.wait() == 0, proc.log
        worker_thread.join(10)
    finally:
        collector.close()
        producer.shutdown()

    # Metrics of the real binary.
    done = frozenset({("queue", "obs"), ("outcome", "succeeded")})
    assert samples["dispatchd_jobs_completed_total", done] == 5

    # Spans: the provider is shut down (flushed) before the process exits.
    ctx = produce.get_span_context()
    submits = [span for svc, span in collector.named("Submit") if svc == "dispatchd-e2e"]
    assert len(submits) == 5
    for span in submits:
        assert span.trace_id == ctx.trace_id.to_bytes(16, "big")
        assert span.parent_span_id == ctx.span_id.to_bytes(8, "big")
    submit_ids = {span.span_id for span in submits}
    dispatches = [span for _, span in collector.named("dispatch")]
    assert len(dispatches) == 5
    assert {span.parent_span_id for span in dispatches} == submit_ids

    # Logs: one JSON object per line; lifecycle events with fields; nothing per job.
    docs = [json.loads(line) for line in proc.lines]
    msgs = [d["msg"] for d in docs]
    connected = [d for d in docs if d["msg"].startswith("worker obs-worker connected")]
    assert connected[0]["queues"] == ["obs"]
    (left,) = [d for d in docs if d["msg"].startswith("worker obs-worker disconnected")]
    assert left["reason"] in ("worker closed the stream", "server drained")
    assert (left["worker_id"], left["held"]) == ("obs-worker", 0)
    assert any(m.startswith("drain: intake stopped") for m in msgs)
    assert msgs[-1] == "drained"
    assert any(m.startswith("tracing on") for m in msgs)
    for job_id in ids:
        assert job_id not in proc.log


def test_bad_otel_configuration_stops_the_start_with_a_message(tmp_path: Path) -> None:
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "jaeger"}
    out = subprocess.run(
        [sys.executable, "-m", "dispatchd", "--listen", "127.0.0.1:0", "--metrics-listen", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "OTEL_TRACES_EXPORTER names jaeger" in out.stderr


def test_one_trace_without_producer_tracing_and_per_job_traces_in_a_coalesced_batch(
    tmp_path: Path, start_server: type[ServerProcess]
) -> None:
    """Over OTLP from the real binary: a producer with no tracing at all gets one trace
    from the server's Submit to the worker's run; three submits coalesced into one
    SubmitBatch each find their dispatch in their own trace."""
    collector = Collector()
    tracing = TracerProvider()
    spans = InMemorySpanExporter()
    tracing.add_span_processor(SimpleSpanProcessor(spans))
    try:
        proc = start_server(
            tmp_path,
            env={
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "50",
                "OTEL_SERVICE_NAME": "dispatchd-e2e",
            },
        )
        target = proc.wait_ready()
        worker = Worker(target, worker_id="traced", concurrency=4, tracer_provider=tracing)
        worker.handler("obs")(lambda job: b"ok")
        thread = threading.Thread(target=asyncio.run, args=(worker.run_async(),), daemon=True)
        thread.start()
        with Client(target) as client:  # no tracer provider, no current span
            plain = client.submit("obs", b"plain").id
            assert client.wait(plain, timeout=10).state is JobState.SUCCEEDED
        produced = asyncio.run(_coalesced(target, tracing))
        proc.terminate()
        assert proc.wait() == 0, proc.log
        thread.join(10)
    finally:
        collector.close()
        tracing.shutdown()

    def attr(span: Span, key: str) -> str:
        return str(next(a.value.string_value for a in span.attributes if a.key == key))

    runs = {
        (s.attributes or {}).get("messaging.message.id"): s
        for s in spans.get_finished_spans()
        if s.name == "run"
    }
    (submit,) = [s for _, s in collector.named("Submit") if attr(s, "dispatchd.job_id") == plain]
    run = runs[plain]
    assert run.context.trace_id.to_bytes(16, "big") == submit.trace_id
    assert run.parent is not None
    assert run.parent.span_id.to_bytes(8, "big") == submit.span_id
    dispatches = {attr(s, "dispatchd.job_id"): s for _, s in collector.named("dispatch")}
    assert dispatches[plain].parent_span_id == submit.span_id
    (batch,) = [s for _, s in collector.named("SubmitBatch")]
    for job_id, (trace_id, span_id) in produced.items():
        dispatch = dispatches[job_id]
        assert dispatch.trace_id == trace_id.to_bytes(16, "big")  # the job's own trace
        if dispatch.parent_span_id != batch.span_id:
            assert dispatch.parent_span_id == span_id.to_bytes(8, "big")
            assert [link.span_id for link in dispatch.links] == [batch.span_id]
    assert {link.span_id for link in batch.links} == {
        s.to_bytes(8, "big") for _, s in produced.values()
    }


async def _coalesced(target: str, tracing: TracerProvider) -> dict[str, tuple[int, int]]:
    """Three concurrent submits, each in its own producer span: one SubmitBatch."""
    tracer = tracing.get_tracer("producer")

    async def produce(client: AsyncClient, i: int) -> tuple[str, tuple[int, int]]:
        with tracer.start_as_current_span(f"produce-{i}") as span:
            job = await client.submit("obs", b"x")
        ctx = span.get_span_context()
        return job.id, (ctx.trace_id, ctx.span_id)

    async with AsyncClient(target) as client:
        produced = dict(await asyncio.gather(*(produce(client, i) for i in range(3))))
        for job_id in produced:
            assert (await client.wait(job_id, timeout=10)).state is JobState.SUCCEEDED
    return produced
