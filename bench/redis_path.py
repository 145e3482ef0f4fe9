"""The Redis path against the embedded one, in the same command and on the same machine:
per-job (one Submit per job, workers acking as they go) and burn-down (jobs submitted in
batches first, then drained by workers) jobs/s for the embedded server, one Redis-backed
replica and three, as ratios of the embedded figures; plus dispatchd and redis-server CPU
microseconds per job (utime + stime from /proc/<pid>/stat), Redis commands per job (INFO
commandstats before and after each phase: every command, those the scripts run included,
and the scripts, EVALSHA, among them) and Redis round trips per job (INFO stats'
total_reads_processed: one read event per request or pipeline a client sent).

    python -m bench.redis_path [--rounds 3] [--per-job-jobs 3000] [--burn-jobs 20000]
                               [--modes embedded,"redis x1"]

Prints a table and writes bench/results/redis_path.json. Needs redis-server on PATH
(`make redis-tools` installs it)."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import redis as redis_py

from bench.procs import ServerProcess, cpu_times, free_port, start, stop_all
from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc

QUEUE = "bench"
WORKERS = 6
CREDITS = 64
SUBMITTERS = 32
MODES = ("embedded", "redis x1", "redis x3")
RESULTS = Path(__file__).with_name("results") / "redis_path.json"


@dataclass
class Run:
    jobs: int
    seconds: float
    server_cpu: float
    redis_cpu: float
    commands: int = 0
    scripts: int = 0
    reads: int = 0

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds

    def us_per_job(self, cpu: float) -> float:
        return cpu / self.jobs * 1e6


def _dispatchd(port: int, redis_url: str | None) -> ServerProcess:
    exe = Path(sys.executable).with_name("dispatchd")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "dispatchd"]
    cmd += ["--listen", f"127.0.0.1:{port}", "--log-level", "warning", "--drain-grace", "2"]
    cmd += ["--metrics-listen", "0", "--http-listen", "0"]
    if redis_url is not None:
        cmd += ["--backend", "redis", "--redis-url", redis_url]
    return start("dispatchd", cmd, port)


def _redis(port: int) -> ServerProcess:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: run `make redis-tools`")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    return start("redis", [*argv, "no"], port)


async def _ready(target: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            async with grpc.aio.insecure_channel(target) as ch:
                stub = pb_grpc.DispatcherServiceStub(ch)
                await stub.ListQueues(pb.ListQueuesRequest(), timeout=1.0)
                return
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


class Fleet:
    """Servers of one mode, the channels to them, and CPU readings of every process."""

    def __init__(self, servers: list[ServerProcess], redis: ServerProcess | None) -> None:
        self.servers = servers
        self.redis = redis
        self.channels = [grpc.aio.insecure_channel(s.target) for s in servers]
        self.stubs = [pb_grpc.DispatcherServiceStub(ch) for ch in self.channels]

    def cpu(self) -> tuple[float, float]:
        server = sum(sum(cpu_times(s.pid)) for s in self.servers)
        redis = sum(cpu_times(self.redis.pid)) if self.redis is not None else 0.0
        return server, redis

    def commands(self) -> tuple[int, int, int]:
        """(every command, EVALSHA, read events) Redis saw so far (INFO commandstats,
        INFO stats)."""
        if self.redis is None:
            return 0, 0, 0
        host, _, port = self.redis.target.rpartition(":")
        client = redis_py.Redis(host=host, port=int(port))
        try:
            stats = client.info("commandstats")
            reads = int(client.info("stats")["total_reads_processed"])
        finally:
            client.close()
        calls = {name: int(v["calls"]) for name, v in stats.items()}
        return sum(calls.values()), calls.get("cmdstat_evalsha", 0), reads

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close(None)


async def _worker(stub: pb_grpc.DispatcherServiceStub, done: Callable[[int], bool]) -> None:
    """A raw worker: acks every delivery batch with one results message."""
    outbox: asyncio.Queue[pb.WorkRequest | None] = asyncio.Queue()
    outbox.put_nowait(pb.WorkRequest(hello=pb.WorkerHello(queues=[QUEUE], max_in_flight=CREDITS)))

    async def requests() -> AsyncIterator[pb.WorkRequest]:
        while (msg := await outbox.get()) is not None:
            yield msg

    call = stub.Work(requests())
    try:
        async for resp in call:
            if resp.WhichOneof("kind") != "deliveries":
                continue
            ds = resp.deliveries.deliveries
            ack = pb.WorkRequest()
            for d in ds:
                ack.results.results.add(job_id=d.job.id, lease_id=d.lease_id, output=b"")
            outbox.put_nowait(ack)
            if done(len(ds)):
                break
    finally:
        outbox.put_nowait(None)
        call.cancel()


async def _phase(fleet: Fleet, jobs: int, produce: Callable[[], asyncio.Future[None]]) -> Run:
    acked = 0
    finished = asyncio.Event()

    def done(n: int) -> bool:
        nonlocal acked
        acked += n
        if acked >= jobs:
            finished.set()
        return False

    server0, redis0 = fleet.cpu()
    commands0, scripts0, reads0 = fleet.commands()
    started = time.perf_counter()
    workers = [
        asyncio.create_task(_worker(fleet.stubs[i % len(fleet.stubs)], done))
        for i in range(WORKERS)
    ]
    await produce()
    await asyncio.wait_for(finished.wait(), 300)
    seconds = time.perf_counter() - started
    server1, redis1 = fleet.cpu()
    commands1, scripts1, reads1 = fleet.commands()
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return Run(
        jobs,
        seconds,
        server1 - server0,
        redis1 - redis0,
        commands1 - commands0,
        scripts1 - scripts0,
        max(0, reads1 - reads0 - 2),  # less the two INFO calls of the first reading
    )


async def _per_job(fleet: Fleet, jobs: int) -> Run:
    async def produce() -> None:
        async def submitter(i: int, n: int) -> None:
            stub = fleet.stubs[i % len(fleet.stubs)]
            for _ in range(n):
                await stub.Submit(pb.SubmitRequest(job=pb.JobSpec(queue=QUEUE)))

        each = jobs // SUBMITTERS
        await asyncio.gather(*(submitter(i, each) for i in range(SUBMITTERS)))

    return await _phase(
        fleet, jobs // SUBMITTERS * SUBMITTERS, lambda: asyncio.ensure_future(produce())
    )


async def _burn_down(fleet: Fleet, jobs: int) -> Run:
    batch = pb.SubmitBatchRequest(jobs=[pb.JobSpec(queue=QUEUE)] * 1000)
    await fleet.stubs[0].UpdateQueue(
        pb.UpdateQueueRequest(
            queue=pb.Queue(name=QUEUE, paused=True), update_mask={"paths": ["paused"]}
        )
    )
    for _ in range(jobs // 1000):
        await fleet.stubs[0].SubmitBatch(batch)

    async def resume() -> None:
        await fleet.stubs[0].ResumeQueue(pb.ResumeQueueRequest(name=QUEUE))

    return await _phase(fleet, jobs // 1000 * 1000, lambda: asyncio.ensure_future(resume()))


async def _mode(mode: str, per_job_jobs: int, burn_jobs: int) -> tuple[Run, Run]:
    redis = _redis(free_port()) if mode != "embedded" else None
    url = f"redis://{redis.target}/0" if redis is not None else None
    replicas = 3 if mode == "redis x3" else 1
    if redis is not None:
        await asyncio.sleep(0.3)  # redis-server binds within milliseconds
    servers = [_dispatchd(free_port(), url) for _ in range(replicas)]
    fleet = Fleet(servers, redis)
    try:
        for s in servers:
            await _ready(s.target)
        await fleet.stubs[0].UpdateQueue(
            pb.UpdateQueueRequest(
                queue=pb.Queue(name=QUEUE, width=100_000),
                update_mask={"paths": ["width"]},
                allow_missing=True,
            )
        )
        per_job = await _per_job(fleet, per_job_jobs)
        burn = await _burn_down(fleet, burn_jobs)
        return per_job, burn
    finally:
        await fleet.close()
        stop_all([*([redis] if redis is not None else []), *servers])


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


async def main_async(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    modes = [m for m in args.modes.split(",") if m]
    runs: dict[str, list[tuple[Run, Run]]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:  # interleaved: each round sees the same machine load per mode
            runs[mode].append(await _mode(mode, args.per_job_jobs, args.burn_jobs))
    out: dict[str, dict[str, float]] = {}
    for mode, pairs in runs.items():
        row: dict[str, float] = {}
        for i, phase in enumerate(("per_job", "burn_down")):
            rs = [p[i] for p in pairs]
            row[f"{phase}_jobs_per_s"] = _median([r.jobs_per_s for r in rs])
            row[f"{phase}_server_cpu_us_per_job"] = _median(
                [r.us_per_job(r.server_cpu) for r in rs]
            )
            row[f"{phase}_redis_cpu_us_per_job"] = _median([r.us_per_job(r.redis_cpu) for r in rs])
            row[f"{phase}_redis_commands_per_job"] = _median([r.commands / r.jobs for r in rs])
            row[f"{phase}_redis_scripts_per_job"] = _median([r.scripts / r.jobs for r in rs])
            row[f"{phase}_redis_round_trips_per_job"] = _median([r.reads / r.jobs for r in rs])
        out[mode] = row
    base = out.get("embedded")
    for row in out.values():
        for phase in ("per_job", "burn_down"):
            ref = base[f"{phase}_jobs_per_s"] if base else row[f"{phase}_jobs_per_s"]
            row[f"{phase}_vs_embedded"] = row[f"{phase}_jobs_per_s"] / ref
    return out


def _print(out: dict[str, dict[str, float]], rounds: int) -> None:
    print(f"Redis path vs embedded (medians of {rounds} rounds)")
    print(f"{'mode':10} {'phase':10} {'jobs/s':>9} {'ratio':>6} ", end="")
    print(f"{'server us/job':>14} {'redis us/job':>13} {'cmds/job':>9} {'scripts/job':>12}", end="")
    print(f" {'trips/job':>10}")
    for mode, row in out.items():
        for phase in ("per_job", "burn_down"):
            print(
                f"{mode:10} {phase:10} {row[f'{phase}_jobs_per_s']:9.0f} "
                f"{row[f'{phase}_vs_embedded']:6.2f} "
                f"{row[f'{phase}_server_cpu_us_per_job']:14.0f} "
                f"{row[f'{phase}_redis_cpu_us_per_job']:13.0f} "
                f"{row[f'{phase}_redis_commands_per_job']:9.2f} "
                f"{row[f'{phase}_redis_scripts_per_job']:12.2f} "
                f"{row[f'{phase}_redis_round_trips_per_job']:10.2f}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.redis_path", description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-job-jobs", type=int, default=3200)
    p.add_argument("--burn-jobs", type=int, default=20_000)
    p.add_argument("--modes", default=",".join(MODES), help=f"of {', '.join(MODES)}")
    args = p.parse_args(argv)
    out = asyncio.run(main_async(args))
    _print(out, args.rounds)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
