"""Dispatch policies end to end: real server, real client, real Worker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd_client import (
    AsyncClient,
    FailedPrecondition,
    JobState,
    NewJob,
    NotFound,
    PermanentError,
    Rate,
    ReceivedJob,
    ResourceExhausted,
    RetryPolicy,
    Worker,
)

from .conftest import StartWorker
from .helpers import eventually

FAST_RETRY = RetryPolicy(max_attempts=5, min_backoff=0.01, max_backoff=0.05)


async def test_retry_succeeds_on_the_third_attempt(target: str, start_worker: StartWorker) -> None:
    seen: list[int] = []

    async def flaky(job: ReceivedJob) -> str:
        seen.append(job.attempt)
        if job.attempt < 3:
            raise ConnectionError(f"try {job.attempt} failed")
        return "ok"

    async with AsyncClient(target) as client:
        await client.update_queue("flaky", retry_policy=FAST_RETRY, create=True)
        job = await client.submit("flaky", b"x")
        start_worker(configure=lambda w: w.handler("flaky")(flaky), concurrency=1)
        done = await client.wait(job.id, timeout=10)
    assert (done.state, done.attempt, done.result) == (JobState.SUCCEEDED, 3, b"ok")
    assert seen == [1, 2, 3]
    assert [a.number for a in done.attempts] == [1, 2, 3]
    assert [a.failed for a in done.attempts] == [True, True, False]
    assert done.attempts[0].error_message == "try 1 failed"
    assert done.attempts[0].error_code == "ConnectionError"


async def test_exhausted_retries_end_dead_and_retry_job_revives(
    target: str, start_worker: StartWorker
) -> None:
    healthy = asyncio.Event()

    async def handler(job: ReceivedJob) -> str:
        if not healthy.is_set():
            raise RuntimeError("downstream is down")
        return "recovered"

    async with AsyncClient(target) as client:
        policy = RetryPolicy(max_attempts=2, min_backoff=0.01, max_backoff=0.01)
        job = await client.submit("d", b"x", retry_policy=policy)
        start_worker(configure=lambda w: w.handler("d")(handler), concurrency=1)
        dead = await client.wait(job.id, timeout=10)
        assert (dead.state, dead.attempt) == (JobState.DEAD, 2)
        assert dead.error is not None
        assert dead.error.message == "downstream is down"
        dead_ids = [j.id async for j in client.list_jobs("d", JobState.DEAD)]
        assert job.id in dead_ids
        with pytest.raises(FailedPrecondition, match="only DEAD or FAILED"):
            await client.retry_job((await client.submit("d", b"z", delay=60)).id)
        healthy.set()
        revived = await client.retry_job(job.id)
        assert revived.state in (JobState.PENDING, JobState.UNDERWAY)
        done = await client.wait(job.id, timeout=10)
        assert (done.state, done.result, done.attempt) == (JobState.SUCCEEDED, b"recovered", 3)


async def test_permanent_error_under_a_policy_is_dead_at_once(
    target: str, start_worker: StartWorker
) -> None:
    async def refuse(job: ReceivedJob) -> str:
        raise PermanentError("bad payload")

    async with AsyncClient(target) as client:
        await client.update_queue("p", retry_policy=FAST_RETRY, create=True)
        job = await client.submit("p", b"x")
        start_worker(configure=lambda w: w.handler("p")(refuse), concurrency=1)
        done = await client.wait(job.id, timeout=10)
    assert (done.state, done.attempt) == (JobState.DEAD, 1)


async def test_delayed_job_waits_scheduled_then_runs(
    target: str, start_worker: StartWorker
) -> None:
    async def run(job: ReceivedJob) -> str:
        return "ran"

    async with AsyncClient(target) as client:
        job = await client.submit("later", b"x", delay=0.3)
        assert job.state is JobState.SCHEDULED
        assert job.not_before is not None
        assert (await client.get_queue("later")).scheduled_count == 1
        start_worker(configure=lambda w: w.handler("later")(run), concurrency=1)
        done = await client.wait(job.id, timeout=10)
    assert done.state is JobState.SUCCEEDED
    assert done.first_dispatch_time is not None
    assert done.first_dispatch_time >= job.not_before


async def test_ttl_expires_a_job_that_could_not_run(target: str) -> None:
    async with AsyncClient(target) as client:
        await client.update_queue("ttl", width=0, create=True)
        job = await client.submit("ttl", b"x", ttl=0.2)
        assert job.expire_time is not None
        done = await client.wait(job.id, timeout=10)
        assert done.state is JobState.EXPIRED
        assert (await client.get_queue("ttl")).pending_count == 0


async def test_ordering_key_runs_one_at_a_time_in_submit_order(
    target: str, start_worker: StartWorker
) -> None:
    running = 0
    overlap = False
    order: list[bytes] = []

    async def record(job: ReceivedJob) -> str:
        nonlocal running, overlap
        running += 1
        overlap = overlap or running > 1
        order.append(job.payload)
        await asyncio.sleep(0)  # let the other workers try to start something
        running -= 1
        return "done"

    async with AsyncClient(target) as client:
        jobs = [
            await client.submit("ord", f"{i}".encode(), priority=i % 3, ordering_key="acct-1")
            for i in range(9)
        ]
        for n in range(3):
            start_worker(
                configure=lambda w: w.handler("ord")(record), worker_id=f"w{n}", concurrency=4
            )
        for job in jobs:
            assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
    assert order == [f"{i}".encode() for i in range(9)]
    assert not overlap


async def test_rate_limits_dispatches(target: str, start_worker: StartWorker) -> None:
    starts: list[float] = []

    async def stamp(job: ReceivedJob) -> str:
        starts.append(time.monotonic())
        return ""

    async with AsyncClient(target) as client:
        queue = await client.update_queue("slow", rate=Rate(20, burst=1), create=True)
        assert queue.rate == Rate(20.0, 1)
        jobs = await client.submit_batch([NewJob("slow", b"x")] * 6)
        start_worker(configure=lambda w: w.handler("slow")(stamp), concurrency=8)
        for job in jobs:
            assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
        cleared = await client.update_queue("slow", rate=None)
        assert cleared.rate is None
    # 6 dispatches at 20/s with a burst of 1 take at least 5 token intervals.
    assert starts[-1] - starts[0] >= 5 / 20 * 0.95


async def test_idempotency_key_returns_the_first_job(target: str) -> None:
    async with AsyncClient(target) as client:
        first = await client.submit("idem", b"1", idempotency_key="order-7")
        again = await client.submit("idem", b"2", idempotency_key="order-7")
        assert (first.duplicate, again.duplicate) == (False, True)
        assert again.id == first.id
        batch = await client.submit_batch(
            [
                NewJob("idem", b"3", options={"idempotency_key": "order-8"}),
                NewJob("idem", b"4", options={"idempotency_key": "order-8"}),
                NewJob("idem", b"5", options={"idempotency_key": "order-7"}),
            ]
        )
        assert [j.duplicate for j in batch] == [False, True, True]
        assert batch[0].id == batch[1].id
        assert batch[2].id == first.id
        assert (await client.get_queue("idem")).pending_count == 2


async def test_max_pending_refuses_the_whole_batch(target: str) -> None:
    async with AsyncClient(target) as client:
        await client.update_queue("bounded", max_pending=3, create=True)
        await client.submit("bounded", b"1")
        await client.submit("bounded", b"2")
        with pytest.raises(ResourceExhausted, match=r"'bounded'.*max_pending of 3"):
            await client.submit_batch([NewJob("bounded", b"3"), NewJob("bounded", b"4")])
        assert (await client.get_queue("bounded")).pending_count == 2
        await client.submit("bounded", b"3")
        with pytest.raises(ResourceExhausted):
            await client.submit("bounded", b"4")


async def test_purge_forgets_finished_jobs(target: str, start_worker: StartWorker) -> None:
    async def ok(job: ReceivedJob) -> str:
        return "ok"

    async with AsyncClient(target) as client:
        jobs = await client.submit_batch([NewJob("purge", b"x")] * 3)
        start_worker(configure=lambda w: w.handler("purge")(ok), concurrency=3)
        for job in jobs:
            await client.wait(job.id, timeout=10)
        assert await client.purge_jobs("purge", JobState.SUCCEEDED) == 3
        with pytest.raises(NotFound):
            await client.get(jobs[0].id)


async def test_slot_shares_width_and_times_out(target: str, start_worker: StartWorker) -> None:
    async def ok(job: ReceivedJob) -> str:
        return "ok"

    async with AsyncClient(target) as client:
        await client.update_queue("sem", width=1, create=True)
        slot = await client.acquire_slot("sem", holder="cron:nightly", ttl=1.0, timeout=5)
        assert (await client.get_queue("sem")).slot_count == 1
        job = await client.submit("sem", b"x")
        start_worker(configure=lambda w: w.handler("sem")(ok), concurrency=1)
        waiting = await client.wait(job.id, timeout=0.1)
        assert waiting.state is JobState.PENDING  # the slot holds the only unit of width
        renewed = await client.renew_slot(slot.slot_id)
        assert renewed.expire_time >= slot.expire_time
        # Not renewed again: the server frees it after its ttl and the job runs.
        assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
        with pytest.raises(NotFound, match="released or it expired"):
            await client.renew_slot(slot.slot_id)
        second = await client.acquire_slot("sem", ttl=30, timeout=5)
        await client.release_slot(second.slot_id)
        assert (await client.get_queue("sem")).slot_count == 0


async def test_policies_survive_a_drain_and_restart(tmp_path: Path) -> None:
    config = Config(listen="127.0.0.1:0", data_dir=tmp_path / "data", http_listen="0")
    first = DispatchdServer(config)
    port = await first.start()
    async with AsyncClient(f"127.0.0.1:{port}") as client:
        await client.update_queue(
            "keep", rate=Rate(7, 3), retry_policy=FAST_RETRY, max_pending=50, create=True
        )
        later = await client.submit("keep", b"x", delay=3600, ordering_key="k")
        queued = await client.submit("keep", b"y", ordering_key="k", idempotency_key="i-1")
    await first.drain(grace=1)
    second = DispatchdServer(config)
    port = await second.start()
    try:
        async with AsyncClient(f"127.0.0.1:{port}") as client:
            queue = await client.get_queue("keep")
            assert (queue.rate, queue.retry_policy, queue.max_pending) == (
                Rate(7, 3),
                FAST_RETRY,
                50,
            )
            assert (queue.scheduled_count, queue.pending_count) == (1, 1)
            restored = await client.get(later.id)
            assert (restored.state, restored.ordering_key) == (JobState.SCHEDULED, "k")
            again = await client.submit("keep", b"z", idempotency_key="i-1")
            assert (again.duplicate, again.id) == (True, queued.id)
    finally:
        await second.stop_now()


async def test_worker_fixture_is_a_real_worker(start_worker: StartWorker) -> None:
    worker = start_worker(configure=lambda w: w.handler("noop")(lambda job: b""))
    assert isinstance(worker, Worker)
    await worker.wait_connected(10)
    await eventually(lambda: worker.connected, what="the worker to connect")
