"""``python bench/run.py --startup-jobs 1000000`` (``make bench-startup``): how long dispatchd
takes to start on a journal of N pending jobs, and how big that journal is.

Method: this process writes a fresh journal under a temporary data dir directly through
``dispatchd.store.journal.SqliteJournal.write(Batch(new_jobs=...))``, ``WRITE_BATCH`` jobs
per transaction (each a real fsynced commit, as the server's writer makes them): N pending
jobs over ``QUEUES`` queues with ``PAYLOAD_BYTES``-byte payloads, ids from the engine's
own ``IdSource`` (ULIDs in submit order), each row's status a ``Job`` with id, queue,
priority, state PENDING and submit time, as the server writes it without the payload. The
size is taken twice: journal file plus its ``-wal`` right after the last write (what a
crash would leave), and the file alone after a clean close (the WAL checkpointed into it).

Then the real server starts as a subprocess on that data dir (``--log-level info``); the
start-up time runs from just before the process is spawned until a gRPC health check
answers SERVING (the health status is set after the journal is loaded and the port is
bound), polled every ``POLL_S`` on a channel with short reconnect back-off. RSS is read
from /proc then; the server's own "recovered N jobs ... in X s" log line gives the load
time inside it. A GetQueue per queue checks every job came back pending. The server is
then killed with SIGKILL (a clean stop would first write a drain snapshot of every job,
which is not what is measured here) and the directory removed.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2

from bench import procs, rpc
from bench.measure import CPUS
from bench.procs import ServerProcess
from bench.targets import Target
from dispatchd.engine.ids import IdSource
from dispatchd.store.journal import Batch, SqliteJournal
from dispatchd_client.v1 import dispatcher_pb2 as pb

QUEUES = 10
PAYLOAD_BYTES = 100
WRITE_BATCH = 10_000
POLL_S = 0.05
START_TIMEOUT = 300.0
MILLION = 1_000_000

TARGETS = (Target("startup_1m_pending_s", "start-up, 1M journaled pending jobs, s", "<", 30),)
INFO_ROWS = (
    ("startup_jobs", "start-up: journaled pending jobs"),
    ("startup_s", "start-up: until serving, s"),
    ("journal_bytes_per_1m_jobs", "journal bytes per 1M jobs (file + -wal)"),
    ("journal_bytes_per_1m_jobs_checkpointed", "journal bytes per 1M jobs (checkpointed)"),
    ("startup_server_load_s", "start-up: journal load inside the server, s"),
    ("startup_rss_mb", "start-up: server RSS when serving, MB"),
    ("startup_peak_rss_mb", "start-up: server peak RSS, MB"),
    ("startup_write_s", "start-up: writing the journal, s"),
    ("startup_other_cpu_pct", "start-up: other CPU % (noise)"),
)

_RECOVERED = re.compile(r"recovered (\d+) jobs and \d+ queues from .* in ([0-9.]+) s")


@dataclass(frozen=True, slots=True)
class Startup:
    jobs: int
    write_s: float
    journal_bytes: int
    """journal.sqlite3 plus journal.sqlite3-wal right after the last commit."""
    checkpointed_bytes: int
    """journal.sqlite3 alone after a clean close (WAL checkpointed and truncated)."""
    startup_s: float
    server_load_s: float
    rss_bytes: int
    peak_rss_bytes: int
    other_cpu_pct: float
    filesystem: str


def write_journal(data_dir: Path, jobs: int, seed: int = 1) -> tuple[float, int, int]:
    """Writes ``jobs`` pending jobs; returns (seconds, bytes with -wal, bytes checkpointed)."""
    ids = IdSource(random.Random(seed))
    payload = random.Random(seed).randbytes(PAYLOAD_BYTES)
    queues = [f"bench.startup.{i}" for i in range(QUEUES)]
    journal = SqliteJournal(data_dir)
    journal.open()
    started = time.perf_counter()
    try:
        done = 0
        while done < jobs:
            now = time.time()
            stamp = Timestamp()
            stamp.FromNanoseconds(int(now * 1e9))
            rows: list[tuple[str, bytes, bytes]] = []
            for i in range(done, min(jobs, done + WRITE_BATCH)):
                job_id = ids.job_id(now)
                status = pb.Job(
                    id=job_id,
                    queue=queues[i % QUEUES],
                    priority=0,
                    state=pb.JOB_STATE_PENDING,
                    submit_time=stamp,
                ).SerializeToString()
                rows.append((job_id, payload, status))
            journal.write(Batch(new_jobs=rows))
            done += len(rows)
        seconds = time.perf_counter() - started
        with_wal = journal.size_bytes()
    finally:
        journal.close()
    return seconds, with_wal, journal.size_bytes()


def _fast_channel(target: str) -> grpc.aio.Channel:
    """Re-connects every ~50 ms while the server is still loading (the default back-off
    grows to seconds and would be counted as start-up time)."""
    options = [
        ("grpc.initial_reconnect_backoff_ms", 50),
        ("grpc.min_reconnect_backoff_ms", 50),
        ("grpc.max_reconnect_backoff_ms", 100),
    ]
    return grpc.aio.insecure_channel(target, options=options)


async def _until_serving(server: ServerProcess) -> None:
    chan = _fast_channel(server.target)
    try:
        api = rpc.Dispatchd(chan)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                req = health_pb2.HealthCheckRequest(service="")
                resp = await api.health(req, timeout=1.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            server.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"not serving after {START_TIMEOUT:.0f} s")
            await asyncio.sleep(POLL_S)
    finally:
        await chan.close(grace=None)


async def _pending_total(target: str) -> int:
    chan = rpc.channel(target)
    try:
        api = rpc.Dispatchd(chan)
        total = 0
        for i in range(QUEUES):
            req = pb.GetQueueRequest(name=f"bench.startup.{i}")
            total += (await api.get_queue(req, timeout=30.0)).queue.pending_count
        return total
    finally:
        await chan.close(grace=None)


def _server_load_s(server: ServerProcess) -> float:
    m = _RECOVERED.search(server.log_tail(limit=1 << 20))
    return float(m.group(2)) if m else float("nan")


def measure(jobs: int, parent: Path | None = None) -> Startup:
    """Writes the journal, starts the server on it, measures, cleans up."""
    data_dir = Path(tempfile.mkdtemp(prefix="dispatchd-bench-startup-", dir=parent))
    try:
        print(f"startup: writing {jobs:,} pending jobs to {data_dir}", file=sys.stderr, flush=True)
        write_s, with_wal, checkpointed = write_journal(data_dir, jobs)
        print(
            f"startup: wrote in {write_s:.1f} s: {with_wal / 1e6:.1f} MB with -wal, "
            f"{checkpointed / 1e6:.1f} MB checkpointed",
            file=sys.stderr,
            flush=True,
        )
        machine0 = procs.machine_busy_seconds()
        started = time.perf_counter()
        server = procs.start_dispatchd(procs.free_port(), data_dir=data_dir, log_level="info")
        try:
            asyncio.run(_until_serving(server))
            startup_s = time.perf_counter() - started
            rss, peak = procs.rss_bytes(server.pid)
            user, sys_ = server.cpu_times()
            other = procs.machine_busy_seconds() - machine0 - user - sys_
            pending = asyncio.run(_pending_total(server.target))
            load_s = _server_load_s(server)
        finally:
            server.proc.kill()  # by pid; this process started it
            server.proc.wait(10)
            server.log.close()
        if pending != jobs:
            raise RuntimeError(f"the server came back with {pending:,} pending, not {jobs:,}")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return Startup(
        jobs=jobs,
        write_s=write_s,
        journal_bytes=with_wal,
        checkpointed_bytes=checkpointed,
        startup_s=startup_s,
        server_load_s=load_s,
        rss_bytes=rss,
        peak_rss_bytes=peak,
        other_cpu_pct=max(0.0, other) / (startup_s * CPUS) * 100,
        filesystem=procs.filesystem_of(data_dir.parent),
    )


def show(x: Startup) -> None:
    print(
        f"startup: {x.jobs:,} pending jobs serving after {x.startup_s:.2f} s (journal load "
        f"inside the server {x.server_load_s:.2f} s)  RSS {x.rss_bytes / 2**20:,.0f} MB "
        f"(peak {x.peak_rss_bytes / 2**20:,.0f} MB)  journal {x.journal_bytes / 1e6:.1f} MB "
        f"on {x.filesystem}  other {x.other_cpu_pct:.0f}%",
        file=sys.stderr,
        flush=True,
    )


def summarize(runs: list[Startup]) -> dict[str, float]:
    """The figures; sizes scaled to 1M jobs. The start-up target applies to a run of at
    least 1M jobs only (fixed costs make a linear scale-up of a small run meaningless).
    Empty when the phase did not run."""
    if not runs:
        return {}
    x = runs[-1]
    scale = MILLION / x.jobs
    s = {
        "startup_jobs": float(x.jobs),
        "startup_s": x.startup_s,
        "journal_bytes_per_1m_jobs": x.journal_bytes * scale,
        "journal_bytes_per_1m_jobs_checkpointed": x.checkpointed_bytes * scale,
        "startup_server_load_s": x.server_load_s,
        "startup_rss_mb": x.rss_bytes / 2**20,
        "startup_peak_rss_mb": x.peak_rss_bytes / 2**20,
        "startup_write_s": x.write_s,
        "startup_other_cpu_pct": x.other_cpu_pct,
    }
    if x.jobs >= MILLION:
        s["startup_1m_pending_s"] = x.startup_s
    return s


def run_dict(x: Startup) -> dict[str, float | str]:
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(x).items()}
