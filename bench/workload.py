"""The dispatchd side of the benchmark: worker streams, producers, and the three phases
(per-job, batched, paced latency) built from them."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from bench.measure import Measured, Meter, percentile, split
from bench.rpc import Dispatchd, WorkCall
from dispatchd_client.v1 import dispatcher_pb2 as pb

PAYLOAD = b"x" * 32
ACK_OUTPUT = b"ok"
PHASE_TIMEOUT = 120.0
CALL_TIMEOUT = 30.0

OnDeliveries = Callable[[Sequence[pb.Delivery]], None]


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    streams: int
    credit: int
    ack_each: bool
    """True: one WorkResults message per job. False: one per JobDeliveries message."""


class Acks:
    """Counts acked jobs; ``done`` is set, and ``end`` stamped, when the target is reached."""

    def __init__(self, target: int) -> None:
        self.remaining = target
        self.delivery_msgs = 0
        self.end = 0.0
        self.done = asyncio.Event()

    def add(self, n: int) -> None:
        self.remaining -= n
        if self.remaining <= 0 and not self.done.is_set():
            self.end = time.perf_counter()
            self.done.set()


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Marks the outcome of a future seen, so one cancelled after a failure elsewhere does
    not log "exception was never retrieved" over the real error."""
    if not fut.cancelled():
        fut.exception()


def _ack_one(d: pb.Delivery) -> pb.WorkRequest:
    result = pb.JobResult(job_id=d.job.id, lease_id=d.lease_id, output=ACK_OUTPUT)
    return pb.WorkRequest(results=pb.WorkResults(results=[result]))


def _ack_all(ds: Sequence[pb.Delivery]) -> pb.WorkRequest:
    req = pb.WorkRequest()
    out = req.results.results
    for d in ds:
        out.add(job_id=d.job.id, lease_id=d.lease_id, output=ACK_OUTPUT)
    return req


class WorkerPool:
    """``streams`` Work streams on one channel, each serving ``queue`` with ``credit``."""

    def __init__(
        self,
        api: Dispatchd,
        queue: str,
        config: WorkerConfig,
        acks: Acks,
        on_deliveries: OnDeliveries | None = None,
    ) -> None:
        self._api = api
        self._queue = queue
        self._config = config
        self._acks = acks
        self._on_deliveries = on_deliveries
        self._calls: list[WorkCall] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Opens every stream and waits for every welcome, so no job waits for a worker."""
        for i in range(self._config.streams):
            call = self._api.work(None)
            self._calls.append(call)
            hello = pb.WorkerHello(
                worker_id=f"bench-{i}", queues=[self._queue], max_in_flight=self._config.credit
            )
            await call.write(pb.WorkRequest(hello=hello))
            welcome = await call.read()
            if not isinstance(welcome, pb.WorkResponse) or not welcome.HasField("welcome"):
                raise RuntimeError(f"worker stream {i}: expected a welcome, got {welcome!r}")
        self._tasks = [asyncio.create_task(self._serve(c)) for c in self._calls]

    async def _serve(self, call: WorkCall) -> None:
        acks, on_deliveries, ack_each = self._acks, self._on_deliveries, self._config.ack_each
        while True:
            msg = await call.read()
            if not isinstance(msg, pb.WorkResponse):
                return  # EOF: the server ended the stream
            if not msg.HasField("deliveries"):
                continue
            ds = msg.deliveries.deliveries
            acks.delivery_msgs += 1
            if on_deliveries is not None:
                on_deliveries(ds)
            if ack_each:
                for d in ds:
                    await call.write(_ack_one(d))
            else:
                await call.write(_ack_all(ds))
            acks.add(len(ds))

    async def until_acked(self, watch: Iterable[asyncio.Future[Any]] = ()) -> None:
        """Returns when every job is acked. Raises when a stream or a ``watch`` future
        fails, a stream ends early, or time runs out."""
        waiter = asyncio.ensure_future(self._acks.done.wait())
        pending: set[asyncio.Future[Any]] = {waiter, *self._tasks, *watch}
        deadline = time.monotonic() + PHASE_TIMEOUT
        try:
            while waiter in pending:
                left = deadline - time.monotonic()
                finished, pending = await asyncio.wait(
                    pending, timeout=max(0.0, left), return_when=asyncio.FIRST_COMPLETED
                )
                if not finished:
                    raise TimeoutError(
                        f"{self._acks.remaining} jobs unacked after {PHASE_TIMEOUT:.0f} s"
                    )
                for fut in finished - {waiter}:
                    fut.result()  # a failed stream or producer raises its error here
                    if fut in self._tasks:
                        raise RuntimeError("the server ended a worker stream early")
        finally:
            waiter.cancel()

    async def close(self) -> None:
        """Half-closes every stream (the server ends it), then cancels what lingers."""
        for call in self._calls:
            if not call.done():
                try:
                    await asyncio.wait_for(call.done_writing(), 2.0)
                except (TimeoutError, asyncio.InvalidStateError, grpc.RpcError):
                    call.cancel()
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=5.0)
            for task in done:
                _retrieve(task)
            for task in pending:
                task.cancel()
        for call in self._calls:
            call.cancel()


async def _submit_loop(api: Dispatchd, reqs: Iterator[pb.SubmitRequest], n: int) -> None:
    for _ in range(n):
        await api.submit(next(reqs), timeout=CALL_TIMEOUT)


async def _batch_loop(api: Dispatchd, req: pb.SubmitBatchRequest, n: int) -> None:
    for _ in range(n):
        await api.submit_batch(req, timeout=CALL_TIMEOUT)


@dataclass(frozen=True, slots=True)
class Load:
    """Where and how much: the queue, its width, the jobs and the producer coroutines."""

    queue: str
    width: int
    jobs: int
    producers: int


@dataclass(frozen=True, slots=True)
class Rig:
    """The server under test, its CPU counter, and the two clients that drive it."""

    producers: Dispatchd
    workers: Dispatchd
    server_times: Callable[[], tuple[float, float]]


Produce = Callable[[Dispatchd, int], asyncio.Future[list[None]]]


async def _measure(rig: Rig, load: Load, workers: WorkerConfig, produce: Produce) -> Measured:
    """Connects workers, runs ``produce``, waits for the last ack and for the server to
    apply it, and meters the span from the first submit."""
    await rig.producers.set_width(load.queue, load.width)
    acks = Acks(load.jobs)
    pool = WorkerPool(rig.workers, load.queue, workers, acks)
    try:
        await pool.start()
        meter = Meter(rig.server_times)
        producing = produce(rig.producers, load.jobs)
        producing.add_done_callback(_retrieve)
        try:
            await pool.until_acked([producing])
            await producing
        finally:
            producing.cancel()  # a no-op unless something failed
        await rig.producers.settled(load.queue)
        return meter.result(load.jobs, acks.end, acks.delivery_msgs)
    finally:
        await pool.close()


def keyed_specs(queue: str, jobs: int, keys: int) -> list[pb.JobSpec]:
    """``jobs`` job specs whose fairness keys go round-robin over ``keys`` keys (none when
    ``keys`` is 0)."""
    if keys <= 0:
        return [pb.JobSpec(queue=queue, payload=PAYLOAD)] * jobs
    per_key = [pb.JobSpec(queue=queue, payload=PAYLOAD, fairness_key=f"k{i}") for i in range(keys)]
    return [per_key[i % keys] for i in range(jobs)]


async def per_job(rig: Rig, load: Load, workers: WorkerConfig, keys: int = 0) -> Measured:
    """Each job its own Submit; each delivered job acked with its own message. With
    ``keys``, the jobs' fairness keys go round-robin over that many keys."""
    specs = keyed_specs(load.queue, max(1, keys), keys)
    reqs = itertools.cycle([pb.SubmitRequest(job=spec) for spec in specs])

    def produce(api: Dispatchd, jobs: int) -> asyncio.Future[list[None]]:
        return asyncio.gather(*(_submit_loop(api, reqs, n) for n in split(jobs, load.producers)))

    return await _measure(rig, load, workers, produce)


