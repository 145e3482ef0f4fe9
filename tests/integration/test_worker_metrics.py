"""The Python Worker's opt-in Prometheus metrics (dispatchd_client.metrics) and its failure
logs, through a real server: jobs by outcome, handler seconds, running, connected,
reconnects; a RetryableError logs one line, an unexpected exception its traceback."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry

from dispatchd.runtime import DispatchdServer
from dispatchd_client import (
    AsyncClient,
    JobState,
    PermanentError,
    ReceivedJob,
    RetryableError,
    Worker,
)
from dispatchd_client.metrics import WorkerMetrics

from .helpers import eventually


async def test_worker_metrics_count_outcomes_time_and_reconnects(
    server: DispatchdServer, target: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    worker = Worker(target, worker_id="m", concurrency=2, metrics=WorkerMetrics(registry))

    def value(name: str, **labels: str) -> float:
        got = registry.get_sample_value(name, labels)
        return 0.0 if got is None else got

    @worker.handler("m")
    async def handle(job: ReceivedJob) -> bytes:
        if job.payload == b"busy":
            raise RetryableError("the database is busy")
        if job.payload == b"bug":
            raise ValueError("unexpected")
        if job.payload == b"bad":
            raise PermanentError("bad input")
        return b"ok"

    task = asyncio.create_task(worker.run_async())
    caplog.set_level(logging.INFO, "dispatchd_client")
    try:
        await worker.wait_connected(10)
        assert value("dispatchd_worker_connected") == 1
        async with AsyncClient(target) as client:
            jobs = [await client.submit("m", p) for p in (b"ok", b"ok", b"busy", b"bug", b"bad")]
            for job in jobs:
                await eventually(
                    lambda job=job: _attempted(client, job.id), what=f"{job.id} attempted"
                )
        await eventually(lambda: value("dispatchd_worker_job_seconds_count", queue="m") == 5)
        assert value("dispatchd_worker_jobs_total", queue="m", outcome="succeeded") == 2
        assert value("dispatchd_worker_jobs_total", queue="m", outcome="retryable") == 2
        assert value("dispatchd_worker_jobs_total", queue="m", outcome="permanent") == 1
        assert value("dispatchd_worker_jobs_running", queue="m") == 0
        assert value("dispatchd_worker_reconnects_total") == 0
        await server.stop_now()  # the stream breaks without a drain: the worker reconnects
        await eventually(lambda: value("dispatchd_worker_reconnects_total") >= 1)
        assert value("dispatchd_worker_connected") == 0
    finally:
        await worker.stop()
        await task
    failures = {r.getMessage(): r.exc_info for r in caplog.records if "failed" in r.getMessage()}
    (busy,) = [m for m in failures if "busy" in m]
    assert failures[busy] is None  # expected: one line, no traceback
    (bug,) = [m for m in failures if "permanently" not in m and "busy" not in m]
    assert failures[bug] is not None  # a surprise: its traceback


async def _attempted(client: AsyncClient, job_id: str) -> bool:
    job = await client.get(job_id)
    return job.attempt >= 1 and job.state is not JobState.UNDERWAY
