"""The issue's per-job figures, through the real Python client (bench/drive.py children).

* per_job: ``producers`` coroutines in one producer process each await
  ``AsyncClient.submit()`` for one job at a time (coalescing on, as shipped) while a worker
  process runs ``workers`` :class:`~dispatchd_client.Worker` instances of concurrency
  ``concurrency`` with a no-op async handler; each result goes back as its job finishes
  (the Worker joins results of one loop tick in one message). End to end: from the go
  signal to the last handler's return.
* burndown: ``burndown_jobs`` jobs queued beforehand (SubmitBatch of 1,000 into a paused
  queue), the worker process connected, then the queue resumed; from the resume to the
  last handler's return.

Each runs against three set-ups in the same round: the in-memory server on a wide queue
(the plain figure), the journaled server (``durable_*``), and the in-memory server on a
queue of width 8 with a rate far above what can bind (``enforced_*``: what enforcing width
and rate costs). Server CPU is the server process's utime + stime from the go signal until
GetQueue shows nothing pending or underway; client CPU is the children's own.

Slot turnaround (each run; the figure that matters on the width-limited ``enforced_*``
runs): on the server, from reading a result that frees a slot to writing the delivery that
fills it (dispatchd's opt-in probe, observability/turnaround.py, which bench/run.py turns
on through the environment of the servers it starts and reads from the metrics port); in
the worker process, from a handler's return to the next handler's start (bench/drive.py).
Both pair first in, first out; p50 and p99 in microseconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from bench import rpc
from bench.measure import Measured, Meter, median, percentile
from bench.procs import ServerProcess
from bench.targets import Target
from dispatchd_client.v1 import dispatcher_pb2 as pb

CHILD_TIMEOUT = 300.0
PREFILL_BATCH = 1_000
ENFORCED_WIDTH = 8
NON_BINDING_RATE = 1_000_000.0
PAYLOAD = b"x" * 32
#: The server's probe: the environment variable that turns it on and its endpoint
#: (dispatchd.observability.turnaround.ENV and PATH).
PROBE_ENV = "DISPATCHD_TURNAROUND_PROBE"
PROBE_PATH = "/debug/turnaround"

KINDS = ("per_job", "burndown")
SETUPS = ("", "durable_", "enforced_")

TARGETS = (
    Target("per_job_jobs_per_s", "per-job jobs/s (AsyncClient + Worker)", ">=", 9_000),
    Target("burndown_jobs_per_s", "burn-down jobs/s (8 Workers x 16)", ">=", 13_000),
    Target("enforced_per_job_cost", "per-job cost of width 8 + rate", "<=", 0.10),
    Target("enforced_burndown_cost", "burn-down cost of width 8 + rate", "<=", 0.10),
)
INFO_ROWS = tuple(
    row
    for setup in SETUPS
    for kind in KINDS
    for row in (
        *(
            ((f"{setup}{kind}_jobs_per_s", f"{setup}{kind} jobs/s"),)
            if setup  # the plain figures are target rows
            else ()
        ),
        (f"{setup}{kind}_vs_baseline", f"{setup}{kind} / raw baseline"),
        (f"{setup}{kind}_server_cpu_us_per_job", f"{setup}{kind} server CPU us/job"),
        (f"{setup}{kind}_client_cpu_us_per_job", f"{setup}{kind} client CPU us/job"),
        *(
            (f"{setup}{kind}_turnaround_{side}_{p}_us", f"{setup}{kind} {label} {p} us")
            for side, label in (("server", "slot turnaround"), ("worker", "worker slot gap"))
            for p in ("p50", "p99")
            if setup == "enforced_"  # where a freed slot is what the next job waits for
        ),
    )
)


@dataclass(frozen=True, slots=True)
class Shape:
    producers: int = 50
    workers: int = 8
    concurrency: int = 16
    per_job_jobs: int = 20_000
    burndown_jobs: int = 100_000


@dataclass(frozen=True, slots=True)
class Turnaround:
    """Slot turnaround of one run, in microseconds (0: no samples, e.g. probe off)."""

    server_p50_us: float = 0.0
    server_p99_us: float = 0.0
    server_samples: int = 0
    worker_p50_us: float = 0.0
    worker_p99_us: float = 0.0


class Run(NamedTuple):
    measured: Measured
    turnaround: Turnaround


@dataclass
class ClientRuns:
    """Every run, by set-up and kind: ``runs["durable_burndown"]``."""

    runs: dict[str, list[Measured]] = field(
        default_factory=lambda: {f"{s}{k}": [] for s in SETUPS for k in KINDS}
    )
    turnaround: dict[str, list[Turnaround]] = field(
        default_factory=lambda: {f"{s}{k}": [] for s in SETUPS for k in KINDS}
    )

    def add(self, key: str, run: Run) -> None:
        self.runs[key].append(run.measured)
        self.turnaround[key].append(run.turnaround)


async def server_turnaround(server: ServerProcess) -> list[float]:
    """The server's turnaround samples (us) since the last ask; [] when its probe is off."""
    if not server.metrics:
        return []
    host, _, port = server.metrics.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {PROBE_PATH} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return []
    samples: list[float] = json.loads(body)["us"]
    return samples


def _turnaround(server_us: list[float], worker: list[float]) -> Turnaround:
    ordered = sorted(server_us)
    p50, p99 = (percentile(ordered, 50), percentile(ordered, 99)) if ordered else (0.0, 0.0)
    gap50, gap99 = worker if len(worker) == 2 else (0.0, 0.0)
    return Turnaround(p50, p99, len(ordered), gap50, gap99)


