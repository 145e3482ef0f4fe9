"""A drain always ends, even when its snapshot cannot be written (a full disk, a broken
data dir): the failure is logged, the journal stays the truth, the process exits non-zero
within the grace, and the next start recovers every job from the journal.

The snapshot's temp file is squatted by a directory of that name, so opening it fails
whatever the process may do (root included, as in CI), while the journal beside it stays
writable."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from dispatchd.store.snapshot import SNAPSHOT_NAME
from dispatchd_client import Client, JobState, ReceivedJob, Worker

from .conftest import ServerProcess

GRACE = 1.0
#: What a drain may take beyond its grace: closing the listeners, the journal, the process.
EXIT_SLACK = 10.0


def _squat_snapshot(data_dir: Path) -> None:
    (data_dir / (SNAPSHOT_NAME + ".tmp")).mkdir(parents=True)


def test_a_drain_whose_snapshot_fails_exits_non_zero_and_the_journal_keeps_every_job(
    tmp_path: Path, start_server: type[ServerProcess]
) -> None:
    _squat_snapshot(tmp_path)
    first = start_server(tmp_path, "--drain-grace", str(GRACE))
    target = first.wait_ready()
    with Client(target) as client:
        jobs = [client.submit("drain", f"job {i}".encode()).id for i in range(20)]
    began = time.monotonic()
    first.terminate()
    code = first.wait(GRACE + EXIT_SLACK)
    assert time.monotonic() - began < GRACE + EXIT_SLACK
    assert code != 0, first.log
    assert "snapshot" in first.log
    assert "snapshot.pb.tmp" in first.log, first.log  # says what failed, and where
    assert "the journal keeps" in first.log, first.log

    (tmp_path / (SNAPSHOT_NAME + ".tmp")).rmdir()
    second = start_server(tmp_path)
    with Client(second.wait_ready()) as client:
        for job_id in jobs:
            assert client.get(job_id).state is JobState.PENDING
        assert client.get_queue("drain").pending_count == len(jobs)
    assert "recovered 20 jobs" in second.log
    second.terminate()
    assert second.wait() == 0, second.log


def test_without_a_journal_a_failed_snapshot_says_the_jobs_are_lost(
    tmp_path: Path, start_server: type[ServerProcess]
) -> None:
    _squat_snapshot(tmp_path)
    server = start_server(tmp_path, "--drain-grace", str(GRACE), "--durability", "none")
    with Client(server.wait_ready()) as client:
        for i in range(3):
            client.submit("drain", f"job {i}".encode())
    server.terminate()
    assert server.wait(GRACE + EXIT_SLACK) != 0, server.log
    assert "3 unfinished jobs are lost" in server.log, server.log


def test_a_second_sigterm_ends_a_drain_that_waits_for_its_grace(
    tmp_path: Path, start_server: type[ServerProcess]
) -> None:
    """A drain waiting out a long grace for a job a worker holds: the second SIGTERM ends
    the process at once (non-zero), and the journal has every job, the held one pending."""
    server = start_server(tmp_path, "--drain-grace", "120")
    target = server.wait_ready()
    holding = threading.Event()
    release = threading.Event()
    worker = Worker(target, concurrency=1, reconnect_max_backoff=0.2)

    @worker.handler("held")
    def hold(job: ReceivedJob) -> bytes:
        holding.set()
        release.wait(60)
        return b"late"

    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(worker.run_async(),), daemon=True
    )
    thread.start()
    try:
        with Client(target) as client:
            held = client.submit("held", b"hold").id
            assert holding.wait(10)
            waiting = client.submit("waiting", b"w").id
        server.terminate()
        _until_logged(server, "draining: 1 jobs underway")
        began = time.monotonic()
        server.terminate()
        assert server.wait(EXIT_SLACK) != 0, server.log
        assert time.monotonic() - began < EXIT_SLACK
        assert "second stop signal" in server.log
    finally:
        release.set()
        if thread.is_alive():  # a Worker told to drain ends on its own when the server goes
            asyncio.run_coroutine_threadsafe(worker.stop(force=True), loop).result(10)
        thread.join(10)
        loop.close()
    again = start_server(tmp_path)
    with Client(again.wait_ready()) as client:
        assert client.get(held).state is JobState.PENDING
        assert client.get(waiting).state is JobState.PENDING


def _until_logged(server: ServerProcess, text: str) -> None:
    deadline = time.monotonic() + 10
    while text not in server.log:
        assert time.monotonic() < deadline, f"never logged {text!r}:\n{server.log}"
        threading.Event().wait(0.01)  # a poll interval, not a wait for state
