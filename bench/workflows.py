"""Workflow figures (docs/workflows.md): the cost of batch bookkeeping on a burn-down,
WaitBatch's latency after the last job of a big batch, and what a WatchEvents consumer
that stops reading costs the server.

    .venv/bin/python -m bench.workflows [--jobs 100000] [--rounds 3] [--redis]

Method: a dispatchd child process (memory, embedded; ``--redis``: the Redis backend on a
redis-server child started here). For each round, two burn-downs of ``--jobs`` jobs queued
beforehand in a paused queue (SubmitBatch of 1,000), alternating: plain jobs, and the same
jobs in one batch (created, filled, closed), after one uncounted warm-up burn-down.
``--workers`` raw Work streams with
``--credit`` credits each answer every delivery message with one WorkResults message. The
rate is jobs over the time from the resume to the last result written; the bookkeeping cost
is 1 - batch rate / plain rate (medians). During the batch burn-down a WaitBatch call is in
flight; its latency is the time from writing the last result message to WaitBatch's answer
(same process, same clock).

Events (``--events-seconds``): a WatchEvents stream is opened and never read while jobs
burn down at full speed for that long; the server's RSS before and after, then the stream
is read until it reports FELL_BEHIND (or 10 s pass).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import grpc

from bench.procs import cpu_times, free_port, rss_bytes, start_dispatchd
from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc

CHUNK = 1_000


async def _ready(stub: Any, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            await stub.ListQueues(pb.ListQueuesRequest(), timeout=1.0)
            return
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _fill(stub: Any, queue: str, n: int, batch_id: str) -> None:
    await stub.UpdateQueue(
        pb.UpdateQueueRequest(
            queue=pb.Queue(name=queue, width=1_000_000, paused=True),
            update_mask={"paths": ["width", "paused"]},
            allow_missing=True,
        )
    )
    if batch_id:
        await stub.CreateBatch(
            pb.CreateBatchRequest(batch=pb.Batch(queue=queue, batch_id=batch_id))
        )
    for start in range(0, n, CHUNK):
        jobs = [
            pb.JobSpec(queue=queue, payload=b"x", batch_id=batch_id)
            for _ in range(min(CHUNK, n - start))
        ]
        await stub.SubmitBatch(pb.SubmitBatchRequest(jobs=jobs))
    if batch_id:
        await stub.CloseBatch(pb.CloseBatchRequest(queue=queue, batch_id=batch_id))


class Burn:
    def __init__(self, n: int) -> None:
        self.n = n
        self.answered = 0
        self.last_written = 0.0
        self.done = asyncio.Event()


async def _worker(stub: Any, queue: str, credit: int, burn: Burn) -> None:
    requests: asyncio.Queue[pb.WorkRequest | None] = asyncio.Queue()
    await requests.put(pb.WorkRequest(hello=pb.WorkerHello(queues=[queue], max_in_flight=credit)))

    async def outgoing() -> Any:
        while (req := await requests.get()) is not None:
            yield req

    call = stub.Work(outgoing())
    try:
        async for resp in call:
            if resp.WhichOneof("kind") != "deliveries":
                continue
            results = [
                pb.JobResult(job_id=d.job.id, lease_id=d.lease_id, output=b"")
                for d in resp.deliveries.deliveries
            ]
            burn.answered += len(results)
            if burn.answered >= burn.n:
                burn.last_written = time.perf_counter()
            await requests.put(pb.WorkRequest(results=pb.WorkResults(results=results)))
            if burn.answered >= burn.n:
                burn.done.set()
    except asyncio.CancelledError:
        call.cancel()
        raise


#: Processes whose CPU time per job the burn-downs report (dispatchd, and redis-server).
METERED: dict[str, int] = {}
CPU: dict[str, list[float]] = {}


def _cpu() -> dict[str, float]:
    return {name: sum(cpu_times(pid)) for name, pid in METERED.items()}


async def burn_down(
    stub: Any, queue: str, n: int, batch_id: str, workers: int, credit: int
) -> tuple[float, float | None]:
    """(jobs/s, WaitBatch latency in ms or None)."""
    await _fill(stub, queue, n, batch_id)
    burn = Burn(n)
    tasks = [asyncio.create_task(_worker(stub, queue, credit, burn)) for _ in range(workers)]
    waited: asyncio.Task[Any] | None = None
    if batch_id:
        request = pb.WaitBatchRequest(queue=queue, batch_id=batch_id)
        request.timeout.FromSeconds(600)
        waited = asyncio.ensure_future(stub.WaitBatch(request, timeout=700))
    await asyncio.sleep(0.5)  # workers connected and the WaitBatch in
    cpu_before = _cpu()
    await stub.ResumeQueue(pb.ResumeQueueRequest(name=queue))
    start = time.perf_counter()
    await burn.done.wait()
    rate = n / (burn.last_written - start)
    kind = "batch" if batch_id else "plain"
    for name, spent in _cpu().items():
        CPU.setdefault(f"{kind}_{name}_cpu_us_per_job", []).append(
            (spent - cpu_before[name]) / n * 1e6
        )
    latency = None
    if waited is not None:
        resp = await waited
        latency = (time.perf_counter() - burn.last_written) * 1000
        assert resp.batch.counts.active == 0, resp.batch
    for t in tasks:
        t.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks)
    return rate, latency


async def events_phase(
    stub: Any, pid: int, seconds: float, workers: int, credit: int
) -> dict[str, Any]:
    """A watcher that does not read while jobs burn down for ``seconds``."""
    queue = "ev-bench"
    await _fill(stub, queue, 1, "")
    await stub.ResumeQueue(pb.ResumeQueueRequest(name=queue))
    watch = stub.WatchEvents(pb.WatchEventsRequest(queues=[queue]))
    burn = Burn(10**12)
    tasks = [asyncio.create_task(_worker(stub, queue, credit, burn)) for _ in range(workers)]
    await asyncio.sleep(1.0)
    before = rss_bytes(pid)[0]
    start = time.monotonic()
    submitted = 0
    while time.monotonic() - start < seconds:
        jobs = [pb.JobSpec(queue=queue, payload=b"x") for _ in range(CHUNK)]
        await stub.SubmitBatch(pb.SubmitBatchRequest(jobs=jobs))
        submitted += CHUNK
    elapsed = time.monotonic() - start
    after = rss_bytes(pid)[0]
    for t in tasks:
        t.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks)
    told = None
    read = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            async for resp in watch:
                read += 1
                if resp.WhichOneof("kind") == "missed":
                    told = resp.missed.reason
                    break
    watch.cancel()
    return {
        "events_seconds": round(elapsed, 1),
        "events_jobs_per_s": round(burn.answered / elapsed),
        "events_rss_growth_mb": round((after - before) / 1e6, 1),
        "events_consumer_told": told,
        "events_read_before_told": read,
    }


def _start_redis() -> tuple[subprocess.Popen[bytes], list[str]]:
    """A redis-server child for --redis, and the dispatchd flags that use it."""
    rport = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(rport), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    return redis, ["--backend", "redis", "--redis-url", f"redis://127.0.0.1:{rport}/0"]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    extra: list[str] = []
    redis: subprocess.Popen[bytes] | None = None
    if args.redis:
        redis, extra = _start_redis()
    server = start_dispatchd(port, extra=extra, log_level="warning")
    METERED["dispatchd"] = server.pid
    if redis is not None:
        METERED["redis"] = redis.pid
    out: dict[str, Any] = {"backend": "redis" if args.redis else "embedded", "jobs": args.jobs}
    try:
        async with grpc.aio.insecure_channel(server.target) as chan:
            stub = pb_grpc.DispatcherServiceStub(chan)
            await _ready(stub)
            plain: list[float] = []
            batched: list[float] = []
            latencies: list[float] = []
            await burn_down(stub, "warmup", min(args.jobs, 20_000), "", args.workers, args.credit)
            for r in range(args.rounds):
                rate, _ = await burn_down(
                    stub, f"plain{r}", args.jobs, "", args.workers, args.credit
                )
                plain.append(rate)
                if args.plain_only:
                    print(f"round {r}: plain {rate:.0f}/s", file=sys.stderr)
                    continue
                rate, lat = await burn_down(
                    stub, f"batch{r}", args.jobs, f"b{r}", args.workers, args.credit
                )
                batched.append(rate)
                assert lat is not None
                latencies.append(lat)
                print(
                    f"round {r}: plain {plain[-1]:.0f}/s batch {rate:.0f}/s WaitBatch {lat:.1f} ms",
                    file=sys.stderr,
                )
            cpu = {k: round(statistics.median(v[-args.rounds :]), 1) for k, v in CPU.items()}
            if args.plain_only:
                return {**out, "plain_jobs_per_s": round(statistics.median(plain)), **cpu}
            p, b = statistics.median(plain), statistics.median(batched)
            out.update(
                plain_jobs_per_s=round(p),
                batch_jobs_per_s=round(b),
                batch_bookkeeping_cost=round(1 - b / p, 3),
                wait_batch_latency_ms_median=round(statistics.median(latencies), 1),
                wait_batch_latency_ms_max=round(max(latencies), 1),
                **cpu,
            )
            if args.events_seconds > 0:
                out.update(
                    await events_phase(
                        stub, server.pid, args.events_seconds, args.workers, args.credit
                    )
                )
    finally:
        server.stop()
        if redis is not None:
            redis.terminate()
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--credit", type=int, default=500)
    parser.add_argument("--events-seconds", type=float, default=0.0)
    parser.add_argument("--redis", action="store_true")
    parser.add_argument(
        "--plain-only",
        action="store_true",
        help="only the plain burn-downs (to compare with another server build)",
    )
    parser.add_argument(
        "--server-src",
        help="run the dispatchd child from this source tree (its server/ and clients/python/)",
    )
    args = parser.parse_args(argv)
    if args.server_src:
        os.environ["PYTHONPATH"] = f"{args.server_src}/server:{args.server_src}/clients/python"
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
