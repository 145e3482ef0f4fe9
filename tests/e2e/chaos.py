"""The kill -9 checker: Jepsen's total-queue test for dispatchd with its journal.

``run_chaos`` starts ``python -m dispatchd`` as a subprocess on one fixed port with the
SQLite journal under ``data_dir`` and drives it only through the real Python client:

* **producers** (threads, one ``Client`` each) submit ``jobs`` jobs, each with a unique
  payload ``chaos:<seed>:<n>`` and idempotency key ``chaos-<seed>-<n>``, alone or in
  batches. A submit that returned is *acknowledged*: the job is durable and must run. A
  submit that raised is *unknown* (the job may or may not exist): the producer sends it
  again with the same key until it is acknowledged, so every job is counted once and
  ``duplicate=True`` answers show keys that survived the crash;
* **workers** (real :class:`~dispatchd_client.Worker` s, ``concurrency > 1``, each in its
  own thread and event loop) run a short handler that records, per delivery, the job id,
  lease id, attempt, the server's dispatch time and the worker-side start and end times.
  Most jobs take a few milliseconds; 1 % take 0.5-3 s, so that some are underway at a kill
  and still running after the restart. Workers reconnect by themselves, since every
  restart listens on the same port; a worker whose run ended (a drain ends it on purpose)
  is started again;
* the **killer** (seeded ``random.Random``) lets the system run, then SIGKILLs the server
  in one of four ways: at a random moment (``random``), a few milliseconds into a burst of
  batched submits (``write``), after SIGTERM while the drain runs (``drain``: SIGTERM,
  then SIGKILL before it exits; the table says whether it was still alive), or just after
  a ``PurgeJobs`` of a scratch queue put a large delete (the journal's compaction) into the
  next group commit (``compaction``). It restarts the server and goes on.

After the last kill the server is left alone until every job has finished, then drained
(SIGTERM, exit 0), started again and read back: "completed" means a worker finished the
job **and** the recovered server reports it SUCCEEDED with the worker's result. The report
counts:

* **lost**: acknowledged, never completed;
* **unexpected**: completed (by a worker, or SUCCEEDED on the server) but never submitted,
  or a server job for a key under an id the producer was never given (a broken
  idempotency key);
* **run again after a durable success**: once per cycle the checker lists every
  SUCCEEDED job and then sends a barrier Submit (one repeated idempotency key on a paused
  queue); its acknowledgement makes every change marked before it durable, so none of
  those jobs may be dispatched again, whatever crashes later;
* **duplicated**: a job id run to completion more than once. Each repeat must be explained
  by a lost lease: the server died between the two deliveries (a crash takes every lease
  with it, and a dispatch or a result is journaled only in the next group commit, so the
  job may come back with the same attempt number), or the server itself counted the lost
  attempt (a higher ``attempt`` on the later delivery: the lease expired or the stream
  died). Allowed: delivery is at least once. A repeat in the same server life with no
  higher attempt is a bug. Runs of jobs whose Submit was never acknowledged and which a
  crash erased (the engine may dispatch a job before its group commit) are listed as
  ``vanished``; they are fine when a kill followed their dispatch.

**Width across crashes.** The maximum concurrency per queue is computed from worker-side
start and end times, in two ways. *Raw* counts every run from start to end. But when the
server dies, a worker may still be running a job whose lease died with it; the restarted
server dispatches that job (or another one into the freed slot) again and the two runs
overlap, so the raw figure can exceed the width without anything being wrong: the width
bounds leases, and that lease is gone. The *lease-held* figure therefore counts a run only
while its lease can still exist: a run overlapping a server death is cut at that death,
and a run whose lease the server took back while it ran (a later delivery of the same job
dispatched before it ended, or its result rejected as stale) is left out. The pass
criterion applies to the lease-held figure; both are printed.

Pass: 0 lost, 0 unexpected, 0 duplicates without a lost lease, 0 vanished runs without a
crash, 0 runs after a durable success, lease-held concurrency never above the width, and
no checker error (a server that does not restart or drain cleanly, a worker that does not
come back, a producer that gives up, queue settings lost in a crash, a purged batch that
comes back only in part). Timing is not deterministic, so a seed fixes the kill plan and
the workload, not the exact interleaving; rerun a failing seed a few times with ``--keep``
to look at the data dir.

Usage: ``python -m tests.e2e.chaos --kills 20 --jobs 10000`` (``make chaos``);
``--server-arg=--durability=none`` shows what the checker reports without a journal.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict, deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from random import Random

import grpc

from dispatchd_client import Client, DispatchdError, Job, JobState, NewJob, ReceivedJob, Worker
from dispatchd_client import _requests as rq
from dispatchd_client.policies import JobOptions

SERVING = re.compile(r"dispatchd serving on [^:]+:(\d+)")
RECOVERED = re.compile(r"recovered (\d+) jobs")
DEFAULT_QUEUES: Mapping[str, int] = {"chaos-w1": 1, "chaos-w3": 3, "chaos-w8": 8}
SCRATCH_QUEUE = "chaos-scratch"
SCRATCH_WIDTH = 8
BARRIER_QUEUE = "chaos-barrier"
LEASE_SECONDS = 2.0
KILL_MODES = ("random", "write", "drain", "compaction")
#: Producers' channels reconnect quickly after a restart (gRPC's default starts at 1 s).
FAST_RECONNECT: tuple[tuple[str, int], ...] = (
    *rq.CHANNEL_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
)
MAX_SUBMIT_FAILURES = 500
#: Share of jobs that take SLOW_SECONDS instead of a few milliseconds.
SLOW = 0.01
SLOW_SECONDS = (0.5, 3.0)


# ---- records ------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """One delivery as a worker saw it (wall-clock seconds, the server's clock too)."""

    job_id: str
    n: int  # the producer's job number; -1 for scratch jobs, -2 for a foreign payload
    queue: str
    lease_id: str
    attempt: int
    dispatched: float  # the server's dispatch time of this delivery
    start: float
    end: float | None = None
    worker: int = 0


@dataclass(slots=True)
class Kill:
    number: int
    mode: str
    at: float = 0.0  # seconds since the start of the run
    in_flight: int = 0  # submit RPCs in flight when SIGKILL was sent
    mid_drain: bool | None = None  # drain mode: still draining when SIGKILL came
    restart_seconds: float = 0.0
    recovered: int = 0
    workers_back_seconds: float = 0.0
    purge: tuple[int, int] | None = None  # compaction mode: scratch jobs before, purged
    note: str = ""


@dataclass(slots=True)
class Duplicate:
    job_id: str
    n: int
    runs: int
    server_attempt: int
    lease_lost: bool
    why: str


@dataclass(slots=True)
class QueueStats:
    name: str
    width: int
    jobs: int
    runs: int
    max_raw: int
    max_held: int
    violation: str = ""

    @property
    def ok(self) -> bool:
        return self.max_held <= self.width


@dataclass
class Report:
    seed: int
    jobs: int
    kills: list[Kill] = field(default_factory=list)
    seconds: float = 0.0
    acknowledged: int = 0
    unknown_submits: int = 0  # submit calls that raised (each resent with its keys)
    duplicate_answers: int = 0  # jobs answered duplicate=True: the first submit had landed
    lost: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)  # unacknowledged, erased by a crash
    vanished_bugs: list[str] = field(default_factory=list)  # erased without a crash
    reruns: list[str] = field(default_factory=list)  # ran again after a durable success
    queues: list[QueueStats] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the checker could not do its job
    server_errors: list[str] = field(default_factory=list)  # ERROR lines in server logs
    #: Worker runs that raised instead of reconnecting; the checker ran them again, but a
    #: plain ``worker.run()`` would have exited.
    worker_failures: list[str] = field(default_factory=list)
    rejected_results: int = 0
    final_exit_codes: list[int] = field(default_factory=list)
    #: After the last kill: until every job was acknowledged, until every job finished,
    #: the clean drain, and the start that the verdict reads from.
    final_submit_seconds: float = 0.0
    final_run_seconds: float = 0.0
    final_drain_seconds: float = 0.0
    final_restart_seconds: float = 0.0

    @property
    def bad_duplicates(self) -> list[Duplicate]:
        return [d for d in self.duplicates if not d.lease_lost]

    @property
    def passed(self) -> bool:
        return not (
            self.lost
            or self.unexpected
            or self.bad_duplicates
            or self.vanished_bugs
            or self.reruns
            or self.errors
            or not all(q.ok for q in self.queues)
        )

    def table(self) -> str:
        return "\n".join(_table_lines(self))


