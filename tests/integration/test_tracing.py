"""One trace from producer to server to worker: real server, client and Worker, spans kept
by the SDK's in-memory exporter, parent/child links checked."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd_client import (
    AsyncClient,
    Client,
    HttpTarget,
    JobState,
    NewJob,
    ReceivedJob,
    Worker,
)
from dispatchd_client.v1 import dispatcher_pb2 as pb
from tests.inproc import serving

from .endpoint import Endpoint
from .helpers import eventually


@dataclass
class Traced:
    provider: TracerProvider
    exporter: InMemorySpanExporter
    target: str
    #: span id that was current inside each handler call, by job id
    seen_in_handler: dict[str, int]

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    def one(self, name: str, job_id: str) -> ReadableSpan:
        found = [s for s in self.spans(name) if _job_id(s) == job_id]
        assert len(found) == 1, f"{name} spans of {job_id}: {found}"
        return found[0]


def _job_id(span: ReadableSpan) -> object:
    attrs = span.attributes or {}
    return attrs.get("dispatchd.job_id", attrs.get("messaging.message.id"))


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _ids(span: ReadableSpan | trace.Span) -> tuple[int, int]:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.trace_id, ctx.span_id


@pytest.fixture
async def traced(server_config: Config) -> AsyncIterator[Traced]:
    """A server and a Worker on one provider with an in-memory exporter; the sync handler
    records the span current while it runs."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    srv = DispatchdServer(server_config, tracer_provider=provider)
    await srv.start()
    target = f"127.0.0.1:{srv.port}"
    seen: dict[str, int] = {}
    worker = Worker(target, concurrency=2, tracer_provider=provider)

    @worker.handler("t")
    def handle(job: ReceivedJob) -> bytes:  # sync: runs in a pool thread
        seen[job.id] = trace.get_current_span().get_span_context().span_id
        return b"done"

    task = asyncio.create_task(worker.run_async())
    await worker.wait_connected(10)
    try:
        yield Traced(provider, exporter, target, seen)
    finally:
        await worker.stop()
        await task
        await srv.stop_now()
        provider.shutdown()


async def _finished(traced: Traced, job_id: str) -> None:
    async with AsyncClient(traced.target) as client:
        done = await client.wait(job_id, timeout=10)
    assert done.state is JobState.SUCCEEDED
    await eventually(lambda: len([s for s in traced.spans("run") if _job_id(s) == job_id]) == 1)


async def test_submit_dispatch_and_run_share_the_producers_trace(traced: Traced) -> None:
    tracer = traced.provider.get_tracer("producer")
    async with AsyncClient(traced.target) as client:
        with tracer.start_as_current_span("produce") as produce:
            job = await client.submit("t", b"x")
    trace_id, produce_id = _ids(produce)
    assert job.headers["traceparent"].startswith(f"00-{trace_id:032x}-{produce_id:016x}-")
    await _finished(traced, job.id)

    submit = traced.one("Submit", job.id)
    dispatch = traced.one("dispatch", job.id)
    run = traced.one("run", job.id)
    assert {_ids(s)[0] for s in (submit, dispatch, run)} == {trace_id}
    assert _parent_id(submit) == produce_id  # from the gRPC metadata
    assert submit.kind is trace.SpanKind.SERVER
    assert _parent_id(dispatch) == _ids(submit)[1]
    assert _parent_id(run) == produce_id  # from the job's headers
    assert run.kind is trace.SpanKind.CONSUMER
    assert traced.seen_in_handler[job.id] == _ids(run)[1]  # the handler runs inside it
    # The dispatch span covers the wait: from submit to the lease, before the run.
    assert dispatch.start_time is not None
    assert dispatch.end_time is not None
    assert run.start_time is not None
    assert dispatch.start_time <= dispatch.end_time <= run.start_time
    assert (submit.attributes or {})["dispatchd.queue"] == "t"


