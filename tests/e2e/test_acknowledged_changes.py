"""Every change the server answered for survives a kill -9 sent right after the answer:
queue settings, pause and resume, cancel, reprioritize, retry, purge and delete are
durable before they are answered, as a Submit is (embedded backend: the journal)."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dispatchd_client import Client, JobState, NotFound, ReceivedJob, Worker

from .conftest import ServerProcess

#: How many times each change is made and checked (a lost change showed in 1 of 5 tries).
ROUNDS = 3


class FailingWorker:
    """A Worker in its own thread that fails every job of one queue."""

    def __init__(self, target: str, queue: str) -> None:
        self._loop = asyncio.new_event_loop()
        self.worker = Worker(target, concurrency=1)

        @self.worker.handler(queue)
        def handle(job: ReceivedJob) -> bytes:
            raise RuntimeError("this job fails")

        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self.worker.run_async(),), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.worker.stop(force=True), self._loop).result(10)
        self._thread.join(10)
        self._loop.close()


@dataclass(frozen=True)
class Made:
    """What the set-up left: jobs pending in the paused queue "ops", FAILED jobs."""

    jobs: list[str]
    failed: list[str]


Check = Callable[[Client], None]
#: Makes the change of round ``r`` through a client; returns its check after the restart.
Change = Callable[[Client, Made, int], Check]


def width(c: Client, made: Made, r: int) -> Check:
    c.update_queue("ops", width=10 + r)
    return lambda c: _equal(c.get_queue("ops").width, 10 + r)


def resume(c: Client, made: Made, r: int) -> Check:
    c.resume("failing")
    return lambda c: _equal(c.get_queue("failing").paused, False)


def pause(c: Client, made: Made, r: int) -> Check:
    c.pause("failing")
    return lambda c: _equal(c.get_queue("failing").paused, True)


def cancel(c: Client, made: Made, r: int) -> Check:
    job_id = made.jobs[4 * r]
    c.cancel(job_id)
    return lambda c: _equal(c.get(job_id).state, JobState.CANCELLED)


def reprioritize(c: Client, made: Made, r: int) -> Check:
    job_id = made.jobs[4 * r + 1]
    c.reprioritize(job_id, 50 + r)
    return lambda c: _equal(c.get(job_id).priority, 50 + r)


def retry(c: Client, made: Made, r: int) -> Check:
    job_id = made.failed[r]
    c.retry_job(job_id)
    return lambda c: _equal(c.get(job_id).state, JobState.PENDING)


def purge(c: Client, made: Made, r: int) -> Check:
    job_id = made.jobs[4 * r]  # cancelled by this round's cancel
    c.purge_jobs("ops", JobState.CANCELLED)
    return lambda c: _gone(lambda: c.get(job_id))


def delete(c: Client, made: Made, r: int) -> Check:
    c.delete_queue(f"empty-{r}")
    return lambda c: _gone(lambda: c.get_queue(f"empty-{r}"))


CHANGES: tuple[Change, ...] = (width, resume, pause, cancel, reprioritize, retry, purge, delete)


def _set_up(target: str) -> Made:
    failing = FailingWorker(target, "failing")
    try:
        with Client(target) as client:
            client.update_queue("ops", width=1, paused=True, create=True)
            jobs = [client.submit("ops", f"job {i}".encode()).id for i in range(4 * ROUNDS)]
            failed = [client.submit("failing", b"f").id for _ in range(ROUNDS)]
            for job_id in failed:
                assert client.wait(job_id, timeout=10).state is JobState.FAILED
    finally:
        failing.stop()
    with Client(target) as client:
        client.pause("failing")  # the retried jobs stay put
        for r in range(ROUNDS):
            client.update_queue(f"empty-{r}", width=1, create=True)
        client.submit("ops", b"flush")  # a Submit's answer: everything before is on disk
    return Made(jobs, failed)


# ROUNDS x CHANGES restarts of a real server: 12 s on a quiet machine, the 60 s default
# is too tight when it shares two cores with other test processes.
@pytest.mark.timeout(180)
def test_every_acknowledged_change_survives_kill_9_right_after_its_answer(
    tmp_path: Path, start_server: type[ServerProcess]
) -> None:
    server = start_server(tmp_path)
    made = _set_up(server.wait_ready())
    lost: list[str] = []
    for r in range(ROUNDS):
        for change in CHANGES:
            with Client(server.wait_ready()) as client:
                check = change(client, made, r)
                server.proc.send_signal(signal.SIGKILL)  # right after the answer
            assert server.wait() == -signal.SIGKILL
            server = start_server(tmp_path)
            with Client(server.wait_ready()) as client:
                try:
                    check(client)
                except AssertionError as e:
                    lost.append(f"round {r}, {change.__name__}: {e}")
    assert lost == []


def _equal(got: object, want: object) -> None:
    assert got == want, f"{got!r} after the restart, not {want!r}"


def _gone(read: Callable[[], object]) -> None:
    try:
        read()
    except NotFound:
        return
    raise AssertionError("still there after the restart")