def _table_lines(r: Report) -> Iterator[str]:
    modes = Counter(k.mode for k in r.kills)
    plan = ", ".join(f"{m} {modes[m]}" for m in KILL_MODES if modes[m])
    yield (
        f"dispatchd chaos check: seed {r.seed}, {r.jobs} jobs, {len(r.kills)} kills "
        f"({plan}), {r.seconds:.1f} s"
    )
    yield ""
    yield (
        " kill  mode        at (s)  submits in flight  mid-drain  restart (s)  recovered"
        "  workers back (s)"
    )
    for k in r.kills:
        drain = "-" if k.mid_drain is None else ("yes" if k.mid_drain else "no (exited)")
        yield (
            f" {k.number:>4}  {k.mode:<10} {k.at:>7.2f}  {k.in_flight:>17}  {drain:>9}  "
            f"{k.restart_seconds:>11.2f}  {k.recovered:>9}  {k.workers_back_seconds:>16.2f}"
            + (f"  {k.note}" if k.note else "")
        )
    yield ""
    yield (
        f" submits: {r.acknowledged} jobs acknowledged; {r.unknown_submits} submit calls raised "
        f"and were resent with the same idempotency keys, and {r.duplicate_answers} jobs in "
        "them came back duplicate=True (the first submit had landed)"
    )
    yield (
        f" after the last kill: all acknowledged in {r.final_submit_seconds:.1f} s, all "
        f"finished in {r.final_run_seconds:.1f} s; clean drain {r.final_drain_seconds:.2f} s "
        f"(exit codes {r.final_exit_codes}), restart {r.final_restart_seconds:.2f} s"
    )
    lost_lease = len(r.duplicates) - len(r.bad_duplicates)
    yield ""
    yield " check                                   count  pass"
    rows: list[tuple[str, int, bool]] = [
        ("lost (acknowledged, never completed)", len(r.lost), not r.lost),
        ("unexpected (completed, never submitted)", len(r.unexpected), not r.unexpected),
        ("duplicated, lease lost (allowed)", lost_lease, True),
        ("duplicated without a lost lease", len(r.bad_duplicates), not r.bad_duplicates),
        ("vanished unacknowledged, after a crash", len(r.vanished), True),
        ("vanished without a crash", len(r.vanished_bugs), not r.vanished_bugs),
        ("run again after a durable success", len(r.reruns), not r.reruns),
        ("stale results rejected by the server", r.rejected_results, True),
        ("worker runs that raised (restarted)", len(r.worker_failures), True),
        ("checker errors", len(r.errors), not r.errors),
    ]
    for name, count, ok in rows:
        yield f" {name:<39} {count:>5}  {'ok' if ok else 'FAIL'}"
    yield ""
    yield " queue          width   jobs   runs  max raw  max lease-held  pass"
    for q in r.queues:
        yield (
            f" {q.name:<14} {q.width:>5} {q.jobs:>6} {q.runs:>6} {q.max_raw:>8} "
            f"{q.max_held:>15}  {'ok' if q.ok else 'FAIL'}"
        )
    details = [
        *(f"lost: {x}" for x in r.lost),
        *(f"unexpected: {x}" for x in r.unexpected),
        *(f"duplicate without lost lease: {d.job_id} (n={d.n}): {d.why}" for d in r.bad_duplicates),
        *(f"vanished without a crash: {x}" for x in r.vanished_bugs),
        *(f"run again after a durable success: {x}" for x in r.reruns),
        *(f"width exceeded on {q.name}: {q.violation}" for q in r.queues if not q.ok),
        *(f"checker error: {x}" for x in r.errors),
        *(f"server log: {x}" for x in r.server_errors),
        *(f"worker run raised: {x}" for x in sorted(set(r.worker_failures))),
    ]
    if details:
        yield ""
        for line in details[:40]:
            yield " " + line
        if len(details) > 40:
            yield f" ... and {len(details) - 40} more"
    yield ""
    yield " PASS" if r.passed else " FAIL"