async def test_batch_jobs_each_link_to_the_submit_batch_span(traced: Traced) -> None:
    tracer = traced.provider.get_tracer("producer")
    with Client(traced.target) as client, tracer.start_as_current_span("produce") as produce:
        jobs = await asyncio.to_thread(
            client.submit_batch, [NewJob("t", b"a"), pb.JobSpec(queue="t", payload=b"b")]
        )
    for job in jobs:
        await _finished(traced, job.id)
    (batch,) = traced.spans("SubmitBatch")
    assert _parent_id(batch) == _ids(produce)[1]
    assert (batch.attributes or {})["dispatchd.job_count"] == 2
    for job in jobs:
        assert _parent_id(traced.one("dispatch", job.id)) == _ids(batch)[1]
        assert _parent_id(traced.one("run", job.id)) == _ids(produce)[1]


async def test_coalesced_submits_each_keep_their_own_trace(traced: Traced) -> None:
    tracer = traced.provider.get_tracer("producer")

    async def produce(client: AsyncClient, i: int) -> tuple[str, tuple[int, int]]:
        with tracer.start_as_current_span(f"produce-{i}") as span:
            job = await client.submit("t", b"x")
        return job.id, _ids(span)

    async with AsyncClient(traced.target) as client:  # one tick: one SubmitBatch
        produced = await asyncio.gather(*(produce(client, i) for i in range(3)))
    (batch,) = traced.spans("SubmitBatch")
    assert _parent_id(batch) == produced[0][1][1]  # the metadata carries the first trace
    # The batch span links to every job's own trace...
    assert {link.context.span_id for link in batch.links} == {s for _, (_, s) in produced}
    assert (batch.attributes or {})["dispatchd.job_ids"] == tuple(j for j, _ in produced)
    for i, (job_id, (trace_id, span_id)) in enumerate(produced):
        await _finished(traced, job_id)
        run = traced.one("run", job_id)
        assert _ids(run)[0] == trace_id
        assert _parent_id(run) == span_id  # from the job's own headers
        # ...and each job's dispatch is in its own trace, linked back to the batch span.
        dispatch = traced.one("dispatch", job_id)
        assert _ids(dispatch)[0] == trace_id
        if i == 0:  # the batch span is in this job's trace: its child
            assert _parent_id(dispatch) == _ids(batch)[1]
        else:
            assert _parent_id(dispatch) == span_id
            assert [link.context.span_id for link in dispatch.links] == [_ids(batch)[1]]


async def test_threads_coalesced_by_the_sync_client_each_keep_their_own_trace(
    traced: Traced,
) -> None:
    tracer = traced.provider.get_tracer("producer")
    start = threading.Barrier(3)

    def produce(client: Client, i: int) -> tuple[str, tuple[int, int]]:
        start.wait()  # together, inside the client's window: one SubmitBatch
        with tracer.start_as_current_span(f"produce-{i}") as span:
            job = client.submit("t", b"x")
        return job.id, _ids(span)

    def run() -> list[tuple[str, tuple[int, int]]]:
        with Client(traced.target, coalesce_window=1.0) as client, ThreadPoolExecutor(3) as pool:
            return list(pool.map(lambda i: produce(client, i), range(3)))

    produced = await asyncio.to_thread(run)
    (batch,) = traced.spans("SubmitBatch")
    assert _parent_id(batch) in {span_id for _, (_, span_id) in produced}  # the first queued
    for job_id, (trace_id, span_id) in produced:
        await _finished(traced, job_id)
        run_span = traced.one("run", job_id)
        assert _ids(run_span)[0] == trace_id
        assert _parent_id(run_span) == span_id  # from the job's own headers


