"""``python bench/run.py --observability-cost``: what metrics cost the per-job path.

Two dispatchd processes run side by side: one with metrics on (``--metrics-listen`` on a
free port, scraped every ``SCRAPE_INTERVAL`` seconds during each run, which is 15 times
more often than a typical Prometheus) and one with ``--metrics-listen 0``. Neither has an
OTEL_* variable, so tracing is off in both, as it is by default. The per-job phase runs
against each in ABBA order (on, off, off, on, ...) for ``--rounds`` pairs, so a drift in
the machine's load hits both sides alike. The report shows medians per side, the median
of the per-round on/off ratios (each round's two runs are adjacent in time, so the ratio
of a pair is less exposed to other programs than the ratio of medians), and the "other
processes' CPU" noise column of each side. On a busy machine, more and shorter rounds
(``--rounds 12 --per-job-jobs 5000``) pair better.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procs, report, rpc, workload
from bench.measure import Measured, median
from bench.procs import ServerProcess
from bench.workload import Load, WorkerConfig

SCRAPE_INTERVAL = 1.0


@dataclass
class Side:
    """One server under test and its runs."""

    name: str
    server: ServerProcess
    metrics_port: int
    runs: list[Measured] = field(default_factory=list)
    scrapes: int = 0


async def _scrape(port: int) -> int:
    """One GET /metrics; returns the body size."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
        await writer.drain()
        body = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    if not body.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"scrape failed: {body[:200]!r}")
    return len(body)


async def _scraper(side: Side) -> None:
    while True:
        await _scrape(side.metrics_port)
        side.scrapes += 1
        await asyncio.sleep(SCRAPE_INTERVAL)


@dataclass(frozen=True, slots=True)
class Shape:
    """The per-job phase's knobs (from bench.run.Settings)."""

    jobs: int
    warmup_jobs: int
    producers: int
    width: int
    workers: WorkerConfig


async def _per_job(side: Side, queue: str, jobs: int, shape: Shape) -> Measured:
    producers = rpc.channel(side.server.target)
    workers = rpc.channel(side.server.target)
    rig = workload.Rig(rpc.Dispatchd(producers), rpc.Dispatchd(workers), side.server.cpu_times)
    scraper = asyncio.create_task(_scraper(side)) if side.metrics_port else None
    try:
        load = Load(queue, shape.width, jobs, shape.producers)
        return await workload.per_job(rig, load, shape.workers)
    finally:
        if scraper is not None:
            scraper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scraper
        await producers.close(grace=None)
        await workers.close(grace=None)


def _show(r: int, side: Side, m: Measured) -> None:
    print(
        f"round {r} {side.name:<12} {m.jobs:,} in {m.seconds:.2f} s = {m.jobs_per_s:,.0f}/s  "
        f"server {m.server_cpu_us_per_job:.1f} us/job  other {m.other_cpu_pct:.0f}%",
        file=sys.stderr,
        flush=True,
    )


async def compare(shape: Shape, on: Side, off: Side, rounds: int) -> None:
    for side in (on, off):
        await _ready(side.server)
        await _per_job(side, "bench.obs.warmup", shape.warmup_jobs, shape)
    for r in range(1, rounds + 1):
        for side in (on, off) if r % 2 else (off, on):
            m = await _per_job(side, f"bench.obs.{r}", shape.jobs, shape)
            side.runs.append(m)
            _show(r, side, m)


async def _ready(server: ServerProcess) -> None:
    api = rpc.Dispatchd(rpc.channel(server.target))
    for _ in range(600):
        if await api.serving():
            return
        server.check_alive()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{server.name} not ready")


def summary(on: Side, off: Side) -> dict[str, float]:
    def med(side: Side, attr: str) -> float:
        return median([getattr(m, attr) for m in side.runs])

    out = {}
    for side in (on, off):
        key = side.name.replace(" ", "_")
        out[f"{key}_jobs_per_s"] = med(side, "jobs_per_s")
        out[f"{key}_server_cpu_us_per_job"] = med(side, "server_cpu_us_per_job")
        out[f"{key}_other_cpu_pct"] = med(side, "other_cpu_pct")
    pairs = list(zip(on.runs, off.runs, strict=True))
    out["jobs_per_s_on_vs_off"] = median([a.jobs_per_s / b.jobs_per_s for a, b in pairs])
    out["cpu_per_job_on_vs_off"] = median(
        [a.server_cpu_us_per_job / b.server_cpu_us_per_job for a, b in pairs]
    )
    out["scrapes"] = float(on.scrapes)
    return out


def table(x: dict[str, float]) -> str:
    rows = [
        ("per-job, medians", "metrics on", "metrics off", "on / off (paired)"),
        (
            "jobs/s",
            f"{x['metrics_on_jobs_per_s']:,.0f}",
            f"{x['metrics_off_jobs_per_s']:,.0f}",
            f"{x['jobs_per_s_on_vs_off']:.3f}",
        ),
        (
            "server CPU us/job",
            f"{x['metrics_on_server_cpu_us_per_job']:.1f}",
            f"{x['metrics_off_server_cpu_us_per_job']:.1f}",
            f"{x['cpu_per_job_on_vs_off']:.3f}",
        ),
        (
            "other processes' CPU % (noise)",
            f"{x['metrics_on_other_cpu_pct']:.0f}",
            f"{x['metrics_off_other_cpu_pct']:.0f}",
            "",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}"
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"\n/metrics scraped {x['scrapes']:.0f} times during the metrics-on runs")
    return "\n".join(lines)


def run(shape: Shape, rounds: int, output: Path) -> None:
    """Starts both servers, compares, prints the table and writes the JSON to ``output``."""
    metrics_port = procs.free_port()
    servers = [
        procs.start_dispatchd(procs.free_port(), metrics_listen=f"127.0.0.1:{metrics_port}"),
        procs.start_dispatchd(procs.free_port(), metrics_listen="0"),
    ]
    on = Side("metrics on", servers[0], metrics_port)
    off = Side("metrics off", servers[1], 0)
    try:
        run_loop(compare(shape, on, off, rounds))
    finally:
        procs.stop_all(servers)
    x = summary(on, off)
    print(table(x))
    doc: dict[str, Any] = {k: round(v, 4) for k, v in x.items()}
    doc["runs"] = {side.name: [report.run_dict(m) for m in side.runs] for side in (on, off)}
    report.write_json(doc, output)
    print(f"\nwrote {output}")


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)
