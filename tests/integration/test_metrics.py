"""The real /metrics endpoint, scraped over HTTP after real traffic (real server, client and
Worker): values, not just names."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest

from dispatchd import __version__
from dispatchd.config import Config
from dispatchd.observability.metrics import MetricsObserver
from dispatchd.runtime import DispatchdServer, StartError
from dispatchd_client import (
    AsyncClient,
    JobState,
    NotFound,
    PermanentError,
    Rate,
    ReceivedJob,
    RetryPolicy,
    Worker,
)
from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc
from tests.polling import eventually

from .scrape import Samples, fetch, scrape
from .test_leases import RawWorker

SERVICE = "dispatchd.v1.DispatcherService"


def _ok(d: pb.Delivery) -> pb.WorkRequest:
    result = pb.JobResult(job_id=d.job.id, lease_id=d.lease_id, output=b"ok")
    return pb.WorkRequest(results=pb.WorkResults(results=[result]))


@pytest.fixture
async def stub(target: str) -> AsyncIterator[pb_grpc.DispatcherServiceStub]:
    async with grpc.aio.insecure_channel(target) as channel:
        yield pb_grpc.DispatcherServiceStub(channel)


async def _run_worker(target: str) -> tuple[Worker, asyncio.Task[None]]:
    worker = Worker(target, worker_id="w1", concurrency=4)

    @worker.handler("mq")
    async def handle(job: ReceivedJob) -> bytes:
        if job.payload == b"fail":
            raise PermanentError("no")
        return b"ok"

    task = asyncio.create_task(worker.run_async())
    await worker.wait_connected(10)
    return worker, task


async def test_counters_gauges_and_histograms_after_real_traffic(
    server: DispatchdServer, target: str
) -> None:
    worker, task = await _run_worker(target)
    async with AsyncClient(target) as client:
        await client.update_queue("mq", width=3, create=True)
        await client.update_queue("pq", paused=True, create=True)
        jobs = [await client.submit("mq", b"fine") for _ in range(5)]
        jobs += [await client.submit("mq", b"fail") for _ in range(2)]
        held = [await client.submit("pq", b"x") for _ in range(2)]
        await client.cancel(held[0].id)
        with pytest.raises(NotFound):
            await client.get(jobs[0].id[:20] + "000000" + jobs[0].id[26:])
        states = [(await client.wait(j.id, timeout=10)).state for j in jobs]
        m = await scrape(server.observability.metrics_port)

    # Counters, per queue label.
    assert m.value("dispatchd_jobs_submitted_total", queue="mq") == 7
    assert m.value("dispatchd_jobs_submitted_total", queue="pq") == 2
    assert m.value("dispatchd_jobs_dispatched_total", queue="mq") == 7
    assert m.value("dispatchd_jobs_dispatched_total", queue="pq") == 0
    by_outcome = {
        o: m.value("dispatchd_jobs_completed_total", queue="mq", outcome=o)
        for o in ("succeeded", "failed", "cancelled", "expired", "dead")
    }
    assert by_outcome == {
        "succeeded": 5,
        "failed": states.count(JobState.FAILED),
        "cancelled": 0,
        "expired": 0,
        "dead": states.count(JobState.DEAD),
    }
    assert by_outcome["failed"] + by_outcome["dead"] == 2
    assert m.value("dispatchd_jobs_completed_total", queue="pq", outcome="cancelled") == 1
    assert m.value("dispatchd_leases_expired_total", queue="mq") == 0
    # Histograms: one wait per first dispatch, one run per result; cumulative buckets.
    assert m.value("dispatchd_job_wait_seconds_count", queue="mq") == 7
    assert m.value("dispatchd_job_run_seconds_count", queue="mq") == 7
    assert m.value("dispatchd_job_run_seconds_bucket", queue="mq", le="+Inf") == 7
    assert 0 < m.value("dispatchd_job_run_seconds_sum", queue="mq") < 10
    assert m.value("dispatchd_job_wait_seconds_bucket", queue="mq", le="3600.0") == 7
    # Gauges, read from the engine at scrape time.
    assert m.value("dispatchd_jobs_pending", queue="pq") == 1
    assert m.value("dispatchd_queue_paused", queue="pq") == 1
    assert m.value("dispatchd_queue_paused", queue="mq") == 0
    assert m.value("dispatchd_queue_width", queue="mq") == 3
    assert m.value("dispatchd_jobs_underway", queue="mq") == 0
    assert m.value("dispatchd_jobs_scheduled", queue="mq") == 0
    assert m.get("dispatchd_queue_rate_per_second", queue="mq") is None  # unlimited
    assert m.value("dispatchd_workers_connected") == 1
    assert m.value("dispatchd_worker_credits", state="free") == 4
    assert m.value("dispatchd_worker_credits", state="held") == 0
    # gRPC server metrics, by method and status code.
    submits = m.value("dispatchd_grpc_requests_total", service=SERVICE, method="Submit", code="OK")
    assert submits == 9
    assert m.value("dispatchd_grpc_request_seconds_count", service=SERVICE, method="Submit") == 9
    not_found = {"service": SERVICE, "method": "GetJob", "code": "NOT_FOUND"}
    assert m.value("dispatchd_grpc_requests_total", **not_found) == 1
    assert m.labels_of("dispatchd_build_info", "version") == {__version__}
    assert m.value("dispatchd_draining") == 0
    assert m.families["process_cpu_seconds"] == "counter"  # the process collector is on

    await worker.stop()
    await task
    m = await scrape(server.observability.metrics_port)
    assert m.value("dispatchd_workers_connected") == 0
    work = {"service": SERVICE, "method": "Work", "code": "OK"}
    assert m.value("dispatchd_grpc_requests_total", **work) == 1


async def test_lease_expiry_and_stale_results_are_counted(
    server: DispatchdServer, target: str, stub: pb_grpc.DispatcherServiceStub
) -> None:
    port = server.observability.metrics_port
    async with AsyncClient(target) as client:
        await client.update_queue("le", lease_duration=1.0, create=True)
        job = await client.submit("le", b"x")
        worker = RawWorker(stub, "le", 1)
        first = (await worker.next("deliveries")).deliveries.deliveries[0]
        m = await scrape(port)
        assert m.value("dispatchd_worker_credits", state="held") == 1
        assert m.value("dispatchd_jobs_underway", queue="le") == 1
        await eventually(lambda: _pending(client, job.id), what="the lease to expire")
        worker.send(_ok(first))  # stale: that lease expired (and the worker lets go of it)
        await worker.next("rejections")
        again = (await worker.next("deliveries")).deliveries.deliveries[0]
        bogus = pb.Delivery(lease_id="nope", job=pb.Job(id="unknown-job"))
        worker.send(_ok(bogus))
        await worker.next("rejections")
        worker.send(_ok(again))
        await client.wait(job.id, timeout=10)
        m = await scrape(port)
        await worker.close()
    assert m.value("dispatchd_leases_expired_total", queue="le") == 1
    assert m.value("dispatchd_jobs_dispatched_total", queue="le") == 2
    assert m.value("dispatchd_job_wait_seconds_count", queue="le") == 1  # first dispatch only
    assert m.value("dispatchd_stale_results_total", queue="le") == 1
    assert m.value("dispatchd_stale_results_total", queue="_unknown") == 1
    assert m.value("dispatchd_jobs_completed_total", queue="le", outcome="succeeded") == 1


async def _pending(client: AsyncClient, job_id: str) -> bool:
    return (await client.get(job_id)).state is JobState.PENDING


async def test_queues_past_the_cap_share_the_other_label(server_config: Config) -> None:
    srv = DispatchdServer(replace(server_config, metrics_max_queues=2))
    await srv.start()
    try:
        async with AsyncClient(f"127.0.0.1:{srv.port}") as client:
            for name in ("q1", "q2", "q3", "q4", "q4"):
                await client.submit(name, b"x")
            await client.pause("q3")
        m = await scrape(srv.observability.metrics_port)
    finally:
        await srv.stop_now()
    assert m.labels_of("dispatchd_jobs_submitted_total", "queue") == {"q1", "q2", "_other"}
    assert m.value("dispatchd_jobs_submitted_total", queue="_other") == 3
    assert m.value("dispatchd_jobs_pending", queue="_other") == 3
    assert m.value("dispatchd_queue_width", queue="_other") == 2 * server_config.default_width
    assert m.value("dispatchd_queue_paused", queue="_other") == 1
    assert m.labels_of("dispatchd_jobs_pending", "queue") == {"q1", "q2", "_other"}


async def test_draining_gauge_and_endpoint_closes_after_the_drain(
    server: DispatchdServer, target: str, stub: pb_grpc.DispatcherServiceStub
) -> None:
    port = server.observability.metrics_port
    async with AsyncClient(target) as client:
        await client.submit("dq", b"x")
        worker = RawWorker(stub, "dq", 1)
        delivery = (await worker.next("deliveries")).deliveries.deliveries[0]
        await client.drain(grace=10)
        await worker.next("drain")
        m = await scrape(port)
        assert m.value("dispatchd_draining") == 1
        assert m.value("dispatchd_jobs_underway", queue="dq") == 1
        worker.send(_ok(delivery))
        await asyncio.wait_for(server.stopped.wait(), 10)
        await worker.close()
    with pytest.raises(urllib.error.URLError, match="refused"):
        await fetch(port)


async def test_http_endpoint_answers_like_an_exporter(server: DispatchdServer) -> None:
    port = server.observability.metrics_port
    assert (await fetch(port, "/nothing")).status == 404
    assert (await fetch(port, "/metrics", method="POST")).status == 405
    head = await fetch(port, "/metrics", method="HEAD")
    assert (head.status, head.body) == (200, "")
    assert head.content_type.startswith("text/plain; version=0.0.4")
    index = await fetch(port, "/")
    assert "/metrics" in index.body
    # A scrape that starts from nothing still has every family, with no queue samples.
    m = Samples((await fetch(port)).body)
    assert m.families["dispatchd_jobs_pending"] == "gauge"
    assert m.families["dispatchd_jobs_completed"] == "counter"
    assert m.families["dispatchd_job_wait_seconds"] == "histogram"


async def test_metrics_off_means_no_observer_no_interceptor_no_port(
    server_config: Config,
) -> None:
    srv = DispatchdServer(replace(server_config, metrics_listen="0"))
    await srv.start()
    try:
        assert srv.observability.metrics_port == 0
        assert srv.observability.interceptors == []
        assert not any(isinstance(o, MetricsObserver) for o in srv.observability.observers)
        async with AsyncClient(f"127.0.0.1:{srv.port}") as client:
            job = await client.submit("off", b"x")
            assert job.state is JobState.PENDING
    finally:
        await srv.stop_now()


async def test_taken_metrics_port_is_a_start_error(server_config: Config) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = DispatchdServer(replace(server_config, metrics_listen=f"127.0.0.1:{port}"))
        with pytest.raises(StartError, match="--metrics-listen"):
            await srv.start()
    assert srv.observability.metrics_port == 0


async def test_policies_show_as_retries_dead_jobs_scheduled_jobs_and_rates(
    server: DispatchdServer, target: str
) -> None:
    worker = Worker(target, concurrency=2)

    @worker.handler("rq")
    async def flaky(job: ReceivedJob) -> bytes:
        raise ValueError("always")  # retryable: the policy decides

    task = asyncio.create_task(worker.run_async())
    await worker.wait_connected(10)
    try:
        async with AsyncClient(target) as client:
            await client.update_queue(
                "rq",
                create=True,
                rate=Rate(250.0, burst=5),
                retry_policy=RetryPolicy(max_attempts=2, min_backoff=0.01, max_backoff=0.01),
            )
            job = await client.submit("rq", b"x")
            await client.submit("rq", b"later", delay=3600)
            done = await client.wait(job.id, timeout=10)
            m = await scrape(server.observability.metrics_port)
    finally:
        await worker.stop()
        await task
    assert (done.state, done.attempt) == (JobState.DEAD, 2)
    assert m.value("dispatchd_jobs_retried_total", queue="rq") == 1
    assert m.value("dispatchd_jobs_completed_total", queue="rq", outcome="dead") == 1
    assert m.value("dispatchd_jobs_dispatched_total", queue="rq") == 2
    assert m.value("dispatchd_job_run_seconds_count", queue="rq") == 2  # both attempts ran
    assert m.value("dispatchd_jobs_scheduled", queue="rq") == 1
    assert m.value("dispatchd_jobs_pending", queue="rq") == 0
    assert m.value("dispatchd_queue_rate_per_second", queue="rq") == 250.0
