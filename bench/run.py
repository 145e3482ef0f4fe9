"""`make bench`: dispatchd's throughput, dispatch latency and server CPU per job, measured
against a raw grpc.aio floor in the same command.

Method
------
Processes: this script is the orchestrating client (grpc.aio on uvloop). It starts dispatchd
(``dispatchd --listen 127.0.0.1:PORT --log-level warning``, with metrics on as by default,
on a free port), a second dispatchd on a fresh ``--data-dir`` (its default durability, the
SQLite journal; ``--no-durable`` skips it) and the baseline server (``bench/baseline.py``, a
bare grpc.aio echo on uvloop) as children and stops them, by pid, when it ends. The client
path phases run their producers and workers in child processes of their own
(``python -m bench.drive``, on uvloop): one producer process with ``--producers`` coroutines
on one AsyncClient, one worker process with ``--workers`` Worker instances, so this process
only starts, watches and meters them. On a 2-core machine every process shares the cores.

Phases, each run ``--rounds`` times after a short warm-up; the report shows medians:

* baseline: ``--workers`` bidi streams to the echo server, each keeping up to ``--credit``
  32-byte messages unacked, one ack per message. Every jobs/s figure is also given as a
  ratio of its messages/s (``*_vs_baseline``).
* client path (bench/client_path.py, the issue's figures): ``per_job`` -- ``--producers``
  coroutines each await ``AsyncClient.submit()`` for one job at a time (coalescing on, as
  shipped) while ``--workers`` Workers of concurrency ``--concurrency`` run a no-op async
  handler and report each job as it finishes; end to end. ``burndown`` -- ``--burndown-jobs``
  jobs queued beforehand in a paused queue, the same workers connected, then the queue
  resumed. Each against the memory server on a wide queue, the journaled server
  (``durable_*``), and the memory server on a queue of width 8 with a rate too high to bind
  (``enforced_*``; ``enforced_*_cost`` = 1 - enforced / plain).
* unary per-job: ``--producers`` coroutines on raw stubs each await one unary Submit at a
  time; ``--workers`` raw Work streams with ``max_in_flight=--credit`` answer every job
  with its own WorkResults message (width ``--per-job-width``): the uncoalesced floor.
* batched: ``--batch-producers`` coroutines send SubmitBatch of ``--batch`` jobs;
  ``--batch-workers`` streams with ``--batch-credit`` credits answer each JobDeliveries
  message with one WorkResults covering all of its jobs.
* http push: dispatchd delivers ``--http-push-jobs`` jobs to a local HTTP endpoint through a
  queue's http_target (width ``--http-push-width``); see bench/http_push.py. 0 skips it.
* latency: the unary per-job setup fed open-loop at ``--latency-fraction`` of its median
  rate. Each payload carries perf_counter_ns() taken just before Submit is called; the
  worker subtracts it from its own reading when the delivery arrives (same process, same
  clock). p50/p99 are nearest-rank over every job of a run.
* policy per-job (in each throughput round, right after unary per-job): that phase on a
  queue with a rate too high to bind (``--policy-rate``), key_limits whose per-key
  in-flight bound cannot bind, and fairness keys round-robin over ``--policy-keys`` keys;
  ``policy_vs_core_ratio`` is its median jobs/s over the unary per-job median.
* keys (``--rounds`` times, see bench/keys.py): fairness -- ``--fairness-keys`` keys with
  Zipf-like backlogs (``--fairness-min-jobs`` for the smallest, 100x that for the
  largest), submitted largest first, burnt down by the batched workers; Jain's index of
  the dispatches per key while every key still had jobs. Then a burn-down of
  ``--keys-jobs`` jobs without fairness keys and one over ``--distinct-keys`` keys: server
  CPU per job of the burn-down alone (the submit is metered apart).
* durable batched (in each throughput round, see bench/durable.py): the batched phase
  against the journaled server right after the memory one; ``durable_*_vs_memory`` is the
  durable median over the memory median.
* startup (only with ``--startup-jobs N``, after everything else; ``--only-startup`` runs
  it alone, ``make bench-startup`` with N = 1,000,000; see bench/startup.py): a journal of
  N pending jobs written directly through the store, then the time until a server started
  on it answers its health check as SERVING, its RSS, and the journal's size per 1M jobs.
* rate (``--rate-rounds`` times, see bench/rate.py): a queue at 500/s, then one at
  5,000/s, with ``--rate-workers`` workers; jobs received over a ``--rate-seconds``
  window after the initial burst, against the set rate.

Throughput is jobs over the span from the first submit to the last ack. Server CPU is
utime+stime of the server process (/proc/PID/stat, all threads) from the first submit until
GetQueue shows nothing pending or underway (every ack applied), divided by jobs; stime's
share is shown as "% sys". Client CPU is this process's CPU over the same span (in the
client path phases, the children's own CPU, which they report). "other" is the CPU the rest
of the machine used meanwhile (/proc/stat busy time minus server and clients): when it is
high, another program competed for the cores and the wall-clock figures are low. Instructions
per job are a separate, slower target (``make bench-callgrind``, bench/callgrind.py).

Output: one line per run on stderr, then a table of medians against the targets on stdout
and one JSON object (medians, targets, every run, settings, environment) in
bench/results/latest.json. ``--quick`` divides every count by 10 and shortens the rate
windows to 3 s for a smoke run; ``--strict`` makes a missed target exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import NoReturn

if not __package__:  # run as `python bench/run.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# The client-path phases start child processes while grpc's threads run; with fork support
# on, grpc would only log, once per child, that it skips its fork handlers.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc

from bench import (
    baseline,
    client_path,
    http_push,
    keys,
    overhead,
    procs,
    rate,
    report,
    rpc,
    startup,
    workload,
)
from bench.keys import Fairness
from bench.measure import Measured, Meter, median, split
from bench.procs import ServerProcess
from bench.rate import RateRun
from bench.workload import Latency, Load, WorkerConfig
from dispatchd_client.v1 import dispatcher_pb2 as pb

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
OBS_RESULTS = RESULTS.with_name("observability.json")
STARTUP_RESULTS = RESULTS.with_name("startup.json")
READY_TIMEOUT = 30.0
QUICK_DIVISOR = 10
QUICK_RATE_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Every knob; each is also a flag (``per_job_jobs`` is ``--per-job-jobs``)."""

    rounds: int = 3
    per_job_jobs: int = 20_000
    burndown_jobs: int = 100_000
    producers: int = 50
    workers: int = 8
    concurrency: int = 16
    unary_per_job_jobs: int = 15_000
    credit: int = 16
    per_job_width: int = 1_000
    batched_jobs: int = 200_000
    batch: int = 1_000
    batch_producers: int = 4
    batch_workers: int = 4
    batch_credit: int = 1_000
    baseline_msgs: int = 60_000
    latency_jobs: int = 6_000
    latency_fraction: float = 0.5
    warmup_jobs: int = 2_000
    policy_keys: int = 100
    policy_rate: float = 1_000_000.0
    rate_seconds: float = 20.0
    rate_rounds: int = 1
    rate_workers: int = 8
    fairness_keys: int = 100
    fairness_min_jobs: int = 100
    keys_jobs: int = 50_000
    distinct_keys: int = 10_000
    http_push_jobs: int = 5_000
    http_push_width: int = 100

    def quick(self) -> Settings:
        """Every job count divided by QUICK_DIVISOR and rate windows of at most
        QUICK_RATE_SECONDS: a smoke run, not a measurement."""
        counts = {
            f.name: max(1, getattr(self, f.name) // QUICK_DIVISOR)
            for f in dataclasses.fields(self)
            if f.name.endswith(("_jobs", "_msgs"))
        }
        seconds = min(self.rate_seconds, QUICK_RATE_SECONDS)
        return dataclasses.replace(self, rate_seconds=seconds, **counts)


@dataclass(frozen=True, slots=True)
class Channels:
    producers: grpc.aio.Channel
    workers: grpc.aio.Channel
    baseline: grpc.aio.Channel
    durable_producers: grpc.aio.Channel | None = None
    durable_workers: grpc.aio.Channel | None = None

    async def close(self) -> None:
        for chan in (
            self.producers,
            self.workers,
            self.baseline,
            self.durable_producers,
            self.durable_workers,
        ):
            if chan is not None:
                await chan.close(grace=None)


async def _wait_ready(server: ServerProcess, probe: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not await probe():
        server.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{server.name} not ready after {READY_TIMEOUT:.0f} s")
        await asyncio.sleep(0.05)


def _show(
    round_no: int,
    phase: str,
    x: Measured | Latency | RateRun | Fairness,
    turn: client_path.Turnaround | None = None,
) -> None:
    if isinstance(x, RateRun):
        line = (
            f"set {x.set_per_s:,.0f}/s measured {x.measured_per_s:,.1f}/s over {x.window_s:g} s "
            f"= {x.ratio:.4f} (server count {x.server_ratio:.4f}; window from {x.warmup_s:.2f} s, "
            f"{x.saved_at_start:.0f} tokens saved)  {x.jobs_per_msg:.1f} jobs/msg  "
            f"CPU % of a core: server {x.server_cpu_pct:.0f} client {x.client_cpu_pct:.0f}  "
            f"unacked at end {x.underway_at_end:,}/{x.credit:,}  "
            f"other {x.other_cpu_pct:.0f}%"
        )
    elif isinstance(x, Fairness):
        line = (
            f"{x.keys} keys, backlogs {x.largest_backlog:,}..{x.smallest_backlog:,}: "
            f"Jain {x.jain:.4f} over {x.window_dispatches:,} dispatches, least-served "
            f"{x.min_share:.3f} of the mean  other {x.other_cpu_pct:.0f}%"
        )
    elif isinstance(x, Latency):
        line = (
            f"offered {x.offered_per_s:,.0f}/s achieved {x.achieved_per_s:,.0f}/s  "
            f"p50 {x.p50_ms:.2f} ms  p99 {x.p99_ms:.2f} ms  max {x.max_ms:.1f} ms  "
            f"other {x.other_cpu_pct:.0f}%"
        )
    else:
        line = (
            f"{x.jobs:,} in {x.seconds:.2f} s = {x.jobs_per_s:,.0f}/s  "
            f"server {x.server_cpu_us_per_job:.1f} us/job ({x.server_sys_pct:.0f}% sys)  "
            f"client {x.client_cpu_us_per_job:.1f} us/job  other {x.other_cpu_pct:.0f}%"
        )
        if turn is not None and turn.server_samples:
            line += (
                f"  turnaround p50/p99 server {turn.server_p50_us:.0f}/{turn.server_p99_us:.0f} us"
                f" worker {turn.worker_p50_us:.0f}/{turn.worker_p99_us:.0f} us"
            )
    print(f"round {round_no} {phase:<18} {line}", file=sys.stderr, flush=True)


class Bench:
    """The phases, against one running dispatchd and one running baseline server."""

    def __init__(
        self,
        s: Settings,
        servers: Servers,
        channels: Channels,
    ) -> None:
        self.s = s
        self.dispatchd = servers.dispatchd
        self.base = servers.baseline
        self.producer_api = rpc.Dispatchd(channels.producers)
        self.worker_api = rpc.Dispatchd(channels.workers)
        self.rig = workload.Rig(self.producer_api, self.worker_api, self.dispatchd.cpu_times)
        self.echo = baseline.echo_method(channels.baseline)
        self.per_job_workers = WorkerConfig(s.workers, s.credit, ack_each=True)
        self.journaled = servers.journaled
        self.durable_rig: workload.Rig | None = None
        if servers.journaled is not None:
            assert channels.durable_producers is not None
            assert channels.durable_workers is not None
            self.durable_rig = workload.Rig(
                rpc.Dispatchd(channels.durable_producers),
                rpc.Dispatchd(channels.durable_workers),
                servers.journaled.cpu_times,
            )

    async def ready(self) -> None:
        await _wait_ready(self.dispatchd, self.producer_api.serving)
        await _wait_ready(self.dispatchd, self.worker_api.serving)
        await _wait_ready(self.base, lambda: baseline.ping(self.echo))
        if self.journaled is not None and self.durable_rig is not None:
            await _wait_ready(self.journaled, self.durable_rig.producers.serving)
            await _wait_ready(self.journaled, self.durable_rig.workers.serving)

    async def baseline(self, msgs: int) -> Measured:
        meter = Meter(self.base.cpu_times)
        end = await baseline.run(self.echo, split(msgs, self.s.workers), self.s.credit)
        return meter.result(msgs, end)

    async def unary_per_job(self, queue: str, jobs: int) -> Measured:
        load = Load(queue, self.s.per_job_width, jobs, self.s.producers)
        return await workload.per_job(self.rig, load, self.per_job_workers)

    async def client(
        self, kind: str, queue: str, setup: str, shape: client_path.Shape
    ) -> client_path.Run:
        """One client-path run (bench/client_path.py): ``kind`` per_job or burndown,
        ``setup`` "" (memory), "durable_" or "enforced_"."""
        journaled = setup == "durable_"
        server = self.journaled if journaled else self.dispatchd
        rig = self.durable_rig if journaled else self.rig
        assert server is not None
        assert rig is not None
        run = client_path.per_job if kind == "per_job" else client_path.burndown
        return await run(rig.producers, server, queue, shape, setup == "enforced_")

    def client_shape(self, per_job_jobs: int, burndown_jobs: int) -> client_path.Shape:
        s = self.s
        return client_path.Shape(s.producers, s.workers, s.concurrency, per_job_jobs, burndown_jobs)

    def setups(self) -> tuple[str, ...]:
        return client_path.SETUPS if self.journaled is not None else ("", "enforced_")

    async def batched(self, queue: str, jobs: int, rig: workload.Rig | None = None) -> Measured:
        s = self.s
        load = Load(queue, s.batch_workers * s.batch_credit, jobs, s.batch_producers)
        workers = WorkerConfig(s.batch_workers, s.batch_credit, ack_each=False)
        return await workload.batched(rig or self.rig, load, workers, s.batch)

    async def latency(self, queue: str, rate: float) -> Latency:
        load = Load(queue, self.s.per_job_width, self.s.latency_jobs, 1)
        return await workload.latency(self.rig, load, self.per_job_workers, rate)

    async def policy_per_job(self, queue: str, jobs: int) -> Measured:
        """The per-job phase on a queue with a rate too high to bind, a per-key in-flight
        bound too high to bind, and fairness keys round-robin over ``policy_keys``."""
        s = self.s
        q = pb.Queue(
            name=queue,
            rate=pb.Rate(per_second=s.policy_rate),
            key_limits=pb.KeyLimits(max_in_flight_per_key=s.per_job_width),
        )
        await self.producer_api.configure(q, "rate", "key_limits")
        load = Load(queue, s.per_job_width, jobs, s.producers)
        return await workload.per_job(self.rig, load, self.per_job_workers, s.policy_keys)

    async def warm_up(self) -> None:
        n = self.s.warmup_jobs
        await self.baseline(n)
        await self.unary_per_job("bench.warmup", n)
        await self.policy_per_job("bench.warmup-policy", n)
        await self.batched("bench.warmup-batched", n * 5)
        warm = self.client_shape(n, n)
        for setup in self.setups():
            await self.client("per_job", f"bench.warmup-{setup}client", setup, warm)
        if self.durable_rig is not None:
            await self.batched("bench.warmup-batched", n * 5, self.durable_rig)

    async def throughput_round(self, r: int, runs: report.Runs) -> None:
        s = self.s
        m = await self.baseline(s.baseline_msgs)
        runs.baseline.append(m)
        _show(r, "baseline", m)
        shape = self.client_shape(s.per_job_jobs, s.burndown_jobs)
        for kind in client_path.KINDS:
            for setup in self.setups():
                run = await self.client(kind, f"bench.{setup}{kind}.{r}", setup, shape)
                runs.client.add(f"{setup}{kind}", run)
                _show(r, f"{setup}{kind}".replace("_", " "), run.measured, run.turnaround)
        m = await self.unary_per_job(f"bench.unary-per-job.{r}", s.unary_per_job_jobs)
        runs.unary_per_job.append(m)
        _show(r, "unary per-job", m)
        m = await self.policy_per_job(f"bench.policy-per-job.{r}", s.unary_per_job_jobs)
        runs.policies.policy_per_job.append(m)
        _show(r, "policy per-job", m)
        m = await self.batched(f"bench.batched.{r}", s.batched_jobs)
        runs.batched.append(m)
        _show(r, "batched", m)
        if self.durable_rig is not None:
            m = await self.batched(f"bench.durable-batched.{r}", s.batched_jobs, self.durable_rig)
            runs.durable.batched.append(m)
            _show(r, "durable batch", m)

    async def keys_round(self, r: int, runs: report.Runs) -> None:
        """Fairness among skewed backlogs, then a burn-down with and without many keys."""
        s, p = self.s, runs.policies
        burn = WorkerConfig(s.batch_workers, s.batch_credit, ack_each=False)
        # Width = credit = one slot per key per stream: a pass hands out a few rounds.
        fair = WorkerConfig(s.batch_workers, s.fairness_keys, ack_each=False)
        f = await keys.fairness(
            self.rig, f"bench.fairness.{r}", s.fairness_keys, s.fairness_min_jobs, fair
        )
        p.fairness.append(f)
        _show(r, "fairness", f)
        for n, submits, burndowns in (
            (0, p.no_keys_submit, p.no_keys_burndown),
            (s.distinct_keys, p.keys_submit, p.keys_burndown),
        ):
            submit, m = await keys.key_cost(self.rig, f"bench.keys-{n}.{r}", s.keys_jobs, n, burn)
            submits.append(submit)
            burndowns.append(m)
            _show(r, f"{n} keys", m)

    async def rate_round(self, r: int, runs: report.Runs) -> None:
        s = self.s
        for per_second in rate.RATES:
            workers = rate.workers_for(per_second, s.rate_workers)
            queue = f"bench.rate-{per_second:g}.{r}"
            x = await rate.rate_accuracy(self.rig, queue, per_second, s.rate_seconds, workers)
            runs.policies.rate.append(x)
            _show(r, f"rate {per_second:g}/s", x)

    async def run(self) -> report.Runs:
        runs = report.Runs()
        for r in range(1, self.s.rounds + 1):
            await self.throughput_round(r, runs)
        offered = self.s.latency_fraction * median([m.jobs_per_s for m in runs.unary_per_job])
        for r in range(1, self.s.rounds + 1):
            x = await self.latency(f"bench.latency.{r}", offered)
            runs.latency.append(x)
            _show(r, "latency", x)
        for r in range(1, self.s.rounds + 1):
            await self.keys_round(r, runs)
        for r in range(1, self.s.rate_rounds + 1):
            await self.rate_round(r, runs)
        if self.s.http_push_jobs > 0:
            runs.http_push = await http_push.rounds(
                self.producer_api,
                self.dispatchd.cpu_times,
                self.s.http_push_jobs,
                self.s.http_push_width,
                self.s.rounds,
                _show,
            )
        return runs


@dataclass(frozen=True, slots=True)
class Servers:
    """The servers under test: memory dispatchd, the echo baseline, and the journaled
    dispatchd of the durable group (None with --no-durable)."""

    dispatchd: ServerProcess
    baseline: ServerProcess
    journaled: ServerProcess | None


async def measure(s: Settings, servers: Servers) -> report.Runs:
    dispatchd, journaled = servers.dispatchd, servers.journaled
    channels = Channels(
        rpc.channel(dispatchd.target),
        rpc.channel(dispatchd.target),
        rpc.channel(servers.baseline.target),
        rpc.channel(journaled.target) if journaled is not None else None,
        rpc.channel(journaled.target) if journaled is not None else None,
    )
    try:
        bench = Bench(s, servers, channels)
        await bench.ready()
        await bench.warm_up()
        return await bench.run()
    finally:
        await channels.close()


def _run_loop(s: Settings, servers: Servers) -> report.Runs:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(measure(s, servers))
    runs: report.Runs = uvloop.run(measure(s, servers))
    return runs


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    for f in dataclasses.fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        p.add_argument(flag, type=type(f.default), default=f.default, help="default: %(default)s")
    p.add_argument("--quick", action="store_true", help="job counts / 10: a smoke run")
    p.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument(
        "--observability-cost",
        action="store_true",
        help="only compare the per-job phase with metrics on and off (bench/overhead.py); "
        f"JSON to {OBS_RESULTS.name} unless --output",
    )
    p.add_argument(
        "--no-durable",
        action="store_true",
        help="skip the durable group (per-job and batched against a journaled server)",
    )
    p.add_argument(
        "--startup-jobs",
        type=int,
        default=0,
        help="also measure start-up on a journal of this many pending jobs (bench/startup.py;"
        " 1000000 for the issue's figure, about a minute); default: %(default)s, skipped",
    )
    p.add_argument(
        "--only-startup",
        action="store_true",
        help="run only the start-up phase (needs --startup-jobs); JSON to "
        f"{STARTUP_RESULTS.name} unless --output",
    )
    ns = p.parse_args(argv)
    if ns.only_startup and ns.startup_jobs <= 0:
        p.error("--only-startup needs --startup-jobs N")
    s = Settings(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(Settings)})
    return (s.quick() if ns.quick else s), ns


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops the servers


def _run_servers(s: Settings, durable: bool) -> report.Runs:
    """Starts the servers (the journaled one on a fresh temporary data dir), measures,
    stops them by pid and removes the data dir."""
    children: list[ServerProcess] = []
    os.environ.setdefault(client_path.PROBE_ENV, "1")  # the servers' slot turnaround probe
    data_dir = Path(tempfile.mkdtemp(prefix="dispatchd-bench-journal-")) if durable else None
    try:
        children.append(procs.start_dispatchd(procs.free_port()))
        children.append(procs.start_baseline(procs.free_port()))
        if data_dir is not None:
            fs = procs.filesystem_of(data_dir)
            print(f"durable group: journal in {data_dir} ({fs})", file=sys.stderr, flush=True)
            children.append(procs.start_dispatchd(procs.free_port(), data_dir=data_dir))
        journaled = children[2] if data_dir is not None else None
        return _run_loop(s, Servers(children[0], children[1], journaled))
    finally:
        procs.stop_all(children)
        if data_dir is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(data_dir)


def _startup(jobs: int) -> startup.Startup:
    x = startup.measure(jobs)
    startup.show(x)
    return x


def main(argv: Sequence[str] | None = None) -> int:
    s, ns = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if ns.observability_cost:
        shape = overhead.Shape(
            jobs=s.per_job_jobs,
            warmup_jobs=s.warmup_jobs,
            producers=s.producers,
            width=s.per_job_width,
            workers=WorkerConfig(s.workers, s.credit, ack_each=True),
        )
        output = OBS_RESULTS if ns.output == RESULTS else ns.output
        overhead.run(shape, s.rounds, output)
        return 0
    settings = {
        **dataclasses.asdict(s),
        "durable": not ns.no_durable,
        "startup_jobs": ns.startup_jobs,
    }
    if ns.only_startup:
        runs = report.Runs()
        runs.startup.append(_startup(ns.startup_jobs))
        summary = startup.summarize(runs.startup)
        output = STARTUP_RESULTS if ns.output == RESULTS else ns.output
        doc = report.document(summary, runs, settings)
        report.write_json(doc, output)
        print(report.table(summary))
        print(f"\nwrote {output}")
        return 1 if ns.strict and not doc["all_ok"] else 0
    runs = _run_servers(s, durable=not ns.no_durable)
    if ns.startup_jobs > 0:
        runs.startup.append(_startup(ns.startup_jobs))
    summary = report.summarize(runs)
    doc = report.document(summary, runs, settings)
    report.write_json(doc, ns.output)
    print(report.table(summary))
    print(f"\nwrote {ns.output}")
    return 1 if ns.strict and not doc["all_ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
