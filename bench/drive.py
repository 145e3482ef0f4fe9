"""Child processes of the client-path phases: producers through ``AsyncClient.submit()`` and
workers through the real :class:`~dispatchd_client.Worker`, each in a process of its own so
the benchmark's own process is not the bottleneck and the client CPU is metered apart.

``python -m bench.drive produce TARGET QUEUE --producers 50 --jobs N`` opens one AsyncClient
(submit coalescing on, as shipped), prints ``ready``, waits for a line on stdin, runs
``--producers`` coroutines that each await ``submit()`` for one job at a time until ``N`` jobs
are admitted, and prints ``done START END CPU`` (perf_counter seconds, which is
CLOCK_MONOTONIC and so comparable between processes, and this process's CPU seconds).

``python -m bench.drive work TARGET QUEUE --workers 8 --concurrency 16 --jobs N`` runs
``--workers`` Worker instances (one Work stream each) with a no-op async handler, prints
``ready`` once every one is welcomed, then ``done END CPU`` when ``N`` handlers have
returned (their results leave on the same loop tick), and stops its workers gracefully when
stdin closes. ``done`` also carries the worker-side slot gap (p50 and p99 in microseconds,
0 without samples): in each Worker, from one handler's return to the start of its next
handler. With a no-op handler on a width-limited queue (one job held per Worker, or
about) that is the whole way round: the result out, the server, the next delivery in.

Both run on uvloop when it is installed, as a production client would.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

from bench.measure import percentile
from dispatchd_client import AsyncClient, ReceivedJob, Worker

PAYLOAD = b"x" * 32


async def _line() -> str:
    return await asyncio.to_thread(sys.stdin.readline)


def _say(*words: object) -> None:
    print(*words, flush=True)


async def produce(target: str, queue: str, producers: int, jobs: int) -> None:
    async with AsyncClient(target) as client:
        await client.get_queue(queue)  # connected, and the queue exists
        _say("ready")
        await _line()
        left = [jobs]

        async def one() -> None:
            while left[0] > 0:
                left[0] -= 1
                await client.submit(queue, PAYLOAD)

        cpu0, start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one() for _ in range(producers)))
        end = time.perf_counter()
        _say("done", start, end, time.process_time() - cpu0)


async def work(target: str, queue: str, workers: int, concurrency: int, jobs: int) -> None:
    done = asyncio.Event()
    count = [0]
    stamp = [0.0]
    gaps: list[int] = []
    clock = time.perf_counter_ns

    def handler_of() -> Callable[[ReceivedJob], Awaitable[None]]:
        """One Worker's handler: also times that Worker's gap between jobs."""
        last_end = [0]

        async def handler(job: ReceivedJob) -> None:
            if last_end[0]:
                gaps.append(clock() - last_end[0])
            count[0] += 1
            if count[0] == jobs:
                stamp[0] = time.perf_counter()
                done.set()
            last_end[0] = clock()

        return handler

    pool = [Worker(target, worker_id=f"bench-{i}", concurrency=concurrency) for i in range(workers)]
    for w in pool:
        w.handler(queue)(handler_of())
    runs = [asyncio.create_task(w.run_async()) for w in pool]
    for w in pool:
        await w.wait_connected(timeout=30.0)
    cpu0 = time.process_time()
    _say("ready")
    finished = asyncio.create_task(done.wait())
    eof = asyncio.create_task(_line())
    await asyncio.wait([finished, eof, *runs], return_when=asyncio.FIRST_COMPLETED)
    if done.is_set():
        _say("done", stamp[0], time.process_time() - cpu0, *_percentiles_us(gaps))
        await eof
    for w in pool:
        await w.stop()
    await asyncio.gather(*runs)
    finished.cancel()


def _percentiles_us(samples_ns: list[int]) -> tuple[float, float]:
    """(p50, p99) nearest-rank, in microseconds; zeros without samples."""
    if not samples_ns:
        return 0.0, 0.0
    ordered = [ns / 1000 for ns in sorted(samples_ns)]
    return percentile(ordered, 50), percentile(ordered, 99)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("role", choices=("produce", "work"))
    p.add_argument("target")
    p.add_argument("queue")
    p.add_argument("--jobs", type=int, required=True)
    p.add_argument("--producers", type=int, default=50)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=16)
    ns = p.parse_args(argv)
    if ns.role == "produce":
        main_coro = produce(ns.target, ns.queue, ns.producers, ns.jobs)
    else:
        main_coro = work(ns.target, ns.queue, ns.workers, ns.concurrency, ns.jobs)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coro)
    else:
        uvloop.run(main_coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