class _Child:
    """One bench/drive.py process, spoken to by lines."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name

    @classmethod
    async def start(cls, *args: str) -> _Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.drive",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(proc, args[0])

    async def expect(self, word: str) -> list[float]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), CHILD_TIMEOUT)
        parts = raw.decode().split()
        if not parts or parts[0] != word:
            code = await self.proc.wait()
            raise RuntimeError(f"bench.drive {self.name}: expected {word!r}, got {raw!r} ({code})")
        return [float(x) for x in parts[1:]]

    def send(self, line: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    async def finish(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 30.0)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


def _with_children(m: Measured, children_cpu: float) -> Measured:
    """The meter counted this process as the client; the children are the client here."""
    return dataclasses.replace(
        m,
        client_cpu_s=m.client_cpu_s + children_cpu,
        other_cpu_s=max(0.0, m.other_cpu_s - children_cpu),
    )


async def _configure(api: rpc.Dispatchd, queue: str, enforced: bool, paused: bool) -> None:
    q = pb.Queue(name=queue, width=ENFORCED_WIDTH if enforced else 100_000, paused=paused)
    paths = ["width", "paused"]
    if enforced:
        q.rate.per_second = NON_BINDING_RATE
        paths.append("rate")
    await api.configure(q, *paths)


async def per_job(
    api: rpc.Dispatchd, server: ServerProcess, queue: str, shape: Shape, enforced: bool
) -> Run:
    await _configure(api, queue, enforced, paused=False)
    jobs = shape.per_job_jobs
    worker = await _Child.start(*_work_args(server, queue, shape, jobs))
    producer: _Child | None = None
    try:
        await worker.expect("ready")
        producer = await _Child.start(
            "produce",
            server.target,
            queue,
            "--jobs",
            str(jobs),
            "--producers",
            str(shape.producers),
        )
        await producer.expect("ready")
        await server_turnaround(server)  # forget what came before
        meter = Meter(server.cpu_times)
        producer.send()
        _, _, producer_cpu = await producer.expect("done")
        end, worker_cpu, *gaps = await worker.expect("done")
        await api.settled(queue)
        m = _with_children(meter.result(jobs, end), producer_cpu + worker_cpu)
        return Run(m, _turnaround(await server_turnaround(server), gaps))
    finally:
        if producer is not None:
            await producer.finish()
        await worker.finish()


async def burndown(
    api: rpc.Dispatchd, server: ServerProcess, queue: str, shape: Shape, enforced: bool
) -> Run:
    await _configure(api, queue, enforced, paused=True)
    jobs = shape.burndown_jobs
    await api.submit_all([pb.JobSpec(queue=queue, payload=PAYLOAD)] * jobs, PREFILL_BATCH)
    worker = await _Child.start(*_work_args(server, queue, shape, jobs))
    try:
        await worker.expect("ready")
        await server_turnaround(server)
        meter = Meter(server.cpu_times)
        await api.configure(pb.Queue(name=queue, paused=False), "paused")
        end, worker_cpu, *gaps = await worker.expect("done")
        await api.settled(queue)
        m = _with_children(meter.result(jobs, end), worker_cpu)
        return Run(m, _turnaround(await server_turnaround(server), gaps))
    finally:
        await worker.finish()


def _work_args(server: ServerProcess, queue: str, shape: Shape, jobs: int) -> list[str]:
    return [
        "work",
        server.target,
        queue,
        "--jobs",
        str(jobs),
        "--workers",
        str(shape.workers),
        "--concurrency",
        str(shape.concurrency),
    ]


def _med(values: Sequence[float]) -> float:
    return median(values) if values else float("nan")


def summarize(c: ClientRuns, baseline_per_s: float) -> dict[str, float]:
    """Medians per figure, each also as a ratio of the raw baseline's messages/s, and the
    cost of enforcement: 1 - enforced / plain (0.05 is 5 % slower)."""
    s: dict[str, float] = {}
    for key, runs in c.runs.items():
        if not runs:
            continue
        s[f"{key}_jobs_per_s"] = _med([m.jobs_per_s for m in runs])
        s[f"{key}_vs_baseline"] = s[f"{key}_jobs_per_s"] / baseline_per_s
        s[f"{key}_server_cpu_us_per_job"] = _med([m.server_cpu_us_per_job for m in runs])
        s[f"{key}_client_cpu_us_per_job"] = _med([m.client_cpu_us_per_job for m in runs])
        s[f"{key}_other_cpu_pct"] = _med([m.other_cpu_pct for m in runs])
        turns = [t for t in c.turnaround.get(key, []) if t.server_samples]
        for name in ("server_p50_us", "server_p99_us", "worker_p50_us", "worker_p99_us"):
            if turns:
                s[f"{key}_turnaround_{name}"] = _med([getattr(t, name) for t in turns])
    for kind in KINDS:
        plain, enforced = s.get(f"{kind}_jobs_per_s"), s.get(f"enforced_{kind}_jobs_per_s")
        if plain and enforced:
            s[f"enforced_{kind}_cost"] = 1.0 - enforced / plain
        durable = s.get(f"durable_{kind}_jobs_per_s")
        if plain and durable:
            s[f"durable_{kind}_vs_memory"] = durable / plain
    return s