async def batched(rig: Rig, load: Load, workers: WorkerConfig, batch: int) -> Measured:
    """SubmitBatch of ``batch`` jobs; each JobDeliveries message acked with one message.
    ``load.jobs`` is rounded down to whole batches."""
    spec = pb.JobSpec(queue=load.queue, payload=PAYLOAD)
    req = pb.SubmitBatchRequest(jobs=[spec] * batch)
    whole = Load(load.queue, load.width, load.jobs // batch * batch, load.producers)

    def produce(api: Dispatchd, jobs: int) -> asyncio.Future[list[None]]:
        counts = split(jobs // batch, load.producers)
        return asyncio.gather(*(_batch_loop(api, req, n) for n in counts))

    return await _measure(rig, whole, workers, produce)


@dataclass(frozen=True, slots=True)
class Latency:
    """Submit-to-delivery latency of a paced run."""

    jobs: int
    offered_per_s: float
    achieved_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_us_per_job: float
    other_cpu_pct: float


class _Recorder:
    """Reads the submit time (perf_counter_ns) the producer put in each payload."""

    def __init__(self) -> None:
        self.samples_ms: list[float] = []

    def __call__(self, ds: Sequence[pb.Delivery]) -> None:
        now = time.perf_counter_ns()
        append = self.samples_ms.append
        for d in ds:
            append((now - int.from_bytes(d.job.payload[:8], "little")) / 1e6)


async def _timed_submit(api: Dispatchd, queue: str) -> None:
    stamp = time.perf_counter_ns().to_bytes(8, "little")
    await api.submit(pb.SubmitRequest(job=pb.JobSpec(queue=queue, payload=stamp)), timeout=5.0)


async def _paced(api: Dispatchd, queue: str, rate: float, jobs: int) -> None:
    """Starts job k at start + k/rate, each Submit in its own task so a slow call does not
    delay the next (an open-loop load)."""
    start = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    while len(tasks) < jobs:
        due = min(jobs, 1 + int((time.perf_counter() - start) * rate))
        new = range(due - len(tasks))
        tasks.extend(asyncio.create_task(_timed_submit(api, queue)) for _ in new)
        await asyncio.sleep(max(0.0, start + len(tasks) / rate - time.perf_counter()))
    await asyncio.gather(*tasks)


async def latency(rig: Rig, load: Load, workers: WorkerConfig, rate: float) -> Latency:
    """Per-job path at an offered ``rate``; latency = worker receipt - just before Submit."""
    await rig.producers.set_width(load.queue, load.width)
    acks, recorder = Acks(load.jobs), _Recorder()
    pool = WorkerPool(rig.workers, load.queue, workers, acks, recorder)
    try:
        await pool.start()
        meter = Meter(rig.server_times)
        await _paced(rig.producers, load.queue, rate, load.jobs)
        await pool.until_acked()
        await rig.producers.settled(load.queue)
        m = meter.result(load.jobs, acks.end)
    finally:
        await pool.close()
    samples = sorted(recorder.samples_ms)
    return Latency(
        jobs=load.jobs,
        offered_per_s=rate,
        achieved_per_s=m.jobs_per_s,
        p50_ms=percentile(samples, 50),
        p99_ms=percentile(samples, 99),
        max_ms=samples[-1],
        server_cpu_us_per_job=m.server_cpu_us_per_job,
        other_cpu_pct=m.other_cpu_pct,
    )
