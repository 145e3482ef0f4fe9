"""The per-queue counters and histograms on /metrics, on both backends (on Redis each
replica counts what it did itself; Prometheus sums the replicas)."""

from __future__ import annotations

import asyncio

from dispatchd.runtime import DispatchdServer
from dispatchd_client import AsyncClient, JobState, ReceivedJob, RetryPolicy
from tests.integration.helpers import eventually
from tests.integration.scrape import Samples, scrape

from .conftest import StartWorker


async def test_counters_follow_submits_dispatches_retries_and_outcomes(
    server: DispatchdServer, target: str, start_worker: StartWorker
) -> None:
    tries: dict[bytes, int] = {}

    async def flaky(job: ReceivedJob) -> bytes:
        tries[job.payload] = tries.get(job.payload, 0) + 1
        if job.payload == b"flaky" and tries[job.payload] == 1:
            raise ValueError("first time fails")
        return b"ok"

    async with AsyncClient(target) as client:
        await client.update_queue(
            "c", create=True, retry_policy=RetryPolicy(max_attempts=2, min_backoff=0.01)
        )
        gone = await client.submit("c", b"cancelled")
        await client.cancel(gone.id)
        jobs = [await client.submit("c", p) for p in (b"a", b"b", b"flaky")]
        start_worker(configure=lambda w: w.handler("c")(flaky), concurrency=2)
        for job in jobs:
            assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
    port = server.observability.metrics_port
    seen: list[Samples] = []

    async def counted() -> bool:
        seen[:] = [await scrape(port)]
        return seen[0].get("dispatchd_jobs_completed_total", queue="c", outcome="succeeded") == 3

    await eventually(counted, what="three successes counted")
    m = seen[0]
    assert m.value("dispatchd_jobs_submitted_total", queue="c") == 4
    assert m.value("dispatchd_jobs_dispatched_total", queue="c") == 4
    assert m.value("dispatchd_jobs_retried_total", queue="c") == 1
    assert m.value("dispatchd_jobs_completed_total", queue="c", outcome="cancelled") == 1
    assert m.value("dispatchd_job_wait_seconds_count", queue="c") == 3
    assert m.value("dispatchd_job_run_seconds_count", queue="c") == 4


async def test_a_job_that_expires_while_its_queue_is_paused_counts_once(
    server: DispatchdServer, target: str, start_worker: StartWorker
) -> None:
    async with AsyncClient(target) as client:
        await client.update_queue("x", paused=True, create=True)
        job = await client.submit("x", b"", ttl=0.2)
        assert (await client.wait(job.id, timeout=10)).state is JobState.EXPIRED
        # More passes over the queue (claims, reaps) after the expiry count nothing more.
        start_worker(configure=lambda w: w.handler("x")(lambda job: b"ok"))
        await client.resume("x")
        later = await client.submit("x", b"")
        assert (await client.wait(later.id, timeout=10)).state is JobState.SUCCEEDED
    port = server.observability.metrics_port
    seen: list[Samples] = []

    async def counted() -> bool:
        seen[:] = [await scrape(port)]
        return seen[0].get("dispatchd_jobs_completed_total", queue="x", outcome="succeeded") == 1

    await eventually(counted, what="the success counted")
    assert seen[0].value("dispatchd_jobs_completed_total", queue="x", outcome="expired") == 1


async def test_a_job_cancelled_while_underway_counts_once(
    server: DispatchdServer, target: str, start_worker: StartWorker
) -> None:
    started = asyncio.Event()

    async def slow(job: ReceivedJob) -> bytes:
        started.set()
        await asyncio.Event().wait()
        return b""

    async with AsyncClient(target) as client:
        job = await client.submit("cu", b"")
        start_worker(configure=lambda w: w.handler("cu")(slow))
        await asyncio.wait_for(started.wait(), 10)
        await client.cancel(job.id)
        port = server.observability.metrics_port

        async def answered() -> bool:  # the worker's answer freed the width slot
            return (await client.get_queue("cu")).underway_count == 0

        await eventually(answered, what="the worker to answer the cancel")
        after = await client.submit("cu", b"")  # one more result through the same path
        await client.cancel(after.id)
    samples = await scrape(port)
    assert samples.value("dispatchd_jobs_completed_total", queue="cu", outcome="cancelled") == 2
