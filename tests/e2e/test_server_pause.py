"""A server that was not running cannot have seen heartbeats: stopped (SIGSTOP) for twice
a lease while its workers heartbeat on time, it resumes without expiring their leases,
and no job runs twice. On both backends (one Redis replica: nobody else reaps)."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from dispatchd_client import Client, JobState, NewJob, ReceivedJob, Worker
from tests.polling import until

from .conftest import ServerProcess

LEASE = 2.0
JOBS = 6


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_a_paused_server_gives_the_time_back_to_leases(
    tmp_path: Path, start_server: type[ServerProcess], backend: str, request: pytest.FixtureRequest
) -> None:
    extra = ["--default-lease", str(LEASE)]
    if backend == "redis":
        extra += ["--backend", "redis", "--redis-url", request.getfixturevalue("redis_url")]
    server = start_server(tmp_path / "data", *extra)
    target = server.wait_ready()
    runs: Counter[str] = Counter()
    all_running = threading.Event()
    release = threading.Event()
    loop = asyncio.new_event_loop()
    worker = Worker(target, concurrency=JOBS)

    @worker.handler("paused")
    def hold(job: ReceivedJob) -> bytes:
        runs[job.id] += 1
        if sum(runs.values()) >= JOBS:
            all_running.set()
        release.wait(30)
        return b"done"

    thread = threading.Thread(target=loop.run_until_complete, args=(worker.run_async(),))
    thread.start()
    try:
        with Client(target) as client:
            jobs = client.submit_batch([NewJob("paused", b"x") for _ in range(JOBS)])
            assert all_running.wait(20), "the jobs did not all start"
            server.proc.send_signal(signal.SIGSTOP)
            time.sleep(2 * LEASE)  # the fault itself: the server does not run for 2 leases
            server.proc.send_signal(signal.SIGCONT)
            # Before the server looks at a deadline it notices the stall and gives the
            # leases the time back; the heartbeats waiting in its sockets are read next.
            until(lambda: "did not run for" in server.log, 10, "the server to see its stall")
            release.set()
            done = [client.wait(j.id, timeout=20) for j in jobs]
        assert [(j.state, j.attempt) for j in done] == [(JobState.SUCCEEDED, 1)] * JOBS
        assert max(runs.values()) == 1, f"a job ran twice: {runs}"
    finally:
        release.set()
        asyncio.run_coroutine_threadsafe(worker.stop(force=True), loop).result(10)
        thread.join(10)
        loop.close()
        server.kill()