# ---- the server process ---------------------------------------------------------------


class StartFailed(RuntimeError):
    """The server did not come up (after a kill: a recovery failure)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """One ``python -m dispatchd`` on a fixed port; stderr is read on a thread (the last
    lines are kept for messages) so the pipe never fills."""

    def __init__(self, data_dir: Path, port: int, *extra: str) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dispatchd",
                "--listen",
                f"127.0.0.1:{port}",
                "--data-dir",
                str(data_dir),
                "--log-level",
                "info",
                "--metrics-listen",  # a free port: never the default 9464 another run holds
                "127.0.0.1:0",
                "--http-listen",  # the dashboard off: 8080 may be taken too
                "0",
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.tail: deque[str] = deque(maxlen=60)
        self.errors: list[str] = []
        self.recovered = 0
        self.drained = False
        self._ready = threading.Event()
        self._serving = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.tail.append(line)
            if " ERROR " in line or line.lstrip().startswith("Traceback"):
                self.errors.append(line.strip())
            if (m := RECOVERED.search(line)) is not None:
                self.recovered = int(m.group(1))
            if line.rstrip().endswith(": drained"):
                self.drained = True
            if SERVING.search(line):
                self._serving = True
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds from spawn to serving; raises with the log tail if it did not start."""
        if not self._ready.wait(timeout) or not self._serving:
            raise StartFailed("dispatchd did not start:\n" + "".join(self.tail))
        return time.monotonic() - self.started

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()
        return code

    def kill(self) -> None:
        """SIGKILL (if still running) and reap."""
        self.signal(signal.SIGKILL)
        self.wait(30)


# ---- workers --------------------------------------------------------------------------


class Recorder:
    """What workers saw, shared by every handler thread."""

    def __init__(self, seed: int, work_seconds: float, slow: Mapping[int, float]) -> None:
        self.prefix = f"chaos:{seed}:".encode()
        self.work_seconds = work_seconds
        self.slow = slow
        self.runs: list[Run] = []
        self._lock = threading.Lock()

    def handle(self, job: ReceivedJob, worker: int) -> bytes:
        start = time.time()
        dispatched = job.dispatch_time.timestamp() if job.dispatch_time is not None else start
        n = self.number(job.payload)
        run = Run(job.id, n, job.queue, job.lease_id, job.attempt, dispatched, start, None, worker)
        with self._lock:
            self.runs.append(run)
        time.sleep(self.slow.get(n, self.work_seconds))  # the job's work
        run.end = time.time()
        return b"done:" + job.payload

    def snapshot(self) -> list[Run]:
        with self._lock:
            return list(self.runs)

    def number(self, payload: bytes) -> int:
        if payload == b"scratch":
            return -1
        if not payload.startswith(self.prefix):
            return -2
        try:
            return int(payload[len(self.prefix) :])
        except ValueError:
            return -2


class WorkerThread:
    """A real ``Worker`` on its own loop and thread, run again whenever its run ends (a
    server drain ends a run on purpose; a refused hello raises) until ``stop``."""

    def __init__(
        self, index: int, target: str, queues: Sequence[str], concurrency: int, rec: Recorder
    ) -> None:
        self.index = index
        #: Runs that ended by raising instead of reconnecting (the thread runs it again).
        self.failures: list[str] = []
        self.runs = 0
        self.worker = Worker(
            target,
            worker_id=f"chaos-{index}",
            concurrency=concurrency,
            reconnect_max_backoff=0.2,
        )
        for queue in queues:
            self.worker.handler(queue)(lambda job: rec.handle(job, index))
        self._loop = asyncio.new_event_loop()
        self._stopping = threading.Event()
        self._stop_now = asyncio.Event()
        self._thread = threading.Thread(target=self._main, name=f"chaos-worker-{index}")
        self._thread.start()

    def _main(self) -> None:
        try:
            while not self._stopping.is_set():
                self._loop.run_until_complete(self._one_run())
                self._stopping.wait(0.1)  # backoff before running again, not a state wait
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
            self._loop.close()

    async def _one_run(self) -> None:
        self.runs += 1
        run = asyncio.create_task(self.worker.run_async())
        stop = asyncio.create_task(self._stop_now.wait())
        await asyncio.wait({run, stop}, return_when=asyncio.FIRST_COMPLETED)
        if stop.done():
            await self.worker.stop()
            done, _ = await asyncio.wait({run}, timeout=10)
            if not done:
                await self.worker.stop(force=True)
        else:
            stop.cancel()
            await asyncio.gather(stop, return_exceptions=True)
        try:
            await run
        except Exception as e:  # noqa: BLE001 - reported in the table; the run starts again
            self.failures.append(f"worker {self.index}: {type(e).__name__}: {_where(e)}")

    @property
    def connected(self) -> bool:
        return self.worker.connected

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(RuntimeError):  # the loop closed already
            self._loop.call_soon_threadsafe(self._stop_now.set)

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


