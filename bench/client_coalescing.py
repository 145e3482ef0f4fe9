"""``python -m bench.client_coalescing``: submit throughput through the Python AsyncClient, with
its submit() coalescing on (the default) and off.

Method: the real server runs as a child process (in memory, no data dir, metrics on). This
process runs ``--producers`` coroutines on one AsyncClient, each awaiting ``submit()`` for one
job at a time until ``--jobs`` jobs in all are admitted; no worker runs, so the figure is the
producer side of the per-job path alone (what ``make bench``'s per_job phase feeds its workers
with). Each mode gets a fresh server and one warm-up round of ``--warmup`` jobs first. Reported
per mode: jobs/s (wall clock, first submit to last answer), server CPU microseconds per job
(utime + stime of the child from /proc) and how many RPCs carried the jobs (the server's own
``dispatchd_grpc_requests_total``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import urllib.request
from dataclasses import asdict, dataclass

from bench import procs
from dispatchd_client import AsyncClient, DispatchdError

START_TIMEOUT = 30.0
_CALLS = re.compile(
    r'^dispatchd_grpc_requests_total\{[^}]*method="(Submit(?:Batch)?)"[^}]*\} (\S+)$'
)


@dataclass(frozen=True)
class Figure:
    mode: str
    jobs: int
    jobs_per_s: float
    server_cpu_us_per_job: float
    submit_rpcs: int
    submit_batch_rpcs: int


async def _ready(client: AsyncClient) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            await client.list_queues()
            return
        except DispatchdError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def _produce(client: AsyncClient, producers: int, jobs: int) -> None:
    per = [jobs // producers + (1 if i < jobs % producers else 0) for i in range(producers)]

    async def one(n: int) -> None:
        for _ in range(n):
            await client.submit("bench", b"x" * 16)

    await asyncio.gather(*(one(n) for n in per))


def submit_rpcs(metrics_port: int) -> dict[str, int]:
    """OK Submit and SubmitBatch calls the server has answered so far, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    counts = {"Submit": 0, "SubmitBatch": 0}
    for line in text.splitlines():
        m = _CALLS.match(line)
        if m:
            counts[m.group(1)] += int(float(m.group(2)))
    return counts


async def measure(mode: str, producers: int, jobs: int, warmup: int) -> Figure:
    port, metrics_port = procs.free_port(), procs.free_port()
    server = procs.start_dispatchd(port, metrics_listen=f"127.0.0.1:{metrics_port}")
    try:
        async with AsyncClient(server.target, coalesce=mode == "coalesced") as client:
            await _ready(client)
            await _produce(client, producers, warmup)
            before = await asyncio.to_thread(submit_rpcs, metrics_port)
            cpu0 = sum(server.cpu_times())
            t0 = time.perf_counter()
            await _produce(client, producers, jobs)
            wall = time.perf_counter() - t0
            cpu = sum(server.cpu_times()) - cpu0
            after = await asyncio.to_thread(submit_rpcs, metrics_port)
    finally:
        server.stop()
    return Figure(
        mode,
        jobs,
        round(jobs / wall),
        round(cpu / jobs * 1e6, 1),
        after["Submit"] - before["Submit"],
        after["SubmitBatch"] - before["SubmitBatch"],
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--producers", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    args = parser.parse_args()
    for mode in ("one-submit-per-call", "coalesced"):
        figure = await measure(mode, args.producers, args.jobs, args.warmup)
        print(json.dumps(asdict(figure)))


if __name__ == "__main__":
    asyncio.run(main())
