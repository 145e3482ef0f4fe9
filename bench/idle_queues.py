"""``python -m bench.idle_queues`` (``make bench-queues``): what idle queues cost a healthy one.

Issue 24 item 2: 20,000 one-job queues nobody serves made a healthy queue's round trip 31x
slower, because every dispatch pass walked every queue with a pending job. The pass now
walks the ready set through the workers with free credits (server/dispatchd/engine/ready.py).

Method: the real server as a subprocess (embedded backend, memory only, metrics on as by
default, ``--max-queues 0`` so 20,000 queues may exist), one raw Work stream serving the
queue "healthy" with one credit that answers each delivery at once. A round trip is one
Submit to "healthy" followed by a WaitJob that returns it SUCCEEDED, timed from just before
the Submit to the WaitJob's answer, ``ROUND_TRIPS`` of them one after another (after
``WARM_UP`` untimed ones). Measured with no other queue, then again after SubmitBatch
created ``IDLE_QUEUES`` more queues of one pending job each (batches of ``BATCH``), which no
worker serves. Prints the medians (and p90s) of both and their ratio; the target is a ratio
within 2x.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import grpc

from bench import procs, rpc
from dispatchd_client.v1 import dispatcher_pb2 as pb

IDLE_QUEUES = 20_000
BATCH = 5_000
ROUND_TRIPS = 300
WARM_UP = 30
TARGET_RATIO = 2.0
HEALTHY = "healthy"


class Worker:
    """One Work stream of one credit on "healthy", answering every delivery at once."""

    def __init__(self, api: rpc.Dispatchd) -> None:
        self._call = api.work(None)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        hello = pb.WorkerHello(worker_id="bench-healthy", queues=[HEALTHY], max_in_flight=1)
        await self._call.write(pb.WorkRequest(hello=hello))
        welcome = await self._call.read()
        if not isinstance(welcome, pb.WorkResponse) or not welcome.HasField("welcome"):
            raise RuntimeError(f"expected a welcome, got {welcome!r}")
        self._task = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            msg = await self._call.read()
            if not isinstance(msg, pb.WorkResponse):
                return
            if msg.HasField("deliveries"):
                req = pb.WorkRequest()
                for d in msg.deliveries.deliveries:
                    req.results.results.add(job_id=d.job.id, lease_id=d.lease_id, output=b"ok")
                await self._call.write(req)

    def close(self) -> None:
        self._call.cancel()
        if self._task is not None:
            self._task.cancel()


async def round_trips(chan: grpc.aio.Channel, n: int) -> list[float]:
    api = rpc.Dispatchd(chan)
    wait = chan.unary_unary(
        rpc.SERVICE + "WaitJob",
        pb.WaitJobRequest.SerializeToString,
        pb.WaitJobResponse.FromString,
    )
    out = []
    for _ in range(n):
        started = time.perf_counter()
        job = (await api.submit(pb.SubmitRequest(job=pb.JobSpec(queue=HEALTHY)))).job
        req = pb.WaitJobRequest(job_id=job.id)
        req.timeout.FromSeconds(30)
        done = (await wait(req, timeout=60)).job
        out.append(time.perf_counter() - started)
        if done.state != pb.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"job {job.id} ended {done.state}, not SUCCEEDED")
    return out


async def add_idle_queues(api: rpc.Dispatchd, n: int) -> float:
    started = time.perf_counter()
    for first in range(0, n, BATCH):
        jobs = [pb.JobSpec(queue=f"idle.{i}") for i in range(first, min(n, first + BATCH))]
        await api.submit_batch(pb.SubmitBatchRequest(jobs=jobs), timeout=120)
    return time.perf_counter() - started


def summary(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.9) - 1]


async def measure(target: str, idle: int, trips: int) -> tuple[list[float], list[float], float]:
    chan = rpc.channel(target)
    try:
        api = rpc.Dispatchd(chan)
        await api.set_width(HEALTHY, 1)
        worker = Worker(api)
        await worker.start()
        try:
            await round_trips(chan, WARM_UP)
            before = await round_trips(chan, trips)
            filled = await add_idle_queues(api, idle)
            await round_trips(chan, WARM_UP)
            after = await round_trips(chan, trips)
        finally:
            worker.close()
        return before, after, filled
    finally:
        await chan.close(grace=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle-queues", type=int, default=IDLE_QUEUES)
    parser.add_argument("--round-trips", type=int, default=ROUND_TRIPS)
    args = parser.parse_args(argv)
    port = procs.free_port()
    server = procs.start_dispatchd(port, extra=["--max-queues", "0"])
    try:
        asyncio.run(_until_up(server.target))
        before, after, filled = asyncio.run(
            measure(server.target, args.idle_queues, args.round_trips)
        )
    finally:
        server.stop()
    b50, b90 = summary(before)
    a50, a90 = summary(after)
    ratio = a50 / b50
    print(f"healthy round trip, no other queue: median {b50 * 1e3:.2f} ms, p90 {b90 * 1e3:.2f} ms")
    print(
        f"healthy round trip, {args.idle_queues:,} idle queues: median {a50 * 1e3:.2f} ms, "
        f"p90 {a90 * 1e3:.2f} ms (made in {filled:.1f} s)"
    )
    verdict = "ok" if ratio <= TARGET_RATIO else "OVER TARGET"
    print(f"ratio {ratio:.2f}x (target <= {TARGET_RATIO:.0f}x): {verdict}")
    return 0 if ratio <= TARGET_RATIO else 1


async def _until_up(target: str) -> None:
    chan = rpc.channel(target)
    try:
        await asyncio.wait_for(chan.channel_ready(), 30)
    finally:
        await chan.close(grace=None)


if __name__ == "__main__":
    sys.exit(main())