async def test_a_producer_without_tracing_gets_one_trace_from_submit_to_run(
    traced: Traced,
) -> None:
    """No span current in the producer: the server's Submit span starts the trace and its
    context goes into the job, so the dispatch and the worker's run join it."""
    async with AsyncClient(traced.target) as client:
        job = await client.submit("t", b"x", headers={"k": "v"})
    await _finished(traced, job.id)
    submit, run = traced.one("Submit", job.id), traced.one("run", job.id)
    assert submit.parent is None
    trace_id, submit_id = _ids(submit)
    assert job.headers["k"] == "v"
    assert job.headers["traceparent"].startswith(f"00-{trace_id:032x}-{submit_id:016x}-")
    dispatch = traced.one("dispatch", job.id)
    assert _parent_id(dispatch) == submit_id
    assert _ids(run)[0] == trace_id
    assert _parent_id(run) == submit_id


async def test_a_batch_without_tracing_gets_the_batch_span_in_every_job(traced: Traced) -> None:
    async with AsyncClient(traced.target) as client:
        jobs = await client.submit_batch([NewJob("t", b"a"), NewJob("t", b"b")])
    (batch,) = traced.spans("SubmitBatch")
    assert (batch.attributes or {})["dispatchd.job_ids"] == tuple(j.id for j in jobs)
    for job in jobs:
        await _finished(traced, job.id)
        assert _parent_id(traced.one("dispatch", job.id)) == _ids(batch)[1]
        assert _parent_id(traced.one("run", job.id)) == _ids(batch)[1]


async def test_a_traceparent_the_caller_set_is_kept(traced: Traced) -> None:
    theirs = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    tracer = traced.provider.get_tracer("producer")
    async with AsyncClient(traced.target) as client:
        with tracer.start_as_current_span("produce"):
            job = await client.submit("t", b"x", headers={"traceparent": theirs})
    assert job.headers == {"traceparent": theirs}
    await _finished(traced, job.id)
    run = traced.one("run", job.id)
    assert _ids(run)[0] == 0x0AF7651916CD43DD8448EB211C80319C
    assert _parent_id(run) == 0xB7AD6B7169203331


async def test_worker_makes_no_span_when_no_tracing_is_configured(
    server: DispatchdServer, target: str
) -> None:
    """No provider given and none set globally: the worker runs jobs without any span,
    and the server (no provider) has no interceptor doing tracing either."""
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    seen: list[bool] = []
    worker = Worker(target)

    @worker.handler("plain")
    async def handle(job: ReceivedJob) -> None:
        seen.append(trace.get_current_span().get_span_context().is_valid)

    task = asyncio.create_task(worker.run_async())
    await worker.wait_connected(10)
    try:
        async with AsyncClient(target) as client:
            job = await client.submit("plain", b"x")
            assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
    finally:
        await worker.stop()
        await task
    assert seen == [False]
    assert not any(type(o).__name__ == "DispatchSpans" for o in server.observability.observers)


async def test_an_http_push_call_has_a_client_span_the_endpoint_continues(
    server_config: Config,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = dataclasses.replace(server_config, http_allow_cidr=("127.0.0.0/8",))
    endpoint = await Endpoint().start()
    try:
        async with (
            serving(DispatchdServer(config, tracer_provider=provider)) as srv,
            AsyncClient(f"127.0.0.1:{srv.port}") as client,
        ):
            await client.update_queue("hook", http_target=HttpTarget(url=endpoint.url), create=True)
            with provider.get_tracer("producer").start_as_current_span("produce") as produce:
                job = await client.submit("hook", b"x")
            assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
    finally:
        await endpoint.stop()
        provider.shutdown()
    (call,) = [s for s in exporter.get_finished_spans() if s.name == "HTTP POST"]
    assert call.kind is trace.SpanKind.CLIENT
    assert _ids(call)[0] == _ids(produce)[0]
    assert _parent_id(call) == _ids(produce)[1]  # the job's own context
    assert (call.attributes or {})["http.response.status_code"] == 200
    assert (call.attributes or {})["dispatchd.job_id"] == job.id
    (received,) = endpoint.calls
    trace_id, span_id = _ids(call)
    assert received.headers["traceparent"].startswith(f"00-{trace_id:032x}-{span_id:016x}-")
