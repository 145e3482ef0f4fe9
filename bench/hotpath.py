"""The server's own per-job work, without sockets: ``python -m bench.hotpath``.

A :class:`~dispatchd.runtime.DispatchdServer` is built as ``dispatchd`` builds it (metrics
observer on, every other observer as configured by default; with ``--durable`` a journal
in a temporary directory) but not bound to a port. This process then plays both gRPC
peers through the servicer itself: producers' SubmitBatch requests of ``--batch`` jobs
(parsed from bytes and answered as bytes, the way grpc.aio hands them over), and
``--streams`` worker streams served by the real ``WorkStream.serve`` whose every
WorkResponse is serialized, parsed back, and answered with one WorkResults message per
delivery message (the Python Worker's same-tick coalescing). What is left out is gRPC's own
core (HTTP/2, the completion queue): the part this repository's code cannot change. What is
in besides the server: the stand-in workers' parsing of deliveries and building of results,
a few microseconds per job, and the same in every run.

It reports jobs, CPU seconds and microseconds per job, and is the fixed workload ``make
bench-callgrind`` runs under ``valgrind --tool=callgrind`` (bench/callgrind.py), where the
instruction count is deterministic enough to catch a regression of a few percent.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from dispatchd.config import Config
from dispatchd.embedded import EmbeddedBackend
from dispatchd.engine.policies import Rate
from dispatchd.runtime import DispatchdServer
from dispatchd.service.dispatcher import DispatcherServicer
from dispatchd.service.work import WorkStream
from dispatchd_client.v1 import dispatcher_pb2 as pb

QUEUE = "bench.hotpath"
PAYLOAD = b"x" * 32


class _Context:
    """The few ServicerContext calls the happy path makes: a stream's writes (none else,
    unless something fails)."""

    def __init__(self, stream: _Stream | None = None) -> None:
        self._stream = stream

    async def write(self, msg: pb.WorkResponse) -> None:
        assert self._stream is not None
        self._stream.answer(msg.SerializeToString())

    def add_done_callback(self, callback: Any) -> None:
        """The call never ends early here: the stream ends when its requests do."""

    async def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"aborted: {code} {details}")


class _Count:
    """Jobs acked by every stream; ``done`` is set at ``target``."""

    def __init__(self, target: int) -> None:
        self.left = target
        self.done = asyncio.Event()

    def add(self, n: int) -> None:
        self.left -= n
        if self.left <= 0:
            self.done.set()


class _Stream:
    """One worker stream: the requests the server reads, fed by our answers."""

    def __init__(self, name: str, credit: int, acked: _Count) -> None:
        self.acked = acked
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        hello = pb.WorkerHello(worker_id=name, queues=[QUEUE], max_in_flight=credit)
        self.inbox.put_nowait(pb.WorkRequest(hello=hello).SerializeToString())
        self.messages = 0

    async def requests(self) -> AsyncIterator[pb.WorkRequest]:
        while True:
            raw = await self.inbox.get()
            if raw is None:
                return
            yield pb.WorkRequest.FromString(raw)

    def answer(self, raw: bytes) -> None:
        msg = pb.WorkResponse.FromString(raw)
        if msg.WhichOneof("kind") != "deliveries":
            return
        self.messages += 1
        out = pb.WorkRequest()
        add = out.results.results.add
        for d in msg.deliveries.deliveries:
            add(job_id=d.job.id, lease_id=d.lease_id, output=b"ok")
        self.inbox.put_nowait(out.SerializeToString())
        self.acked.add(len(msg.deliveries.deliveries))


async def _serve(work: WorkStream, stream: _Stream) -> None:
    await work.serve(stream.requests(), _Context(stream))  # type: ignore[arg-type]


async def run(
    jobs: int,
    batch: int,
    streams: int,
    credit: int,
    data_dir: Path | None,
    width: int = 100_000,
    rate: float | None = None,
    metrics: bool = True,
) -> float:
    """Runs the workload; returns the CPU seconds it took (after set-up). ``metrics``
    False: no metrics observer (the engine-only cycle the observer's cost is held to)."""
    config = Config(
        listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0" if metrics else "0",
        http_listen="0",
        data_dir=data_dir,
        log_level="warning",
    )
    server = DispatchdServer(config)
    backend = server.backend
    assert isinstance(backend, EmbeddedBackend)
    await backend.start()  # the journal, as start() opens it, without binding
    work = WorkStream(backend)
    servicer = DispatcherServicer(backend, server.clock, work, server.start_drain)
    await backend.update_queue(
        QUEUE, width=width, create=True, rate=None if rate is None else Rate.of(rate)
    )
    acked = _Count(jobs // batch * batch)
    peers = [_Stream(f"hotpath-{i}", credit, acked) for i in range(streams)]
    tasks = [asyncio.create_task(_serve(work, p)) for p in peers]
    request = pb.SubmitBatchRequest(
        jobs=[pb.JobSpec(queue=QUEUE, payload=PAYLOAD)] * batch
    ).SerializeToString()
    ctx: Any = _Context()
    cpu0 = time.process_time()
    for _ in range(jobs // batch):
        reply = await servicer.SubmitBatch(pb.SubmitBatchRequest.FromString(request), ctx)
        reply.SerializeToString()
        await asyncio.sleep(0)  # let the pump and the streams run, as between RPCs
    await acked.done.wait()
    idle = backend._watch.idle  # set when the last lease is released
    idle.clear()
    if backend.engine.underway_total():
        await idle.wait()  # the last acks are still in the streams' inboxes
    cpu = time.process_time() - cpu0
    for p in peers:
        p.inbox.put_nowait(None)
    await asyncio.gather(*tasks)
    await backend.close()
    return cpu


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=50, help="jobs per SubmitBatch")
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--credit", type=int, default=16)
    p.add_argument("--durable", action="store_true", help="journal in a temporary directory")
    p.add_argument("--width", type=int, default=100_000, help="the queue's width")
    p.add_argument("--rate", type=float, default=None, help="the queue's rate (jobs/s)")
    p.add_argument("--no-metrics", action="store_true", help="without the metrics observer")
    ns = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dispatchd-hotpath-") as tmp:
        data_dir = Path(tmp) if ns.durable else None
        cpu = asyncio.run(
            run(
                ns.jobs,
                ns.batch,
                ns.streams,
                ns.credit,
                data_dir,
                ns.width,
                ns.rate,
                metrics=not ns.no_metrics,
            )
        )
    jobs = ns.jobs // ns.batch * ns.batch
    print(f"{jobs} jobs  cpu {cpu:.3f} s  {cpu / jobs * 1e6:.1f} us/job")
    return 0


if __name__ == "__main__":
    sys.exit(main())
