"""Three dispatchd processes on one Redis, six workers spread over them, one queue of
width 5 and 500 jobs/s: worker-side timestamps show the width and the rate held across
replicas, and a replica killed with SIGKILL mid-run loses nothing: its leases expire and
its jobs run elsewhere."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from dispatchd_client import AsyncClient, JobState, NewJob, Rate, ReceivedJob, Worker

from ..polling import eventually
from .conftest import ServerProcess
from .replica_checks import most_at_once, worst_burst

JOBS = 20_000
WIDTH = 5
RATE = 500.0
BURST = 20
LEASE = 2.0
#: Deliveries reach workers up to this late (loaded CI, three servers on two cores): a
#: group of jobs dispatched over this long may start in one instant on the worker side.
JITTER = 0.1


@pytest.mark.timeout(240)
async def test_three_replicas_hold_width_and_rate_and_lose_nothing_to_a_kill(
    tmp_path: Path, redis_url: str, start_server: type[ServerProcess]
) -> None:
    replicas = [
        start_server(tmp_path / f"r{i}", "--backend", "redis", "--redis-url", redis_url)
        for i in range(3)
    ]
    targets = [r.wait_ready() for r in replicas]
    runs: list[tuple[str, float, float]] = []
    ran: set[str] = set()
    quarter, everything = asyncio.Event(), asyncio.Event()

    async def handle(job: ReceivedJob) -> bytes:
        start = time.time()
        try:
            await asyncio.sleep(0.002)
        finally:
            runs.append((job.id, start, time.time()))
            ran.add(job.id)
            if len(ran) >= JOBS // 4:
                quarter.set()
            if len(ran) == JOBS:
                everything.set()
        return b""

    async with AsyncClient(targets[1]) as client:
        await client.update_queue(
            "fleet", width=WIDTH, rate=Rate(RATE, BURST), lease_duration=LEASE, create=True
        )
        submitted: list[str] = []
        for _ in range(JOBS // 1000):
            submitted += [j.id for j in await client.submit_batch([NewJob("fleet", b"")] * 1000)]
        tasks = []
        for n in range(6):
            worker = Worker(targets[n // 2], worker_id=f"w{n}", concurrency=5)
            worker.handler("fleet")(handle)
            tasks.append(asyncio.create_task(worker.run_async()))
        try:
            await asyncio.wait_for(quarter.wait(), 120)
            replicas[0].kill()  # SIGKILL: no drain, its leases stay in Redis until they end
            killed_at = time.time()
            await asyncio.wait_for(everything.wait(), 150)
            await _until_idle(client)
            succeeded = [j.id async for j in client.list_jobs("fleet", JobState.SUCCEEDED, 1000)]
            redelivered = [await client.get(job_id) for job_id in _twice(runs)]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    for replica in replicas[1:]:
        replica.terminate()
        assert replica.wait(30) == 0, replica.log

    assert sorted(succeeded) == sorted(submitted)  # 0 lost
    # Only jobs underway on the killed replica ran again (the width bounds them), after
    # their lease expired.
    assert len(redelivered) <= WIDTH
    for job in redelivered:
        assert [a.error_code for a in job.attempts] == ["LeaseExpired", ""]
    assert most_at_once([(s, e) for _, s, e in runs]) <= WIDTH
    starts = [s for _, s, _ in runs]
    assert worst_burst(starts, RATE) <= BURST + RATE * JITTER
    assert max(starts) - min(starts) >= (JOBS - BURST) / RATE * 0.98
    assert any(s > killed_at + LEASE for s in starts)


def _twice(runs: list[tuple[str, float, float]]) -> list[str]:
    times = Counter(job_id for job_id, _, _ in runs)
    assert max(times.values()) <= 2
    return [job_id for job_id, n in times.items() if n > 1]


async def _until_idle(client: AsyncClient) -> None:
    async def idle() -> bool:
        queue = await client.get_queue("fleet")
        return (queue.pending_count, queue.underway_count, queue.scheduled_count) == (0, 0, 0)

    await eventually(idle, 30, "the queue to go idle", interval=0.1)
