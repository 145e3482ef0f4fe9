"""Workflows through the real clients and Worker, on both backends (docs/workflows.md):
progress reported from a handler, a batch as a context manager whose on_complete callback
runs once, a dependency chain run by a real worker, the sync client's batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from dispatchd_client import (
    AsyncClient,
    Client,
    EventKind,
    JobEvent,
    JobState,
    NewJob,
    ReceivedJob,
)
from tests.integration.dispatchctl import Dispatchctl

from .conftest import StartWorker
from .helpers import eventually


async def test_progress_batch_and_dependencies_through_the_worker(
    target: str, start_worker: StartWorker
) -> None:
    seen: list[str] = []
    halfway = asyncio.Event()
    finish = asyncio.Event()

    async def handle(job: ReceivedJob) -> bytes:
        seen.append(job.payload.decode())
        if job.payload == b"slow":
            job.report_progress(50, "half way")
            halfway.set()
            await finish.wait()
        return b"out:" + job.payload

    start_worker(configure=lambda w: w.handler("flow")(handle), concurrency=4)
    async with AsyncClient(target) as client:
        slow = await client.submit("flow", b"slow")
        await asyncio.wait_for(halfway.wait(), 10)
        await eventually(lambda: _progress_of(client, slow.id, "half way"), what="progress stored")
        finish.set()
        async with client.batch(
            "flow", description="three", on_complete=NewJob("flow", b"callback")
        ) as b:
            first = await b.submit(b"a")
            second = await b.submit(b"b", parent_ids=[first.id])
            # (its state in the answer may be any: the worker is quick)
            assert second.batch_id == b.batch_id
        done = await b.wait(timeout=10)
        assert done.complete
        assert done.counts.succeeded == 2
        assert done.on_complete_job_id
        callback = await client.wait(done.on_complete_job_id, timeout=10)
        assert callback.state is JobState.SUCCEEDED
        assert callback.headers["dispatchd-batch-succeeded"] == "2"
        assert seen.index("a") < seen.index("b")
        assert seen.count("callback") == 1
        parent = await client.get(first.id)
        assert parent.result == b"out:a"
        assert (await client.get(second.id)).parent_ids == (first.id,)


async def _progress_of(client: AsyncClient, job_id: str, message: str) -> bool:
    job = await client.get(job_id)
    return job.progress is not None and job.progress.message == message


async def test_the_sync_client_batch(target: str) -> None:
    # The server runs on this test's loop: the blocking client runs in a thread.
    await asyncio.to_thread(_sync_batch, target)


def _sync_batch(target: str) -> None:
    with Client(target) as client:
        with client.batch("syncflow", batch_id="s1") as b:
            job = b.submit(b"x")
        assert b.batch is not None
        assert b.batch.closed
        assert client.get_batch("syncflow", "s1").counts.active == 1
        cancelled = client.cancel_batch("syncflow", "s1")
        assert cancelled.counts.cancelled == 1
        assert client.get(job.id).cancel_reason == "its batch s1 was cancelled"


async def test_watch_follows_a_job_and_dispatchctl_resumes_from_a_token(
    target: str, start_worker: StartWorker
) -> None:
    start_worker(configure=lambda w: w.handler("evq")(lambda job: b"done"), concurrency=2)
    async with AsyncClient(target) as client:
        events = client.watch(queues=["evq"])
        first = await _first_event(client, events)
        job = await client.submit("evq", b"x")
        seen: list[EventKind] = []
        while EventKind.SUCCEEDED not in seen:
            item = await asyncio.wait_for(anext(events), 10)
            if isinstance(item, JobEvent) and item.job_id == job.id:
                seen.append(item.kind)
        assert seen == [EventKind.SUBMITTED, EventKind.DISPATCHED, EventKind.SUCCEEDED]
        await events.aclose()  # type: ignore[attr-defined]
    run = await Dispatchctl(target)(
        "watch", "--events", "--queue", "evq", "--from", first.resume_token, "--count", "2"
    )
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert len(lines) == 2
    assert all("evq" in line and "token=" in line for line in lines)


async def _first_event(client: AsyncClient, events: AsyncIterator[object]) -> JobEvent:
    """The watch starts with its first read: marker jobs until it has one (in order)."""
    waiting = asyncio.ensure_future(anext(events))
    for _ in range(100):
        await client.submit("evq", b"marker")
        done, _ = await asyncio.wait({waiting}, timeout=0.1)
        if done:
            item = waiting.result()
            assert isinstance(item, JobEvent)
            return item
    raise AssertionError("the watch never saw an event")
