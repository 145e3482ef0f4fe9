"""Workers through the real Worker runner: width, cancel, results, hooks, drain."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd.store.snapshot import SnapshotStore
from dispatchd_client import (
    AsyncClient,
    JobError,
    JobState,
    PermanentError,
    ReceivedJob,
    Unavailable,
    Worker,
)
from tests.inproc import serving

from .conftest import StartWorker
from .helpers import eventually


class Gate:
    """Holds handlers until released, and counts how many run at once."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.running = 0
        self.max_running = 0
        self.started: list[str] = []

    async def hold(self, job: ReceivedJob) -> bytes:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.started.append(job.id)
        try:
            await self.open.wait()
            return f"done {job.id}".encode()
        finally:
            self.running -= 1


async def test_width_caps_underway_jobs_across_workers(
    target: str, start_worker: StartWorker
) -> None:
    gate = Gate()
    async with AsyncClient(target) as client:
        await client.update_queue("w", width=2, create=True)
        jobs = [await client.submit("w", f"{i}".encode()) for i in range(12)]
        for n in range(3):
            start_worker(
                configure=lambda w: w.handler("w")(gate.hold), worker_id=f"w{n}", concurrency=4
            )
        await eventually(lambda: gate.running == 2, what="two jobs running")

        async def all_connected() -> bool:  # two workers may take the width before the third
            return (await client.get_queue("w")).worker_count == 3

        await eventually(all_connected, what="three workers connected")
        queue = await client.get_queue("w")
        assert (queue.underway_count, queue.pending_count, queue.worker_count) == (2, 10, 3)
        await client.update_queue("w", width=4)
        await eventually(lambda: gate.running == 4, what="four jobs running after widening")
        gate.open.set()
        for job in jobs:
            done = await client.wait(job.id, timeout=10)
            assert done.state is JobState.SUCCEEDED
            assert done.result == f"done {job.id}".encode()
        assert gate.max_running == 4


async def test_width_zero_dispatches_nothing(target: str, start_worker: StartWorker) -> None:
    gate = Gate()
    gate.open.set()
    async with AsyncClient(target) as client:
        await client.update_queue("z", width=0, create=True)
        job = await client.submit("z", b"x")
        worker = start_worker(configure=lambda w: w.handler("z")(gate.hold), concurrency=4)
        await worker.wait_connected(10)
        await eventually(lambda: _worker_count(client, "z", 1), what="the worker to be registered")
        queue = await client.get_queue("z")
        assert (queue.pending_count, queue.underway_count) == (1, 0)
        assert gate.started == []
        await client.update_queue("z", width=1)
        assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED


async def _worker_count(client: AsyncClient, queue: str, n: int) -> bool:
    return (await client.get_queue(queue)).worker_count == n


async def test_results_errors_and_hooks(target: str, start_worker: StartWorker) -> None:
    calls: list[str] = []

    def configure(w: Worker) -> None:
        @w.on_start
        def started() -> None:
            calls.append("start")

        @w.before_job
        def before(job: ReceivedJob) -> None:
            calls.append(f"before {job.payload.decode()}")

        @w.after_job
        def after(job: ReceivedJob, outcome: bytes | JobError) -> None:
            kind = "error" if isinstance(outcome, JobError) else "ok"
            calls.append(f"after {job.payload.decode()} {kind}")

        @w.handler("h")
        def handle(job: ReceivedJob) -> str:  # a sync handler runs in a thread
            if job.payload == b"boom":
                raise ValueError("it broke")
            if job.payload == b"fatal":
                raise PermanentError("never again")
            return job.payload.decode().upper()

    async with AsyncClient(target) as client:
        ok = await client.submit("h", b"fine")
        boom = await client.submit("h", b"boom")
        fatal = await client.submit("h", b"fatal")
        start_worker(configure=configure, concurrency=1)
        done = await client.wait(ok.id, timeout=10)
        assert (done.state, done.result, done.attempt) == (JobState.SUCCEEDED, b"FINE", 1)
        failed = await client.wait(boom.id, timeout=10)
        assert failed.state is JobState.FAILED
        assert failed.error == JobError("it broke", retryable=True, code="ValueError")
        permanent = await client.wait(fatal.id, timeout=10)
        assert permanent.error is not None
        assert not permanent.error.retryable
    assert calls[0] == "start"
    assert "before fine" in calls
    assert "after fine ok" in calls
    assert "after boom error" in calls


async def test_cancel_underway_job_reaches_the_worker(
    target: str, start_worker: StartWorker
) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow(job: ReceivedJob) -> bytes:
        started.set()
        try:
            await asyncio.Event().wait()  # runs until cancelled
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return b""

    async with AsyncClient(target) as client:
        job = await client.submit("c", b"x")
        start_worker(configure=lambda w: w.handler("c")(slow), concurrency=1)
        await asyncio.wait_for(started.wait(), 10)
        result = await client.cancel(job.id)
        assert result.state is JobState.CANCELLED
        await asyncio.wait_for(cancelled.wait(), 10)
        await eventually(
            lambda: _underway_is(client, "c", 0), what="the cancelled job's slot to free"
        )
        assert (await client.get(job.id)).state is JobState.CANCELLED


