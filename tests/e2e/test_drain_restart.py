"""SIGTERM drains to a snapshot; the next start runs the same jobs in priority order."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from dispatchd.store.snapshot import SnapshotStore
from dispatchd_client import Client, JobState, ReceivedJob, Worker

from .conftest import ServerProcess

PRIORITIES = [3, 1, 5, 3, 0, 5, 2, 1, 4, 3]


def _expected_order(submitted: list[tuple[str, int]]) -> list[str]:
    indexed = sorted(enumerate(submitted), key=lambda x: (-x[1][1], x[0]))
    return [job_id for _, (job_id, _) in indexed]


def _run_one_at_a_time(target: str, queue: str, count: int) -> tuple[list[str], threading.Thread]:
    """Starts a Worker with concurrency 1 and waits until ``count`` jobs ran; returns their
    ids in run order and the worker's thread, which ends when the server drains."""
    order: list[str] = []
    done = threading.Event()
    worker = Worker(target, worker_id="e2e", concurrency=1)

    @worker.handler(queue)
    def record(job: ReceivedJob) -> bytes:
        order.append(job.id)
        if len(order) == count:
            done.set()
        return b"done"

    thread = threading.Thread(target=asyncio.run, args=(worker.run_async(),), daemon=True)
    thread.start()
    assert done.wait(30), f"only {len(order)} of {count} jobs ran"
    return order, thread


def test_sigterm_snapshots_and_restart_restores_in_priority_order(
    tmp_path: Path, start_server: type[ServerProcess]
) -> None:
    first = start_server(tmp_path)
    target = first.wait_ready()
    with Client(target) as client:
        client.update_queue("e2e", width=1, create=True)
        submitted = [
            (client.submit("e2e", f"job {i}".encode(), priority=p, headers={"n": str(i)}).id, p)
            for i, p in enumerate(PRIORITIES)
        ]
    first.terminate()
    assert first.wait() == 0, first.log

    snap = SnapshotStore(tmp_path).read_message()
    assert snap.format_version == 1
    assert sorted(j.id for j in snap.jobs) == sorted(job_id for job_id, _ in submitted)
    assert [q.name for q in snap.queues] == ["e2e"]
    assert snap.queues[0].width == 1

    second = start_server(tmp_path)
    target = second.wait_ready()
    assert (tmp_path / "snapshot.pb.restored").exists()
    with Client(target) as client:
        queue = client.get_queue("e2e")
        assert queue.width == 1
        assert queue.pending_count == len(PRIORITIES)
        restored = client.get(submitted[0][0])
        assert restored.headers == {"n": "0"}
        assert restored.priority == PRIORITIES[0]
        order, worker_thread = _run_one_at_a_time(target, "e2e", len(PRIORITIES))
        assert order == _expected_order(submitted)
        for job_id in order:
            assert client.wait(job_id, timeout=10).state is JobState.SUCCEEDED
    second.terminate()
    assert second.wait() == 0, second.log
    worker_thread.join(10)
    assert not worker_thread.is_alive(), "the worker did not stop on the server's drain"