class WorkerLog(logging.Handler):
    """Collects the results the server rejected as stale (their lease had ended), from
    the worker library's warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.rejected: set[tuple[str, str]] = set()

    def emit(self, record: logging.LogRecord) -> None:
        msg, args = record.msg, record.args
        stale = isinstance(msg, str) and msg.startswith("server rejected the result")
        if stale and isinstance(args, tuple) and len(args) >= 2:
            self.rejected.add((str(args[0]), str(args[1])))


# ---- producers ------------------------------------------------------------------------


class Ledger:
    """The producers' side: numbers handed out per cycle, every acknowledged id."""

    def __init__(self, total: int, queues: Sequence[str], weights: Sequence[int], seed: int):
        rng = Random(seed)
        self.total = total
        self.queue_of = rng.choices(list(queues), weights=list(weights), k=total)
        #: A few jobs run long enough to be underway at a kill and still running when the
        #: restarted server hands their slot (or the job itself) out again.
        self.slow = {n: rng.uniform(*SLOW_SECONDS) for n in range(total) if rng.random() < SLOW}
        self.acked: dict[int, str] = {}
        self.conflicts: list[str] = []  # one key, two ids: an idempotency bug
        self.unknown = 0
        self.duplicate_answers = 0
        self.in_flight = 0
        self.errors: list[str] = []
        self.burst = False
        self._next = 0
        self._base = 0
        self._ramp: tuple[float, int, float] = (0.0, 0, 0.0)
        self._cond = threading.Condition()

    def release(self, count: int, over: float = 0.0) -> None:
        """Lets producers take ``count`` more numbers, spread evenly over ``over`` seconds
        (what an earlier release had not let go yet is let go at once)."""
        with self._cond:
            self._base = self._available()
            self._ramp = (time.monotonic(), min(count, self.total - self._base), over)
            self._cond.notify_all()

    def release_all(self) -> None:
        self.release(self.total)

    def _available(self) -> int:
        start, count, over = self._ramp
        share = 1.0 if over <= 0 else min(1.0, (time.monotonic() - start) / over)
        return self._base + int(count * share)

    def take(self, want: int, stop: threading.Event) -> list[int]:
        with self._cond:
            while self._next >= self._available() and self._next < self.total:
                if stop.is_set():
                    return []
                self._cond.wait(0.01)  # the ramp's pace
            count = min(want, self._available() - self._next)
            taken = list(range(self._next, self._next + count))
            self._next += count
            return taken

    def record(self, n: int, job: Job) -> None:
        with self._cond:
            old = self.acked.setdefault(n, job.id)
            if old != job.id:
                self.conflicts.append(f"key of job {n}: acknowledged as {old} and as {job.id}")
            if job.duplicate:
                self.duplicate_answers += 1

    def rpc(self, delta: int) -> None:
        with self._cond:
            self.in_flight += delta

    def failed(self) -> None:
        with self._cond:
            self.unknown += 1

    @property
    def done(self) -> bool:
        with self._cond:
            return len(self.acked) == self.total


def _submit(client: Client, ledger: Ledger, seed: int, numbers: Sequence[int]) -> list[Job]:
    """One Submit for a single job, one SubmitBatch for more; the same key every time."""
    if len(numbers) == 1:
        n = numbers[0]
        payload = f"chaos:{seed}:{n}".encode()
        return [client.submit(ledger.queue_of[n], payload, idempotency_key=f"chaos-{seed}-{n}")]
    return client.submit_batch(
        NewJob(
            ledger.queue_of[n],
            f"chaos:{seed}:{n}".encode(),
            options=JobOptions(idempotency_key=f"chaos-{seed}-{n}"),
        )
        for n in numbers
    )


def producer(index: int, target: str, ledger: Ledger, seed: int, stop: threading.Event) -> None:
    rng = Random(seed * 1000 + index)
    channel = grpc.insecure_channel(target, options=FAST_RECONNECT)
    try:
        client = Client(channel=channel, timeout=10.0)
        while not stop.is_set():
            size = 100 if ledger.burst else (1 if rng.random() < 0.5 else rng.randint(2, 40))
            numbers = ledger.take(size, stop)
            if not numbers:
                return
            _until_acknowledged(client, ledger, seed, numbers, stop)
    except Exception as e:  # noqa: BLE001 - a checker failure is reported, not raised in a thread
        ledger.errors.append(f"producer {index}: {type(e).__name__}: {e}")
    finally:
        channel.close()


def _until_acknowledged(
    client: Client, ledger: Ledger, seed: int, numbers: Sequence[int], stop: threading.Event
) -> None:
    failures = 0
    while not stop.is_set():
        ledger.rpc(+1)
        try:
            jobs = _submit(client, ledger, seed, numbers)
        except DispatchdError as e:
            ledger.failed()
            failures += 1
            if failures >= MAX_SUBMIT_FAILURES:
                ledger.errors.append(f"gave up on jobs {numbers[0]}..{numbers[-1]}: {e}")
                return
            stop.wait(rq.backoff_delay(min(failures, 3), base=0.02))  # retry backoff
            continue
        finally:
            ledger.rpc(-1)
        for n, job in zip(numbers, jobs, strict=True):
            ledger.record(n, job)
        return


