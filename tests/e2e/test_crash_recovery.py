"""kill -9 loses nothing that was acknowledged: the journal brings back pending jobs in
order, underway jobs as pending with their attempt counted, finished jobs with their
results, queue settings and idempotency keys."""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path

from dispatchd_client import Client, JobState, NewJob, ReceivedJob, RetryPolicy, Worker

from .conftest import ServerProcess


class HoldingWorker:
    """A Worker in its own thread that finishes "quick" jobs and holds the others."""

    def __init__(self, target: str, queue: str) -> None:
        self.release = threading.Event()
        self.held: list[str] = []
        self._loop = asyncio.new_event_loop()
        self.worker = Worker(target, concurrency=4, reconnect_max_backoff=0.2)

        @self.worker.handler(queue)
        def handle(job: ReceivedJob) -> bytes:
            if job.payload.startswith(b"hold"):
                self.held.append(job.id)
                self.release.wait(30)
            return b"done:" + job.payload

        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self.worker.run_async(),), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        asyncio.run_coroutine_threadsafe(self.worker.stop(force=True), self._loop).result(10)
        self._thread.join(10)
        self._loop.close()


def test_kill_9_recovers_from_the_journal(
    tmp_path: Path, start_server: type[ServerProcess]
) -> None:
    first = start_server(tmp_path)
    target = first.wait_ready()
    worker = HoldingWorker(target, "crash")
    try:
        with Client(target) as client:
            client.update_queue(
                "crash", width=2, retry_policy=RetryPolicy(max_attempts=4), create=True
            )
            done = [client.submit("crash", f"quick {i}".encode()) for i in range(5)]
            for job in done:
                assert client.wait(job.id, timeout=10).state is JobState.SUCCEEDED
            held = client.submit_batch([NewJob("crash", b"hold 1"), NewJob("crash", b"hold 2")])
            for job in held:
                _wait_for_state(client, job.id, JobState.UNDERWAY)
            # Acknowledged Submits are durable, and so is everything marked before them
            # (the two dispatches above).
            pending = [
                client.submit(
                    "crash", f"later {i}".encode(), priority=i % 2, idempotency_key=f"k{i}"
                )
                for i in range(10)
            ]
        first.proc.send_signal(signal.SIGKILL)
        assert first.wait() == -signal.SIGKILL
    finally:
        worker.stop()

    second = start_server(tmp_path)
    target = second.wait_ready()
    assert "recovered 17 jobs" in second.log
    with Client(target) as client:
        queue = client.get_queue("crash")
        assert (queue.width, queue.retry_policy) == (2, RetryPolicy(max_attempts=4))
        assert queue.pending_count == 12
        for i, job in enumerate(done):
            got = client.get(job.id)
            assert (got.state, got.result) == (JobState.SUCCEEDED, f"done:quick {i}".encode())
        for job in held:
            got = client.get(job.id)
            assert (got.state, got.attempt) == (JobState.PENDING, 1)
        listed = [j.id for j in client.list_jobs("crash", JobState.PENDING)]
        waiting = [*held, *pending]  # in submit order; held jobs keep their old place
        by_priority = sorted(enumerate(waiting), key=lambda p: (-p[1].priority, p[0]))
        assert listed == [j.id for _, j in by_priority]
        again = client.submit("crash", b"dup", idempotency_key="k3")
        assert (again.duplicate, again.id) == (True, pending[3].id)
    second.terminate()
    assert second.wait() == 0


def _wait_for_state(client: Client, job_id: str, state: JobState) -> None:
    """Polls with a deadline (WaitJob only waits for finished states)."""
    for _ in range(1000):
        if client.get(job_id).state is state:
            return
        threading.Event().wait(0.01)  # a poll interval, not a wait for state
    raise AssertionError(f"job {job_id} never reached {state.name}")
