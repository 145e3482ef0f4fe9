"""``python -m bench.sync_coalescing``: submit throughput through the blocking Python ``Client``
from many threads, with its submit() coalescing on (the default) and off.

Method: the real server runs as a child process (in memory, no data dir, metrics on). This
process runs ``--threads`` threads on one shared ``Client``, each calling ``submit()`` for one
job at a time until ``--jobs`` jobs in all are admitted; no worker runs, so the figure is the
producer side of the per-job path alone. Every run gets a fresh server and a warm-up of
``--warmup`` jobs first; the two modes alternate, ``--runs`` times each, and the medians are
reported per mode (jobs/s over the wall clock from the first submit to the last answer, server
CPU microseconds per job from /proc, and the RPCs that carried the jobs from the server's own
``dispatchd_grpc_requests_total``), with the coalesced figures as ratios of the plain ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from bench import procs
from bench.client_coalescing import START_TIMEOUT, submit_rpcs
from dispatchd_client import Client, DispatchdError

MODES = ("one-submit-per-call", "coalesced")


@dataclass(frozen=True)
class Run:
    jobs_per_s: float
    server_cpu_us_per_job: float
    rpcs: int


def _ready(client: Client) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            client.list_queues()
            return
        except DispatchdError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _produce(client: Client, threads: int, jobs: int) -> None:
    per = [jobs // threads + (1 if i < jobs % threads else 0) for i in range(threads)]

    def one(n: int) -> None:
        for _ in range(n):
            client.submit("bench", b"x" * 16)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, per))


def measure(mode: str, threads: int, jobs: int, warmup: int) -> Run:
    port, metrics_port = procs.free_port(), procs.free_port()
    server = procs.start_dispatchd(port, metrics_listen=f"127.0.0.1:{metrics_port}")
    try:
        with Client(server.target, coalesce=mode == "coalesced") as client:
            _ready(client)
            _produce(client, threads, warmup)
            before = submit_rpcs(metrics_port)
            cpu0 = sum(server.cpu_times())
            t0 = time.perf_counter()
            _produce(client, threads, jobs)
            wall = time.perf_counter() - t0
            cpu = sum(server.cpu_times()) - cpu0
            after = submit_rpcs(metrics_port)
    finally:
        server.stop()
    rpcs = sum(after.values()) - sum(before.values())
    return Run(jobs / wall, cpu / jobs * 1e6, rpcs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[Run]] = {mode: [] for mode in MODES}
    for _ in range(args.runs):
        for mode in MODES:  # alternating, so drifting machine load hits both modes alike
            runs[mode].append(measure(mode, args.threads, args.jobs, args.warmup))
    medians = {
        mode: {
            "jobs_per_s": round(statistics.median(r.jobs_per_s for r in rs)),
            "server_cpu_us_per_job": round(
                statistics.median(r.server_cpu_us_per_job for r in rs), 1
            ),
            "rpcs": round(statistics.median(r.rpcs for r in rs)),
        }
        for mode, rs in runs.items()
    }
    plain, coalesced = medians[MODES[0]], medians[MODES[1]]
    print(
        json.dumps(
            {
                "client": "Client (threads)",
                "threads": args.threads,
                "jobs": args.jobs,
                "runs": {mode: [asdict(r) for r in rs] for mode, rs in runs.items()},
                "medians": medians,
                "coalesced_vs_plain": {
                    "jobs_per_s": round(coalesced["jobs_per_s"] / plain["jobs_per_s"], 2),
                    "server_cpu_us_per_job": round(
                        coalesced["server_cpu_us_per_job"] / plain["server_cpu_us_per_job"], 2
                    ),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
