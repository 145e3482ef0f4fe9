"""Waiting helpers for integration tests: poll a condition with a deadline, never sleep-and-hope."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from dispatchd_client import AsyncClient, Job, JobState, ReceivedJob, Worker

POLL_INTERVAL = 0.01


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    within: float = 10.0,
    what: str = "condition",
) -> None:
    """Polls ``check`` (sync or async) until it is true or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL)


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
