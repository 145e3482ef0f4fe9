"""``python -m bench.schedules_idle`` (part of ``make bench``): what 10,000 schedules cost a
server, as a share of one core. Target: under 5 % at idle (no tick due), on both backends.

Method: a real dispatchd subprocess (embedded with its journal under a temporary data dir,
and ``--backend redis`` on a redis-server of its own), 10,000 schedules created through
CreateSchedule (50 calls in flight). Two loads, each measured over ``--seconds`` of wall
time after a 2 s settle, as the server's CPU (utime + stime from /proc) over that time:

- idle: every schedule is daily at a random minute of an hour that is 12 hours away (no
  tick inside the window): the cost of holding them (the timer heap, the Redis poll).
- hourly: every schedule is ``S M * * * *`` at a random second of a random minute, so
  about 2.8 ticks fire every second, each submitting a job (overlap ALLOW, nobody runs
  them): holding them while they fire.

Prints a table and writes bench/results/schedules.json; exits 1 when the idle figure of
any backend is 5 % or more.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import grpc

from bench.procs import ServerProcess, cpu_times, free_port, start, start_dispatchd, stop_all
from dispatchd_client.v1 import dispatcher_pb2 as pb

SCHEDULES = 10_000
IN_FLIGHT = 50
TARGET_PCT = 5.0
RESULTS = Path(__file__).with_name("results") / "schedules.json"
SERVICE = "/dispatchd.v1.DispatcherService/"


def _spec(load: str, rng: random.Random) -> pb.ScheduleSpec:
    if load == "idle":
        hour = (datetime.datetime.now(datetime.UTC).hour + 12) % 24
        return pb.ScheduleSpec(cron_expressions=[f"{rng.randrange(60)} {hour} * * *"])
    return pb.ScheduleSpec(cron_expressions=[f"{rng.randrange(60)} {rng.randrange(60)} * * * *"])


async def _ready(target: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            async with grpc.aio.insecure_channel(target) as ch:
                await ch.unary_unary(
                    SERVICE + "ListQueues",
                    pb.ListQueuesRequest.SerializeToString,
                    pb.ListQueuesResponse.FromString,
                )(pb.ListQueuesRequest(), timeout=2)
                return
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _jobs(target: str) -> int:
    """Jobs waiting in every queue: the ticks that fired (nobody runs them)."""
    async with grpc.aio.insecure_channel(target) as ch:
        resp = await ch.unary_unary(
            SERVICE + "ListQueues",
            pb.ListQueuesRequest.SerializeToString,
            pb.ListQueuesResponse.FromString,
        )(pb.ListQueuesRequest(), timeout=10)
    return sum(q.pending_count for q in resp.queues)


async def _create(target: str, load: str, count: int) -> float:
    rng = random.Random(7)
    started = time.monotonic()
    async with grpc.aio.insecure_channel(target) as ch:
        create = ch.unary_unary(
            SERVICE + "CreateSchedule",
            pb.CreateScheduleRequest.SerializeToString,
            pb.CreateScheduleResponse.FromString,
        )
        policies = pb.SchedulePolicies(overlap=pb.SCHEDULE_OVERLAP_POLICY_ALLOW)
        requests = [
            pb.CreateScheduleRequest(
                schedule=pb.Schedule(
                    id=f"{load}-{i:05d}",
                    spec=_spec(load, rng),
                    template=pb.JobSpec(queue=f"sched-{i % 50}", payload=b"tick"),
                    policies=policies,
                )
            )
            for i in range(count)
        ]
        for i in range(0, count, IN_FLIGHT):
            await asyncio.gather(*(create(r, timeout=60) for r in requests[i : i + IN_FLIGHT]))
    return time.monotonic() - started


def _cpu_pct(servers: list[ServerProcess], seconds: float) -> float:
    """CPU of ``servers`` together (dispatchd, and redis-server behind it) over ``seconds``."""
    before, wall0 = sum(sum(cpu_times(s.pid)) for s in servers), time.monotonic()
    time.sleep(seconds)
    after, wall1 = sum(sum(cpu_times(s.pid)) for s in servers), time.monotonic()
    for s in servers:
        s.check_alive()
    return (after - before) / (wall1 - wall0) * 100


def _redis() -> tuple[ServerProcess, str] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server is not installed (make redis-tools): the Redis row is skipped")
        return None
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    return start("redis", [*argv, "no"], port), f"redis://127.0.0.1:{port}/0"


def _server(backend: str, data_dir: Path, redis_url: str) -> ServerProcess:
    port = free_port()
    if backend == "embedded":
        return start_dispatchd(port, data_dir=data_dir)
    exe = Path(sys.executable).with_name("dispatchd")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "dispatchd"]
    cmd += ["--listen", f"127.0.0.1:{port}", "--log-level", "warning", "--drain-grace", "2"]
    cmd += ["--metrics-listen", "0", "--http-listen", "0"]
    cmd += ["--backend", "redis", "--redis-url", redis_url]
    return start("dispatchd-redis", cmd, port)


def run(seconds: float, count: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    redis = _redis()
    try:
        for backend in ("embedded", "redis"):
            if backend == "redis" and redis is None:
                continue
            for load in ("idle", "hourly"):
                with tempfile.TemporaryDirectory(prefix="bench-schedules-") as tmp:
                    if redis is not None:
                        _flush(redis[1])
                    server = _server(backend, Path(tmp), redis[1] if redis else "")
                    try:
                        asyncio.run(_ready(server.target))
                        made = asyncio.run(_create(server.target, load, count))
                        time.sleep(2.0)
                        measured = [server] + ([redis[0]] if backend == "redis" and redis else [])
                        fired0 = asyncio.run(_jobs(server.target))
                        pct = _cpu_pct(measured, seconds)
                        fired = asyncio.run(_jobs(server.target)) - fired0
                    finally:
                        stop_all([server])
                results[f"{backend} {load}"] = {
                    "cpu_pct": round(pct, 2),
                    "create_s": round(made, 1),
                    "ticks_fired_per_s": round(fired / seconds, 2),
                }
                print(
                    f"{backend:9} {load:7} {count} schedules: {pct:5.2f} % of one core, "
                    f"{fired / seconds:.2f} ticks fired/s (created in {made:.1f} s)",
                    flush=True,
                )
    finally:
        if redis is not None:
            stop_all([redis[0]])
    return results


def _flush(url: str) -> None:
    import redis as redis_py  # only when a Redis row runs

    client = redis_py.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per load")
    parser.add_argument("--schedules", type=int, default=SCHEDULES)
    args = parser.parse_args()
    results = run(args.seconds, args.schedules)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    idle = {k: v["cpu_pct"] for k, v in results.items() if k.endswith("idle")}
    worst = max(idle.values()) if idle else 0.0
    verdict = "meets" if worst < TARGET_PCT else "MISSES"
    print(
        f"idle with {args.schedules} schedules: {worst:.2f} % of one core at most; "
        f"{verdict} the < {TARGET_PCT:g} % target"
    )
    return 0 if worst < TARGET_PCT else 1


if __name__ == "__main__":
    sys.exit(main())
