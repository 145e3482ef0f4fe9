"""The HTTP push phase of `make bench`: dispatchd delivering jobs to a local endpoint.

The endpoint is an aiohttp server in this (the client) process on 127.0.0.1, answering
every request with 200 and a 2-byte body, as cheaply as aiohttp allows. A queue of
width ``--http-push-width`` gets an http_target pointing at it; producers submit
``--http-push-jobs`` jobs with SubmitBatch, and the run ends when the endpoint has seen
them all and GetQueue shows nothing pending or underway (every outcome applied).
Throughput is jobs over the span from the first submit to the last request; server CPU
per job is measured like the other phases. With a width above --http-max-connections
(100 by default) the pool bound is what limits concurrency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import web

from bench.measure import Measured, Meter
from bench.rpc import Dispatchd
from dispatchd_client.v1 import dispatcher_pb2 as pb

BATCH = 100
PHASE_TIMEOUT = 120.0
PAYLOAD = b"x" * 32


class Endpoint:
    """Counts requests; ``done`` is set, and ``end`` stamped, at the expected count."""

    def __init__(self) -> None:
        self.seen = 0
        self.expected = 0
        self.end = 0.0
        self.done = asyncio.Event()
        self.url = ""
        self._runner: web.ServerRunner | None = None

    def expect(self, n: int) -> None:
        self.seen, self.expected, self.end = 0, n, 0.0
        self.done.clear()

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        await request.read()
        self.seen += 1
        if self.seen >= self.expected and not self.done.is_set():
            self.end = time.perf_counter()
            self.done.set()
        return web.Response(body=b"ok")

    async def start(self) -> None:
        self._runner = web.ServerRunner(web.Server(self._handle), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/push"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def _target(api: Dispatchd, queue: str, width: int, url: str) -> None:
    q = pb.Queue(name=queue, width=width, http_target=pb.HttpTarget(url=url))
    req = pb.UpdateQueueRequest(queue=q, allow_missing=True)
    req.update_mask.paths.extend(["width", "http_target"])
    await api.update_queue(req, timeout=5.0)


async def _settled(api: Dispatchd, queue: str) -> None:
    deadline = time.monotonic() + PHASE_TIMEOUT
    while True:
        q = (await api.get_queue(pb.GetQueueRequest(name=queue), timeout=5.0)).queue
        if q.pending_count == 0 and q.underway_count == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{queue}: {q.pending_count} pending, {q.underway_count} underway")
        await asyncio.sleep(0.01)


async def run(
    api: Dispatchd,
    server_times: Callable[[], tuple[float, float]],
    endpoint: Endpoint,
    queue: str,
    jobs: int,
    width: int,
) -> Measured:
    """One run: ``jobs`` rounded down to whole batches of BATCH."""
    jobs = max(BATCH, jobs // BATCH * BATCH)
    await _target(api, queue, width, endpoint.url)
    endpoint.expect(jobs)
    req = pb.SubmitBatchRequest(jobs=[pb.JobSpec(queue=queue, payload=PAYLOAD)] * BATCH)
    meter = Meter(server_times)
    for _ in range(jobs // BATCH):
        await api.submit_batch(req, timeout=30.0)
    await asyncio.wait_for(endpoint.done.wait(), PHASE_TIMEOUT)
    await _settled(api, queue)
    return meter.result(jobs, endpoint.end)


async def rounds(
    api: Dispatchd,
    server_times: Callable[[], tuple[float, float]],
    jobs: int,
    width: int,
    count: int,
    show: Callable[[int, str, Measured], None],
) -> list[Measured]:
    """A warm-up run of a tenth, then ``count`` measured runs, each on its own queue."""
    endpoint = Endpoint()
    await endpoint.start()
    try:
        await run(api, server_times, endpoint, "bench.http.warmup", jobs // 10, width)
        out = []
        for r in range(1, count + 1):
            m = await run(api, server_times, endpoint, f"bench.http.{r}", jobs, width)
            show(r, "http push", m)
            out.append(m)
        return out
    finally:
        await endpoint.stop()