async def _underway_is(client: AsyncClient, queue: str, n: int) -> bool:
    return (await client.get_queue(queue)).underway_count == n


async def test_drain_lets_underway_jobs_finish_and_keeps_the_rest(
    target: str, server: DispatchdServer, server_config: Config, start_worker: StartWorker
) -> None:
    gate = Gate()
    async with AsyncClient(target) as client:
        await client.update_queue("d", width=1, create=True)
        held = await client.submit("d", b"held")
        waiting = await client.submit("d", b"waiting", priority=-1)
        worker = start_worker(configure=lambda w: w.handler("d")(gate.hold), concurrency=2)
        await eventually(lambda: gate.running == 1, what="the first job to start")
        pending, underway = await client.drain(grace=20)
        assert (pending, underway) == (1, 1)
        with pytest.raises(Unavailable, match="draining"):
            await client.submit("d", b"late")
        gate.open.set()
        await asyncio.wait_for(server.stopped.wait(), 20)
    await eventually(lambda: not worker.connected, what="the worker to leave after the drain")
    # The next server (a restart, or another replica) finds what the drain left.
    async with (
        serving(DispatchdServer(server_config)) as after,
        AsyncClient(f"127.0.0.1:{after.port}") as client,
    ):
        assert (await client.get(held.id)).state is JobState.SUCCEEDED
        left = [j async for j in client.list_jobs("d", state=JobState.PENDING)]
        assert [j.id for j in left] == [waiting.id]


@pytest.mark.embedded_only
async def test_drain_snapshot_lists_what_was_not_finished(
    target: str, server: DispatchdServer, start_worker: StartWorker, tmp_path: Path
) -> None:
    gate = Gate()
    async with AsyncClient(target) as client:
        await client.update_queue("d", width=1, create=True)
        await client.submit("d", b"held")
        waiting = await client.submit("d", b"waiting", priority=-1)
        start_worker(configure=lambda w: w.handler("d")(gate.hold), concurrency=2)
        await eventually(lambda: gate.running == 1, what="the first job to start")
        await client.drain(grace=20)
        gate.open.set()
        await asyncio.wait_for(server.stopped.wait(), 20)
    snap = SnapshotStore(tmp_path / "data").read_message()
    assert [j.id for j in snap.jobs] == [waiting.id]


async def test_drain_grace_running_out_puts_underway_jobs_back(
    target: str, server: DispatchdServer, server_config: Config, start_worker: StartWorker
) -> None:
    gate = Gate()  # never opened: the job outlives the grace
    async with AsyncClient(target) as client:
        job = await client.submit("g", b"stuck")
        start_worker(configure=lambda w: w.handler("g")(gate.hold), concurrency=1)
        await eventually(lambda: gate.running == 1, what="the job to start")
    await server.start_drain(0.2)
    await asyncio.wait_for(server.stopped.wait(), 10)
    async with (
        serving(DispatchdServer(server_config)) as after,
        AsyncClient(f"127.0.0.1:{after.port}") as client,
    ):
        back = await client.get(job.id)
        # Pending again with its attempt kept (a drain counts no failed attempt).
        assert (back.state, back.attempt) == (JobState.PENDING, 1)


@pytest.mark.embedded_only
async def test_the_drain_snapshot_lists_jobs_in_dispatch_order(
    target: str, server: DispatchdServer, server_config: Config, tmp_path: Path
) -> None:
    """docs/semantics.md: snapshot.pb lists what waits in the order it would be dispatched
    (priority first, then submit order), and keeps the submit order beside it, so a restart
    restores the same line."""
    async with AsyncClient(target) as client:
        await client.update_queue("o", paused=True, create=True)
        low = await client.submit("o", b"low", priority=-5)
        first = await client.submit("o", b"first")
        high = await client.submit("o", b"high", priority=9)
        second = await client.submit("o", b"second")
        await client.drain(grace=5)
        await asyncio.wait_for(server.stopped.wait(), 20)
    snap = SnapshotStore(tmp_path / "data").read_message()
    assert [j.id for j in snap.jobs] == [high.id, first.id, second.id, low.id]
    assert list(snap.submit_order) == [2, 1, 3, 0]  # each one's place among the submits
    async with (
        serving(DispatchdServer(server_config)) as after,
        AsyncClient(f"127.0.0.1:{after.port}") as client,
    ):
        listed = [j.id async for j in client.list_jobs("o", state=JobState.PENDING)]
    assert listed == [high.id, first.id, second.id, low.id]
