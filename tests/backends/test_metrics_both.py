"""The per-queue counters and histograms on /metrics, on both backends (on Redis each
replica counts what it did itself; Prometheus sums the replicas)."""

from __future__ import annotations

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
