"""Dispatch order and pause through a real Worker, on both backends."""

from __future__ import annotations

import asyncio
import time

import pytest

from dispatchd_client import (
    AsyncClient,
    DeadlineExceeded,
    JobState,
    KeyLimits,
    NewJob,
    ReceivedJob,
)
from tests.integration.helpers import eventually

from .conftest import StartWorker


async def test_a_paused_queue_dispatches_nothing_then_runs_by_priority_then_submit_order(
    target: str, start_worker: StartWorker
) -> None:
    order: list[bytes] = []

    async def record(job: ReceivedJob) -> bytes:
        order.append(job.payload)
        return b""

    async with AsyncClient(target) as client:
        await client.update_queue("p", width=1, create=True)
        await client.pause("p")
        specs = [
            NewJob("p", f"{prio}-{i}".encode(), priority=prio)
            for i, prio in enumerate([0, 5, 0, 9, 5, -1])
        ]
        jobs = await client.submit_batch(specs)
        worker = start_worker(configure=lambda w: w.handler("p")(record), concurrency=1)
        await worker.wait_connected(10)
        bumped = await client.reprioritize(jobs[5].id, 7)  # -1 -> 7: second in line
        assert bumped.priority == 7
        queue = await client.get_queue("p")
        assert (queue.pending_count, queue.underway_count, order) == (6, 0, [])
        await client.resume("p")
        for job in jobs:
            assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
    assert order == [b"9-3", b"-1-5", b"5-1", b"5-4", b"0-0", b"0-2"]


async def test_a_job_that_expires_behind_its_ordering_key_hands_the_key_on(
    target: str, start_worker: StartWorker
) -> None:
    async with AsyncClient(target) as client:
        await client.update_queue("k", width=0, create=True)
        first = await client.submit("k", b"a", ordering_key="acct-1")
        doomed = await client.submit("k", b"b", ordering_key="acct-1", ttl=0.2)
        last = await client.submit("k", b"c", ordering_key="acct-1")
        expired = await client.wait(doomed.id, timeout=10)
        assert expired.state is JobState.EXPIRED
        start_worker(configure=lambda w: w.handler("k")(lambda job: job.payload), concurrency=2)
        await client.update_queue("k", width=2)
        for job, payload in ((first, b"a"), (last, b"c")):
            done = await client.wait(job.id, timeout=10)
            assert (done.state, done.result) == (JobState.SUCCEEDED, payload)
        assert (await client.get_queue("k")).pending_count == 0


async def test_fairness_keys_take_turns_by_weight(target: str, start_worker: StartWorker) -> None:
    order: list[bytes] = []

    async def record(job: ReceivedJob) -> bytes:
        order.append(job.payload)
        return b""

    async with AsyncClient(target) as client:
        await client.update_queue("fair", width=1, create=True)
        await client.pause("fair")
        big = [
            NewJob("fair", f"a{i}".encode(), options={"fairness_key": "a", "fairness_weight": 2})
            for i in range(6)
        ]
        small = [NewJob("fair", f"b{i}".encode(), options={"fairness_key": "b"}) for i in range(2)]
        jobs = await client.submit_batch([*big, *small])
        gone = await client.submit("fair", b"b9", fairness_key="b")
        await client.cancel(gone.id)  # leaves its lane: b's turns are unchanged
        await client.reprioritize(jobs[5].id, 10)  # first within its key
        start_worker(configure=lambda w: w.handler("fair")(record), concurrency=1)
        await client.resume("fair")
        for job in jobs:
            assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
        assert (await client.get(jobs[0].id)).fairness_key == "a"
    # Key "a" takes two turns (its weight), then "b" one, until "b" runs dry; within a
    # key, priority then age.
    assert order == [b"a5", b"a0", b"b0", b"a1", b"a2", b"b1", b"a3", b"a4"]


async def test_a_key_at_its_in_flight_bound_waits_while_other_keys_run(
    target: str, start_worker: StartWorker
) -> None:
    release = asyncio.Event()
    running: dict[str, int] = {}
    peak: dict[str, int] = {}

    async def hold(job: ReceivedJob) -> bytes:
        key = job.payload.decode()[0]
        running[key] = running.get(key, 0) + 1
        peak[key] = max(peak.get(key, 0), running[key])
        try:
            await release.wait()
        finally:
            running[key] -= 1
        return b""

    async with AsyncClient(target) as client:
        await client.update_queue(
            "cap", width=10, key_limits=KeyLimits(max_in_flight_per_key=2), create=True
        )
        specs = [NewJob("cap", f"a{i}", options={"fairness_key": "a"}) for i in range(5)]
        specs += [NewJob("cap", f"b{i}", options={"fairness_key": "b"}) for i in range(3)]
        jobs = await client.submit_batch(specs)
        start_worker(configure=lambda w: w.handler("cap")(hold), concurrency=8)
        await eventually(lambda: running == {"a": 2, "b": 2}, what="two of each key running")
        queue = await client.get_queue("cap")
        assert (queue.underway_count, queue.pending_count) == (4, 4)
        assert queue.key_limits == KeyLimits(max_in_flight_per_key=2)
        await client.update_queue("cap", key_limits=KeyLimits(max_in_flight_per_key=3))
        await eventually(lambda: running == {"a": 3, "b": 3}, what="a third of each")
        release.set()
        for job in jobs:
            assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
    assert peak == {"a": 3, "b": 3}


async def test_each_key_keeps_its_own_rate(target: str, start_worker: StartWorker) -> None:
    starts: dict[str, list[float]] = {"a": [], "b": []}

    async def stamp(job: ReceivedJob) -> bytes:
        starts[job.payload.decode()[0]].append(time.monotonic())
        return b""

    async with AsyncClient(target) as client:
        limits = KeyLimits(per_key_rate=20.0, per_key_burst=1)
        queue = await client.update_queue("kr", width=10, key_limits=limits, create=True)
        assert queue.key_limits == limits
        specs = [
            NewJob("kr", f"{k}{i}", options={"fairness_key": k}) for k in "ab" for i in range(4)
        ]
        jobs = await client.submit_batch(specs)
        start_worker(configure=lambda w: w.handler("kr")(stamp), concurrency=8)
        for job in jobs:
            assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
    for key in "ab":
        # 4 dispatches of one key at 20/s with a burst of 1 take at least 3 token intervals.
        assert starts[key][-1] - starts[key][0] >= 3 / 20 * 0.95
    assert starts["b"][0] < starts["a"][-1]  # side by side: "b" did not wait for all of "a"


async def test_an_acquirer_that_gives_up_leaves_nothing_behind(
    target: str, start_worker: StartWorker
) -> None:
    async with AsyncClient(target) as client:
        await client.update_queue("gu", width=1, create=True)
        held = await client.acquire_slot("gu", ttl=30, timeout=5)
        with pytest.raises(DeadlineExceeded):
            await client.acquire_slot("gu", ttl=30, timeout=0.3)  # waits ahead of jobs
        job = await client.submit("gu", b"x")
        start_worker(configure=lambda w: w.handler("gu")(lambda j: b"ran"), concurrency=1)
        await client.release_slot(held.slot_id)
        # The abandoned request no longer holds the queue's jobs back.
        assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
        assert (await client.get_queue("gu")).slot_count == 0
