"""A Python producer, a Node worker and a Python worker share one queue under one width.

The Node worker is the compiled TypeScript client (clients/node, built by `make node-build`)
running as its own process; the Python worker runs in a thread of the test. Each job's result
says who ran it and when (wall-clock seconds on both sides), so the width can be checked from
the results alone.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dispatchd_client import Client, JobState, NewJob, ReceivedJob, Worker

from ..polling import until
from .conftest import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
NODE_WORKER = ROOT / "clients" / "node" / "dist" / "test" / "interop-worker.js"
QUEUE = "interop"
WIDTH = 3
JOBS = 30
#: How long each job holds its slot: long enough that the two workers overlap.
HOLD_SECONDS = 0.05
TRACEPARENT = "00-{:032x}-00f067aa0ba902b7-01"


class NodeWorker:
    """The Node interop worker as a subprocess; its pipes are read on threads."""

    def __init__(self, target: str, concurrency: int) -> None:
        node = shutil.which("node")
        if node is None or not NODE_WORKER.exists():
            pytest.fail(
                f"needs node and {NODE_WORKER.relative_to(ROOT)}: run `make node-build` "
                "(installs Node.js and the client's npm dependencies, compiles the TypeScript)"
            )
        hold_ms = str(int(HOLD_SECONDS * 1000))
        self.proc = subprocess.Popen(
            [node, str(NODE_WORKER), target, QUEUE, str(concurrency), hold_ms],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ready = threading.Event()
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == "ready":
                self.ready.set()
        self.ready.set()  # ended: wait_ready reports it

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    @property
    def log(self) -> str:
        return "".join(self.stderr)

    def wait_ready(self, timeout: float = 20.0) -> None:
        if not self.ready.wait(timeout) or self.proc.poll() is not None:
            raise AssertionError(f"node worker did not connect:\n{self.log}")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM by pid (a graceful stop), then the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        for thread in self._threads:
            thread.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def _start_python_worker(target: str) -> threading.Thread:
    """A Python Worker with room for the whole width, in a thread; it exits on the drain."""
    worker = Worker(target, worker_id="python-interop", concurrency=WIDTH)

    @worker.handler(QUEUE)
    def run(job: ReceivedJob) -> str:
        start = time.time()
        time.sleep(HOLD_SECONDS)
        return json.dumps(
            {
                "worker": "python",
                "start": start,
                "end": time.time(),
                "traceparent": job.headers.get("traceparent"),
            }
        )

    thread = threading.Thread(target=asyncio.run, args=(worker.run_async(),), daemon=True)
    thread.start()
    return thread


def max_concurrency(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at once; an interval ending when another starts does not overlap."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:  # at equal times, -1 sorts first: ends before starts
        running += step
        peak = max(peak, running)
    return peak


def test_max_concurrency_counts_overlaps_only() -> None:
    assert max_concurrency([(0, 1), (1, 2), (2, 3)]) == 1
    assert max_concurrency([(0, 2), (1, 3), (1.5, 1.6), (2.5, 4)]) == 3


def _wait_workers(client: Client, count: int, within: float = 20.0) -> None:
    until(
        lambda: client.get_queue(QUEUE).worker_count >= count,
        within,
        f"{count} workers to connect to {QUEUE}",
    )


def test_node_and_python_workers_share_one_width(
    tmp_path: Path, start_server: type[ServerProcess], backend_flags: tuple[str, ...]
) -> None:
    """On both backends: a worker written against the proto cannot tell them apart."""
    server = start_server(tmp_path, *backend_flags)
    target = server.wait_ready()
    node = NodeWorker(target, concurrency=WIDTH)
    try:
        with Client(target) as client:
            client.update_queue(QUEUE, width=WIDTH, create=True)
            node.wait_ready()
            python_thread = _start_python_worker(target)
            _wait_workers(client, 2)

            specs = [
                NewJob(QUEUE, f"job {i}", headers={"traceparent": TRACEPARENT.format(i + 1)})
                for i in range(JOBS)
            ]
            jobs = client.submit_batch(specs)
            runs = []
            leases = []
            for i, job in enumerate(jobs):
                done = client.wait(job.id, timeout=30)
                assert done.state is JobState.SUCCEEDED, (done, node.log)
                run = json.loads(done.result)
                assert run["traceparent"] == TRACEPARENT.format(i + 1)
                runs.append(run)
                assert done.dispatch_time is not None
                assert done.finish_time is not None
                leases.append((done.dispatch_time.timestamp(), done.finish_time.timestamp()))
            assert client.get_queue(QUEUE).underway_count == 0

        by_worker = {w: sum(r["worker"] == w for r in runs) for w in ("node", "python")}
        assert by_worker["node"] > 0, by_worker
        assert by_worker["python"] > 0, by_worker
        # Judged on the server's clock: a job holds its slot from dispatch to finish and
        # runs inside that interval. The workers' own start/end stamps come from two
        # processes' clocks (Node's performance.timeOrigin can be milliseconds off
        # time.time()), so they could show an overlap that never happened.
        peak = max_concurrency(leases)
        assert peak <= WIDTH, f"{peak} jobs held a lease at once under width {WIDTH}"
        assert peak == WIDTH, f"the width was never used in full ({peak}): the test proves nothing"

        assert node.stop() == 0, node.log
        assert "SIGTERM received" in node.log
    finally:
        node.kill()
    server.terminate()
    assert server.wait() == 0, server.log
    python_thread.join(10)
    assert not python_thread.is_alive(), "the Python worker did not stop on the server's drain"
