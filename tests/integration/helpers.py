"""Waiting helpers for integration tests: poll a condition with a deadline, never sleep-and-hope."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from dispatchd_client import AsyncClient, Job, JobState, ReceivedJob, Worker

from ..polling import eventually

__all__ = ["eventually", "hold_one_job"]


async def hold_one_job(
    client: AsyncClient, start_worker: Callable[..., Worker], queue: str, **worker: object
) -> tuple[Job, asyncio.Event]:
    """Submits a job to ``queue`` and starts a Worker (``worker``: its keyword arguments)
    that holds it until the returned event is set; returns once the job is underway."""
    release = asyncio.Event()

    async def handler(job: ReceivedJob) -> str:
        await release.wait()
        return "ok"

    job = await client.submit(queue, b"x")
    start_worker(configure=lambda w: w.handler(queue)(handler), **worker)

    async def underway() -> bool:
        return (await client.get(job.id)).state is JobState.UNDERWAY

    await eventually(underway, what="the job to be underway")
    return job, release
