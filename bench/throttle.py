"""``python -m bench.throttle`` (part of ``make bench``; ``make bench-throttle`` alone): how
well a queue follows a provider whose limit it does not know (docs/rate-limits.md).

Method: a real dispatchd subprocess (embedded, then ``--backend redis`` on a redis-server of
its own; ``--backend`` picks one) and, in this process, an aiohttp "provider"
per scenario that enforces a hidden limit with a token bucket (the limit per second, a
quarter second of burst) and answers 429 with ``Retry-After: 1`` above it. The hidden limit
is 40/s for the first half of the run and 15/s for the second. Four scenarios run side by
side, each with its own provider and queue, each queue configured at 80/s (2x too high)
with a burst of 10:

- http adaptive / worker adaptive: the queue has ``adaptive`` (floor 1/s, x0.85 per signal,
  +0.5/s per 1 s quiet); http: the server pushes to the provider (a 429 is a throttle
  signal); worker: a Python Worker calls it and raises ``Throttled(retry_after=...)``;
- http fixed / worker fixed: the same without ``adaptive``: the baseline (the throttle
  signals still hold the queue for each Retry-After).

Producers keep every queue's backlog above 200 jobs. Figures per scenario and phase: how
long after the change the queue's effective rate (GetQueue, sampled every 0.25 s) came
within 15 % of the hidden limit and stayed there for the rest of the phase (convergence),
and the calls the provider accepted per second over the phase's last 10 s (each 429 also
holds the queue for its Retry-After, a second of no calls, so throughput sits a little
under the rate); over the run, the share of calls answered 429. Targets (adaptive
scenarios): converged within 10 s of each change, fewer than 5 % of calls answered 429.
Prints a table per backend, writes bench/results/throttle.json, exits 1 when an adaptive
scenario misses a target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.procs import ServerProcess, free_port, start, start_dispatchd, stop_all
from dispatchd_client import (
    AdaptiveRate,
    AsyncClient,
    HttpTarget,
    NewJob,
    Rate,
    ReceivedJob,
    Throttled,
    Worker,
)

LIMITS = (40.0, 15.0)
CEILING = 80.0
#: The queues' burst: an eighth of a second at the configured rate (an adaptive rate scales
#: it down with the rate). The provider's own burst is a quarter second at its limit.
BURST = 10
ADAPTIVE = AdaptiveRate(floor=1.0, decrease=0.85, increase=0.5, quiet_interval=1.0)
TOLERANCE = 0.15
CONVERGE_WITHIN = 10.0
MAX_REFUSED_SHARE = 0.05
BACKLOG = 200
RESULTS = Path(__file__).with_name("results") / "throttle.json"


@dataclass
class Provider:
    """The hidden limit: a token bucket; calls above it get 429 and Retry-After: 1."""

    limit: float = LIMITS[0]
    tokens: float = LIMITS[0] / 4
    stamp: float = field(default_factory=time.monotonic)
    accepted: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)

    def set_limit(self, limit: float) -> None:
        self._refill(time.monotonic())
        self.limit = limit
        self.tokens = min(self.tokens, limit / 4)

    def _refill(self, now: float) -> None:
        self.tokens = min(self.limit / 4, self.tokens + (now - self.stamp) * self.limit)
        self.stamp = now

    def call(self) -> bool:
        now = time.monotonic()
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.accepted.append(now)
            return True
        self.refused.append(now)
        return False


SCENARIOS = ("http-adaptive", "worker-adaptive", "http-fixed", "worker-fixed")


async def serve(providers: dict[str, Provider]) -> tuple[web.AppRunner, str]:
    async def handle(request: web.Request) -> web.Response:
        if providers[request.match_info["name"]].call():
            return web.Response(text="ok")
        return web.Response(status=429, text="slow down", headers={"Retry-After": "1"})

    app = web.Application()
    app.router.add_post("/p/{name}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/p/"


async def configure(client: AsyncClient, base: str) -> None:
    for name in SCENARIOS:
        settings: dict[str, object] = {
            "rate": Rate(CEILING, BURST),
            "max_throttle_bounces": 10_000,
        }
        if name.endswith("adaptive"):
            settings["adaptive"] = ADAPTIVE
        if name.startswith("http"):
            settings["http_target"] = HttpTarget(url=base + name)
        await client.update_queue(name, width=8, create=True, **settings)  # type: ignore[arg-type]


def worker_for(target: str, base: str, session: aiohttp.ClientSession) -> Worker:
    worker = Worker(target, concurrency=16)

    async def call(job: ReceivedJob) -> bytes:
        async with session.post(base + job.queue, data=job.payload) as resp:
            body = await resp.read()
            if resp.status == 429:
                raise Throttled(retry_after=float(resp.headers.get("Retry-After", "1")))
            return body

    for name in SCENARIOS:
        if name.startswith("worker"):
            worker.handler(name)(call)
    return worker


async def sample_rates(
    client: AsyncClient, stop: asyncio.Event, rates: dict[str, list[tuple[float, float]]]
) -> None:
    while not stop.is_set():
        for name in SCENARIOS:
            rates[name].append((time.monotonic(), (await client.get_queue(name)).effective_rate))
        await asyncio.sleep(0.25)


async def keep_fed(client: AsyncClient, stop: asyncio.Event) -> None:
    while not stop.is_set():
        for name in SCENARIOS:
            if (await client.get_queue(name)).pending_count < BACKLOG:
                await client.submit_batch([NewJob(name, b"x") for _ in range(BACKLOG)])
        await asyncio.sleep(0.5)


def per_second(times: list[float], start: float, end: float) -> list[int]:
    counts = [0] * int(end - start)
    for t in times:
        i = int(t - start)
        if 0 <= i < len(counts):
            counts[i] += 1
    return counts


def convergence(samples: list[tuple[float, float]], limit: float, start: float) -> float | None:
    """Seconds after ``start`` from which every sampled effective rate stays within
    TOLERANCE of ``limit``; None when the last one is outside."""
    since = None
    for t, rate in samples:
        inside = abs(rate - limit) <= TOLERANCE * limit
        since = (since if since is not None else t) if inside else None
    return None if since is None else round(since - start, 2)


def figures(
    p: Provider, rates: list[tuple[float, float]], t0: float, phase: float
) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, limit in enumerate(LIMITS):
        start, end = t0 + k * phase, t0 + (k + 1) * phase
        counts = per_second(p.accepted, start, end)
        tail = counts[-10:]
        mine = [(t, r) for t, r in rates if start <= t < end]
        out[f"phase{k + 1}"] = {
            "hidden_limit": limit,
            "accepted_per_s": counts,
            "effective_rate": [round(r, 2) for _, r in mine[::4]],
            "accepted_per_s_last_10s": round(sum(tail) / len(tail), 2),
            "converged_after_s": convergence(mine, limit, start),
        }
    calls = len(p.accepted) + len(p.refused)
    out["calls"] = calls
    out["refused_share"] = round(len(p.refused) / calls, 4) if calls else 0.0
    return out


def redis_server() -> tuple[ServerProcess, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed: run `make redis-tools`")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    return start("redis", [*argv, "no"], port), f"redis://127.0.0.1:{port}/0"


async def run(phase: float, backend: str) -> dict[str, dict[str, object]]:
    providers = {name: Provider() for name in SCENARIOS}
    runner, base = await serve(providers)
    port = free_port()
    servers = []
    extra: list[str] = []
    if backend == "redis":
        redis, url = redis_server()
        servers.append(redis)
        await asyncio.sleep(0.3)  # redis-server binds within milliseconds
        extra = ["--backend", "redis", "--redis-url", url]
    server = start_dispatchd(port, extra=extra)
    servers.append(server)
    stop = asyncio.Event()
    try:
        async with AsyncClient(server.target) as client, aiohttp.ClientSession() as session:
            await _ready(client)
            await configure(client, base)
            worker = worker_for(server.target, base, session)
            worker_task = asyncio.create_task(worker.run_async())
            feeder = asyncio.create_task(keep_fed(client, stop))
            rates: dict[str, list[tuple[float, float]]] = {name: [] for name in SCENARIOS}
            sampler = asyncio.create_task(sample_rates(client, stop, rates))
            t0 = time.monotonic()
            for p in providers.values():
                p.stamp, p.tokens = t0, p.limit / 4
            await asyncio.sleep(phase)
            for p in providers.values():
                p.set_limit(LIMITS[1])
            await asyncio.sleep(phase)
            effective = {n: (await client.get_queue(n)).effective_rate for n in SCENARIOS}
            stop.set()
            await feeder
            await sampler
            await worker.stop(force=True)
            await asyncio.gather(worker_task, return_exceptions=True)
        results = {}
        for name, p in providers.items():
            results[name] = figures(p, rates[name], t0, phase)
            results[name]["effective_rate_at_end"] = round(effective[name], 2)
        return results
    finally:
        stop_all(servers)
        await runner.cleanup()


async def _ready(client: AsyncClient, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            await client.list_queues()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def report(backend: str, results: dict[str, dict[str, object]]) -> bool:
    print(f"\nthrottle ({backend}): hidden limit 40/s then 15/s, queues configured at 80/s")
    head = f"{'scenario':<16} {'limit':<6} {'accepted/s':>10} {'converged':>10} {'429 share':>10}"
    print(head)
    met = True
    for name, r in results.items():
        for k in (1, 2):
            ph = r[f"phase{k}"]
            assert isinstance(ph, dict)
            conv = ph["converged_after_s"]
            conv_text = "never" if conv is None else f"{conv:g} s"
            share = f"{float(r['refused_share']):.1%}" if k == 1 else ""  # type: ignore[arg-type]
            line = f"{name:<16} {ph['hidden_limit']:<6g} {ph['accepted_per_s_last_10s']:>10} "
            print(line + f"{conv_text:>10} {share:>10}")
            if name.endswith("adaptive") and (conv is None or conv > CONVERGE_WITHIN):
                met = False
        if name.endswith("adaptive") and float(r["refused_share"]) >= MAX_REFUSED_SHARE:  # type: ignore[arg-type]
            met = False
    targets = f"converge within {CONVERGE_WITHIN:g} s, < {MAX_REFUSED_SHARE:.0%} answered 429"
    print(f"targets (adaptive): {targets}: {'met' if met else 'MISSED'}")
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase-seconds", type=float, default=30.0)
    parser.add_argument("--backend", choices=["embedded", "redis", "both"], default="both")
    args = parser.parse_args()
    backends = ["embedded", "redis"] if args.backend == "both" else [args.backend]
    met, everything = True, {}
    for backend in backends:
        everything[backend] = results = asyncio.run(run(args.phase_seconds, backend))
        met = report(backend, results) and met
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(everything, indent=2) + "\n")
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