# ---- the run --------------------------------------------------------------------------


class Chaos:
    def __init__(
        self,
        data_dir: Path,
        kills: int,
        jobs: int,
        queues: Mapping[str, int],
        seed: int,
        workers: int,
        concurrency: int,
        producers: int,
        work_seconds: float,
        server_args: Sequence[str],
    ) -> None:
        self.data_dir = data_dir
        self.kill_count = kills
        self.jobs = jobs
        self.queues = dict(queues)
        self.seed = seed
        self.rng = Random(seed)
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.report = Report(seed=seed, jobs=jobs)
        self.ledger = Ledger(jobs, list(queues), list(queues.values()), seed)
        self.recorder = Recorder(seed, work_seconds, self.ledger.slow)
        self.worker_log = WorkerLog()
        self.deaths: list[float] = []  # wall-clock times a server was seen dead
        self.durable_at: dict[str, float] = {}  # job id -> when its success was durable
        self.t0 = time.time()
        self.server: ServerProcess | None = None
        self.servers: list[ServerProcess] = []
        self.workers: list[WorkerThread] = []
        self.n_workers = workers
        self.concurrency = concurrency
        self.n_producers = producers
        self.server_args = tuple(server_args)
        self.stop = threading.Event()
        self.producer_threads: list[threading.Thread] = []
        self.channel = grpc.insecure_channel(self.target, options=FAST_RECONNECT)
        self.client = Client(channel=self.channel, timeout=10.0, retry_unavailable=5)

    # -- process control

    def start_server(self) -> ServerProcess:
        server = ServerProcess(self.data_dir, self.port, *self.server_args)
        self.servers.append(server)
        self.server = server
        return server

    def _died(self, server: ServerProcess) -> None:
        self.deaths.append(time.time())
        self.report.server_errors.extend(server.errors[:5])

    def restart(self, kill: Kill) -> None:
        server = self.start_server()
        kill.restart_seconds = server.wait_ready()
        kill.recovered = server.recovered
        self._check_purge(kill)  # before workers run restored scratch jobs again
        kill.workers_back_seconds = self._wait_workers()
        self._check_queues(kill)

    def _wait_workers(self, timeout: float = 15.0) -> float:
        started = time.monotonic()
        deadline = started + timeout
        while not all(w.connected for w in self.workers):
            if time.monotonic() > deadline:
                self.report.errors.append(f"workers not connected {timeout:g} s after a restart")
                break
            self.stop.wait(0.02)  # poll interval
        return time.monotonic() - started

    def _check_queues(self, kill: Kill | None) -> None:
        """Queue settings must survive a crash (they are journaled with the next commit,
        and every acknowledged submit came after them)."""
        for name, width in self._all_queues().items():
            q = self.client.get_queue(name)
            if (q.width, q.lease_duration) != (width, LEASE_SECONDS):
                where = f"after kill {kill.number}" if kill else "at start"
                self.report.errors.append(
                    f"queue {name} {where}: width {q.width}, lease {q.lease_duration} s"
                )
                self.client.update_queue(name, width=width, lease_duration=LEASE_SECONDS)

    def _all_queues(self) -> dict[str, int]:
        return {**self.queues, SCRATCH_QUEUE: SCRATCH_WIDTH}

    # -- phases

    def run(self) -> Report:
        try:
            self._setup()
            per_cycle = math.ceil(self.jobs / (self.kill_count + 1))
            for number, mode in enumerate(self._plan(), 1):
                kill = Kill(number, mode)
                self.report.kills.append(kill)
                self._cycle(kill, per_cycle)
                self.restart(kill)
            self.ledger.release_all()
            self._finish()
        except StartFailed as e:
            where = f"after kill {len(self.report.kills)}" if self.report.kills else "at first"
            self.report.errors.append(f"recovery failure {where}: {e}")
        finally:
            self._teardown()
        self.report.seconds = time.time() - self.t0
        return self.report

    def _plan(self) -> list[str]:
        """Every mode at least once (when there are enough kills), the rest at random."""
        base = list(KILL_MODES[: self.kill_count])
        extra = self.rng.choices(KILL_MODES, k=self.kill_count - len(base))
        plan = base + extra
        self.rng.shuffle(plan)
        return plan

    def _setup(self) -> None:
        logging.getLogger("dispatchd_client.worker").addHandler(self.worker_log)
        self.start_server().wait_ready()
        for name, width in self._all_queues().items():
            self.client.update_queue(name, width=width, lease_duration=LEASE_SECONDS, create=True)
        self.client.update_queue(BARRIER_QUEUE, paused=True, create=True)
        handled = [*self.queues, SCRATCH_QUEUE]
        self.workers = [
            WorkerThread(i, self.target, handled, self.concurrency, self.recorder)
            for i in range(self.n_workers)
        ]
        self._wait_workers()
        for i in range(self.n_producers):
            t = threading.Thread(
                target=producer,
                args=(i, self.target, self.ledger, self.seed, self.stop),
                name=f"chaos-producer-{i}",
            )
            t.start()
            self.producer_threads.append(t)

    def _cycle(self, kill: Kill, per_cycle: int) -> None:
        """Submits flow (spread over about a second, or all at once before a ``write``
        kill) while the kill waits for its random moment."""
        server = self.server
        assert server is not None
        rng = self.rng
        if kill.mode == "write":
            self._witness()
            self.ledger.burst = True
            self.ledger.release(per_cycle)
            self._wait_for_writes()
            self.stop.wait(rng.uniform(0.0, 0.01))  # a random moment into the burst
        else:
            self.ledger.release(per_cycle, over=rng.uniform(0.5, 1.5))
            self.stop.wait(rng.uniform(0.1, 0.75))
            self._witness()
            self.stop.wait(rng.uniform(0.1, 0.75))
        if kill.mode == "compaction":
            self._compaction(kill)
            self.stop.wait(rng.uniform(0.0, 0.01))
        if kill.mode == "drain":
            self._drain_then_kill(server, kill, rng.uniform(0.0, 0.15))
        kill.at = time.time() - self.t0
        kill.in_flight = self.ledger.in_flight
        server.kill()
        self._died(server)
        self.ledger.burst = False
        if kill.mode == "drain" and not kill.mid_drain:
            code = server.proc.returncode
            if code != 0 or not server.drained:
                self.report.errors.append(f"kill {kill.number}: drain ended with code {code}")

    def _witness(self) -> None:
        """Every job the server reports SUCCEEDED now is durably so once a Submit sent
        afterwards is acknowledged (a Submit's commit takes every change marked before
        it): none of them may run again, whatever crashes later. The barrier Submit
        repeats one idempotency key on a paused queue, so it adds nothing."""
        try:
            done = {
                job.id
                for name in self.queues
                for job in self.client.list_jobs(name, JobState.SUCCEEDED, page_size=1000)
            }
            self.client.submit(BARRIER_QUEUE, b"barrier", idempotency_key=f"barrier-{self.seed}")
        except DispatchdError:
            return  # the server went away: no witness this time
        now = time.time()
        for job_id in done:
            self.durable_at.setdefault(job_id, now)

    def _drain_then_kill(self, server: ServerProcess, kill: Kill, delay: float) -> None:
        """SIGTERM, then (at the caller's SIGKILL) ``delay`` seconds later if it still
        runs; an idle drain takes about 0.25 s here."""
        sent = time.monotonic()
        server.signal(signal.SIGTERM)
        while server.alive and time.monotonic() < sent + delay:
            self.stop.wait(0.002)  # poll interval
        kill.mid_drain = server.alive
        if kill.mid_drain:
            kill.note = f"SIGKILL {delay * 1000:.0f} ms after SIGTERM"
        else:
            kill.note = f"drained and exited within {(time.monotonic() - sent) * 1000:.0f} ms"

    def _wait_for_writes(self) -> None:
        deadline = time.monotonic() + 2
        while self.ledger.in_flight == 0 and time.monotonic() < deadline:
            self.stop.wait(0.001)  # poll interval

    def _compaction(self, kill: Kill) -> None:
        """Finished scratch jobs, then PurgeJobs: the deletes (and the incremental vacuum)
        go into the next group commit, which the kill right after lands in."""
        try:
            self.client.submit_batch([NewJob(SCRATCH_QUEUE, b"scratch") for _ in range(400)])
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                q = self.client.get_queue(SCRATCH_QUEUE)
                if q.pending_count + q.underway_count == 0:
                    break
                self.stop.wait(0.02)  # poll interval
            before = len(list(self.client.list_jobs(SCRATCH_QUEUE, page_size=1000)))
            purged = self.client.purge_jobs(SCRATCH_QUEUE, JobState.SUCCEEDED)
        except DispatchdError as e:
            kill.note = f"purge failed: {type(e).__name__}"
            return
        kill.purge = (before, purged)
        kill.note = f"purged {purged} of {before}"

    def _check_purge(self, kill: Kill) -> None:
        """One purge is one group commit: after the crash either every purged job is gone
        or every one is back, never some."""
        if kill.purge is None:
            return
        before, purged = kill.purge
        left = len(list(self.client.list_jobs(SCRATCH_QUEUE, page_size=1000)))
        kill.note += f"; {left} after restart"
        kill.note += " (delete committed)" if left == before - purged else ""
        kill.note += " (delete lost with the crash)" if left == before else ""
        if left not in (before, before - purged):
            self.report.errors.append(
                f"kill {kill.number}: a purge of {purged} of {before} scratch jobs came back "
                f"partly ({left} left): one group commit was not atomic"
            )

    def _finish(self) -> None:
        """No more kills: everything runs to the end; a clean drain and one more start,
        then the recovered server is read back."""
        r = self.report
        started = time.monotonic()
        deadline = started + 120 + self.jobs / 50
        while not self.ledger.done and time.monotonic() < deadline:
            if any(not t.is_alive() for t in self.producer_threads):
                break
            self.stop.wait(0.05)  # poll interval
        r.final_submit_seconds = time.monotonic() - started
        self._wait_idle(deadline)
        r.final_run_seconds = time.monotonic() - started
        self._witness()
        server = self.server
        assert server is not None
        drain = time.monotonic()
        server.signal(signal.SIGTERM)
        r.final_exit_codes.append(server.wait(60))
        r.final_drain_seconds = time.monotonic() - drain
        self._died(server)
        server = self.start_server()
        r.final_restart_seconds = server.wait_ready()
        self._wait_workers()
        self._wait_idle(time.monotonic() + 60)
        self._stop_workers()
        self._collect()
        server.signal(signal.SIGTERM)
        self.report.final_exit_codes.append(server.wait(60))
        if any(code != 0 for code in self.report.final_exit_codes):
            self.report.errors.append(f"drain exit codes {self.report.final_exit_codes}")

    def _wait_idle(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            queues = [self.client.get_queue(name) for name in self._all_queues()]
            if all(q.pending_count + q.underway_count + q.scheduled_count == 0 for q in queues):
                return
            self.stop.wait(0.05)  # poll interval
        self.report.errors.append("jobs still unfinished at the deadline")

    def _stop_workers(self) -> None:
        for w in self.workers:
            w.stop()
        for w in self.workers:
            if not w.join(30):
                self.report.errors.append(f"worker {w.index} did not stop")
            self.report.worker_failures.extend(w.failures)
        self.workers = []

    def _teardown(self) -> None:
        self.stop.set()
        self.ledger.release_all()
        for t in self.producer_threads:
            t.join(30)
        self._stop_workers()
        for server in self.servers:
            if server.alive:
                server.kill()
        self.channel.close()
        logging.getLogger("dispatchd_client.worker").removeHandler(self.worker_log)

    # -- the verdict

    def _collect(self) -> None:
        r = self.report
        r.errors.extend(self.ledger.errors)
        r.unexpected.extend(self.ledger.conflicts)
        r.acknowledged = len(self.ledger.acked)
        r.unknown_submits = self.ledger.unknown
        r.duplicate_answers = self.ledger.duplicate_answers
        r.rejected_results = len(self.worker_log.rejected)
        if r.acknowledged < self.jobs:
            r.errors.append(f"only {r.acknowledged} of {self.jobs} submits acknowledged")
        server_jobs: dict[str, Job] = {}
        for name in self.queues:
            for job in self.client.list_jobs(name, page_size=1000):
                server_jobs[job.id] = job
        runs = [x for x in self.recorder.snapshot() if x.n != -1]
        by_id: defaultdict[str, list[Run]] = defaultdict(list)
        for x in runs:
            by_id[x.job_id].append(x)
        self._lost(server_jobs, by_id)
        self._unexpected(server_jobs, runs)
        self._duplicates(server_jobs, by_id)
        self._vanished(server_jobs, by_id)
        self._reruns(runs)
        self._concurrency(by_id)

    def _reruns(self, runs: Sequence[Run]) -> None:
        for x in runs:
            at = self.durable_at.get(x.job_id)
            if at is not None and x.dispatched > at:
                self.report.reruns.append(
                    f"{x.job_id} (n={x.n}) dispatched at {x.dispatched - self.t0:.3f} s (attempt "
                    f"{x.attempt}), SUCCEEDED and durable since {at - self.t0:.3f} s"
                )

    def _lost(self, server_jobs: Mapping[str, Job], by_id: Mapping[str, list[Run]]) -> None:
        for n, job_id in sorted(self.ledger.acked.items()):
            job = server_jobs.get(job_id)
            if job is None:
                try:
                    job = self.client.get(job_id)
                except DispatchdError as e:
                    self.report.lost.append(f"job {n} ({job_id}): server says {type(e).__name__}")
                    continue
            finished = [x for x in by_id.get(job_id, []) if x.end is not None]
            expected = f"done:chaos:{self.seed}:{n}".encode()
            if job.state is not JobState.SUCCEEDED:
                self.report.lost.append(
                    f"job {n} ({job_id}): {job.state.name}, {len(finished)} runs"
                )
            elif not finished:
                self.report.lost.append(f"job {n} ({job_id}): SUCCEEDED but no worker ran it")
            elif job.result != expected:
                self.report.lost.append(f"job {n} ({job_id}): result {job.result[:40]!r}")

    def _unexpected(self, server_jobs: Mapping[str, Job], runs: Sequence[Run]) -> None:
        for x in runs:
            if not 0 <= x.n < self.jobs:
                self.report.unexpected.append(f"worker ran {x.job_id} with a foreign payload")
        acked_ids = set(self.ledger.acked.values())
        for job in server_jobs.values():
            if job.id not in acked_ids:
                self.report.unexpected.append(
                    f"server job {job.id} ({job.state.name}, payload {job.payload[:40]!r}) "
                    "was never acknowledged to a producer"
                )

    def _duplicates(self, server_jobs: Mapping[str, Job], by_id: Mapping[str, list[Run]]) -> None:
        for job_id, job_runs in by_id.items():
            finished = sorted(
                (x for x in job_runs if x.end is not None), key=lambda x: x.dispatched
            )
            if len(finished) < 2:
                continue
            reasons: list[str] = []
            bad: list[str] = []
            for a, b in pairwise(finished):
                if b.lease_id == a.lease_id:
                    bad.append(f"lease {a.lease_id} run twice")
                elif self._epoch(b.dispatched) > self._epoch(a.dispatched):
                    reasons.append("server crash")
                elif b.attempt > a.attempt:
                    reasons.append(f"attempt {a.attempt}->{b.attempt}")
                else:
                    bad.append(
                        f"attempt {a.attempt} (lease {a.lease_id}, dispatched "
                        f"{a.dispatched - self.t0:.3f}) then attempt {b.attempt} (lease "
                        f"{b.lease_id}, dispatched {b.dispatched - self.t0:.3f}) in one server life"
                    )
            server = server_jobs.get(job_id)
            self.report.duplicates.append(
                Duplicate(
                    job_id,
                    finished[0].n,
                    len(finished),
                    server.attempt if server else -1,
                    lease_lost=not bad,
                    why="; ".join(bad or reasons),
                )
            )

    def _vanished(self, server_jobs: Mapping[str, Job], by_id: Mapping[str, list[Run]]) -> None:
        acked_ids = set(self.ledger.acked.values())
        for job_id, job_runs in by_id.items():
            if job_id in acked_ids or job_id in server_jobs:
                continue
            last = max(x.dispatched for x in job_runs)
            what = f"{job_id} (n={job_runs[0].n}), last dispatched at {last - self.t0:.3f} s"
            # A kill after the dispatch erased it before its submit was committed.
            if self._epoch(last) < len(self.deaths):
                self.report.vanished.append(what)
            else:
                self.report.vanished_bugs.append(what)

    def _epoch(self, t: float) -> int:
        """How many server deaths came before wall-clock time ``t``."""
        return bisect.bisect_right(self.deaths, t)

    def _concurrency(self, by_id: Mapping[str, list[Run]]) -> None:
        lost = self._lost_leases(by_id)
        per_queue: defaultdict[str, list[Run]] = defaultdict(list)
        for job_runs in by_id.values():
            for x in job_runs:
                per_queue[x.queue].append(x)
        counts = Counter(self.ledger.queue_of)
        for name, width in self.queues.items():
            runs = per_queue.get(name, [])
            end_of = time.time()
            raw = [(x.start, x.end if x.end is not None else end_of, x) for x in runs]
            held = []
            for x in runs:
                if id(x) in lost:
                    continue
                end = x.end if x.end is not None else end_of
                i = self._epoch(x.dispatched)
                if i < len(self.deaths):
                    end = min(end, self.deaths[i])  # the lease died with its server
                held.append((x.start, end, x))
            max_raw, _ = _max_overlap(raw)
            max_held, at = _max_overlap(held)
            stats = QueueStats(name, width, counts[name], len(runs), max_raw, max_held)
            if max_held > width:
                stats.violation = ", ".join(
                    f"{x.job_id}/{x.lease_id} attempt {x.attempt} "
                    f"[{s - self.t0:.3f}, {e - self.t0:.3f}]"
                    for s, e, x in held
                    if s <= at < e
                )
            self.report.queues.append(stats)

    def _lost_leases(self, by_id: Mapping[str, list[Run]]) -> set[int]:
        """Runs whose lease the server took back while they ran (ids of Run objects)."""
        lost: set[int] = set()
        rejected = self.worker_log.rejected
        for job_runs in by_id.values():
            ordered = sorted(job_runs, key=lambda x: x.dispatched)
            for a, b in pairwise(ordered):
                # Re-dispatched in the same server life while still running: the lease
                # ended (expiry, or the stream died) at some unknown moment before.
                # Across a death the run is cut at the death instead.
                same_life = self._epoch(a.dispatched) == self._epoch(b.dispatched)
                if same_life and (a.end is None or b.dispatched < a.end):
                    lost.add(id(a))
            for x in job_runs:
                if (x.job_id, x.lease_id) in rejected:
                    lost.add(id(x))
        return lost


def _where(e: BaseException) -> str:
    """The error and the innermost frame outside asyncio/grpc that raised it."""
    tb = traceback.extract_tb((e.__cause__ or e).__traceback__)
    own = [f for f in tb if "dispatchd_client" in f.filename or "tests/e2e" in f.filename]
    at = f" (at {Path(own[-1].filename).name}:{own[-1].lineno} {own[-1].name})" if own else ""
    return f"{e}{at}".replace("\n", " ")


def _max_overlap(intervals: Sequence[tuple[float, float, Run]]) -> tuple[int, float]:
    """The most intervals open at once, and a moment when that many are."""
    events = sorted([(s, 1) for s, _, _ in intervals] + [(e, -1) for _, e, _ in intervals])
    best, at, now = 0, 0.0, 0
    for t, delta in events:  # ends sort before starts at the same instant
        now += delta
        if now > best:
            best, at = now, t
    return best, at


def run_chaos(
    data_dir: Path,
    kills: int = 20,
    jobs: int = 10_000,
    queues: Mapping[str, int] = DEFAULT_QUEUES,
    seed: int = 1,
    *,
    workers: int = 3,
    concurrency: int = 8,
    producers: int = 4,
    work_seconds: float = 0.003,
    server_args: Sequence[str] = (),
) -> Report:
    """Runs the checker against a fresh server on ``data_dir``; see the module docstring."""
    if kills < 0 or jobs < 1 or not queues:
        raise ValueError("need kills >= 0, jobs >= 1 and at least one queue")
    if {SCRATCH_QUEUE, BARRIER_QUEUE} & set(queues):
        raise ValueError(f"{SCRATCH_QUEUE} and {BARRIER_QUEUE} are the checker's own queues")
    return Chaos(
        data_dir,
        kills,
        jobs,
        queues,
        seed,
        workers,
        concurrency,
        producers,
        work_seconds,
        server_args,
    ).run()


def _parse_queues(text: str) -> dict[str, int]:
    queues: dict[str, int] = {}
    for part in text.split(","):
        name, _, width = part.partition("=")
        queues[name.strip()] = int(width)
    return queues


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.e2e.chaos", description=__doc__.split("\n")[0]
    )
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--queues",
        type=_parse_queues,
        default=dict(DEFAULT_QUEUES),
        help="name=width,... (default: %(default)s)",
    )
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--producers", type=int, default=4)
    p.add_argument("--data-dir", type=Path, help="default: a temporary directory")
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="an extra dispatchd flag, repeatable (--server-arg=--durability=none shows "
        "what the checker reports for a server without a journal)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    # The worker library's warnings (stale results, reconnects) are expected here; the
    # checker counts them through its own handler instead of printing them.
    logging.getLogger("dispatchd_client").propagate = False
    with contextlib.ExitStack() as stack:
        data_dir = args.data_dir
        if data_dir is None:
            tmp = tempfile.mkdtemp(prefix="dispatchd-chaos-")
            data_dir = Path(tmp)
            if not args.keep:
                stack.callback(_rmtree, data_dir)
        report = run_chaos(
            data_dir,
            args.kills,
            args.jobs,
            args.queues,
            args.seed,
            workers=args.workers,
            concurrency=args.concurrency,
            producers=args.producers,
            server_args=args.server_arg,
        )
        print(report.table())
        if args.keep or args.data_dir:
            print(f" data dir: {data_dir}")
    return 0 if report.passed else 1


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
