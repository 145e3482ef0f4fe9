"""A Redis fail-over under load, for the Cluster and the Sentinel tests: two dispatchd
replicas on ``url``, four producers (each submit with an idempotency key, retried on
UNAVAILABLE until acknowledged) and four workers on a few queues of width WIDTH; once
200 jobs ran, ``kill()`` (a Redis primary's SIGKILL), ``recovered()`` (blocks until the
replica took over), 200 more acknowledged, then every acknowledged job must run.

Redis replicates asynchronously: a write the dead primary acknowledged in its last moment
may not have reached the replica (Redis' documented window, without WAIT). The jobs of
``at_risk`` queues acknowledged within REPLICATION_SLACK before the kill may be missing;
everything else must run to success."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dispatchd_client import AsyncClient, JobState, ReceivedJob, Worker
from dispatchd_client.errors import DeadlineExceeded, Unavailable

from ..polling import eventually
from .conftest import ServerProcess
from .replica_checks import most_at_once

WIDTH = 2
LEASE = 2.0
#: How long before the kill an acknowledged write may still have been on its way to the
#: replica (loopback: well under a millisecond; generous for a loaded machine).
REPLICATION_SLACK = 0.5


@dataclass
class Outcome:
    """What the producers and workers saw."""

    killed_at: float = 0.0
    recovered_at: float = 0.0
    acked: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (queue, when)
    runs: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    done: set[str] = field(default_factory=set)
    waits: list[float] = field(default_factory=list)  # each submit, refusals included
    refusals: list[float] = field(default_factory=list)  # when a submit was refused

    def expected(self, at_risk: set[str]) -> set[str]:
        return {
            job_id
            for job_id, (queue, when) in self.acked.items()
            if queue not in at_risk
            or not self.killed_at - REPLICATION_SLACK < when <= self.killed_at
        }

    def check(self, states: set[JobState]) -> str:
        """The assertions every fail-over test makes; a line for the log."""
        assert states == {JobState.SUCCEEDED}
        for queue, spans in self.runs.items():
            assert most_at_once(spans) <= WIDTH, queue
        window = self.recovered_at - self.killed_at
        # Producers were refused (UNAVAILABLE) or kept waiting only around the fail-over.
        assert all(self.killed_at <= t <= self.recovered_at + 5.0 for t in self.refusals)
        assert max(self.waits) < window + 5.0
        return (
            f"replica took over {window:.2f} s after the kill; longest submit "
            f"{max(self.waits):.2f} s, {len(self.refusals)} refusals; "
            f"{len(self.acked)} acknowledged, {len(set(self.acked) - self.done)} of them "
            "missing (in the replication window)"
        )


async def run(
    tmp_path: Path,
    start: type[ServerProcess],
    url: str,
    queues: Sequence[str],
    kill: Callable[[], None],
    recovered: Callable[[], object],
    at_risk: set[str],
) -> Outcome:
    replicas = [
        start(tmp_path / f"r{i}", "--backend", "redis", "--redis-url", url) for i in range(2)
    ]
    targets = [r.wait_ready() for r in replicas]
    out = Outcome()
    stop = asyncio.Event()

    async def handle(job: ReceivedJob) -> bytes:
        began = time.monotonic()
        await asyncio.sleep(0.005)
        out.runs[job.queue].append((began, time.monotonic()))
        out.done.add(job.id)
        return b""

    async def produce(client: AsyncClient, n: int) -> None:
        i = 0
        while not stop.is_set():
            queue, key, asked = queues[i % len(queues)], f"p{n}-{i}", time.monotonic()
            while True:  # the same idempotency key until it is acknowledged
                try:
                    job = await client.submit(queue, b"", idempotency_key=key, timeout=5)
                    break
                except (Unavailable, DeadlineExceeded):
                    out.refusals.append(time.monotonic())
                    await asyncio.sleep(0.05)
            out.waits.append(time.monotonic() - asked)
            out.acked[job.id] = (queue, time.monotonic())
            i += 1
            await asyncio.sleep(0.005)

    async with AsyncClient(targets[0]) as c0, AsyncClient(targets[1]) as c1:
        for queue in queues:
            await c0.update_queue(queue, width=WIDTH, lease_duration=LEASE, create=True)
        tasks = [asyncio.create_task(produce(c, n)) for n, c in enumerate((c0, c1, c0, c1))]
        for n in range(4):
            worker = Worker(targets[n % 2], worker_id=f"w{n}", concurrency=4)
            for queue in queues:
                worker.handler(queue)(handle)
            tasks.append(asyncio.create_task(worker.run_async()))
        try:
            await eventually(lambda: len(out.done) >= 200, 30, "200 jobs done before the kill")
            kill()
            out.killed_at = time.monotonic()
            await asyncio.to_thread(recovered)
            out.recovered_at = time.monotonic()
            await eventually(
                lambda: sum(1 for _, t in out.acked.values() if t > out.recovered_at) >= 200,
                30,
                "200 jobs acknowledged after the fail-over",
            )
            stop.set()
            await asyncio.gather(*tasks[:4])
            expected = out.expected(at_risk)
            await eventually(
                lambda: expected <= out.done, 30, "every acknowledged job to run", interval=0.1
            )
            sample = list(expected)[:: max(1, len(expected) // 200)]
            states = {(await c0.get(job_id)).state for job_id in sample}
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    for replica in replicas:
        replica.terminate()
        assert replica.wait(30) == 0, replica.log
    print(out.check(states))
    return out
