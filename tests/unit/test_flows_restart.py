"""Workflows survive a restart of the embedded backend: through the journal (closed without
a snapshot, as after a crash once the commit is in) and through the drain snapshot with
journaling off. A WAITING child still waits for its parent, then runs; an open batch keeps
its counts and fires its callback once after the restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatchd.backend import WorkerSpec, WorkResult
from dispatchd.embedded.backend import EmbeddedBackend
from dispatchd.embedded.storage import StorageConfig
from dispatchd.engine import EngineLimits, JobState, NewJob
from tests.conformance.harness import FakeClock, RecordingOutbox


async def _open(data_dir: Path, journaled: bool, clock: FakeClock) -> EmbeddedBackend:
    storage = StorageConfig(data_dir=data_dir, journaled=journaled)
    backend = EmbeddedBackend(EngineLimits(), clock, storage, timers=False)
    await backend.start()
    return backend


@pytest.mark.parametrize("journaled", [True, False], ids=["journal", "snapshot"])
async def test_waiting_children_and_batches_survive_a_restart(
    tmp_path: Path, journaled: bool
) -> None:
    clock = FakeClock()
    first = await _open(tmp_path, journaled, clock)
    await first.create_batch("q", "b", "kept", None, NewJob("q", payload=b"callback"))
    [(parent, _)] = await first.submit([NewJob("q", batch_id="b")])
    [(child, _)] = await first.submit([NewJob("q", batch_id="b")])
    [(grandchild, _)] = await first.submit([NewJob("q", batch_id="b", parent_ids=(child.id,))])
    await first.close_batch("q", "b")
    assert grandchild.state is JobState.WAITING
    if journaled:
        await first.close()  # the journal has everything acknowledged; no snapshot
    else:
        await first.begin_drain(0.0)
        await first.finish_drain()

    second = await _open(tmp_path, journaled, clock)
    try:
        assert (await second.get_job(grandchild.id)).state is JobState.WAITING
        view = await second.get_batch("q", "b")
        assert (view.total, view.active, view.closed, view.description) == (3, 3, True, "kept")
        outbox = RecordingOutbox()
        worker = await second.connect(WorkerSpec("w", ["q"], 10), outbox)
        for _ in range(3):  # parent and child, then the released grandchild
            await second.settle()
            held = [ls for ls in outbox.delivered if ls.lease_id in worker.leases]
            await second.results(worker, [WorkResult(ls.job.id, ls.lease_id, b"ok") for ls in held])
        await second.settle()
        done = await second.get_batch("q", "b")
        assert done.complete
        assert done.succeeded == 3
        callback = await second.get_job(done.on_complete_job_id)
        assert callback.headers["dispatchd-batch-succeeded"] == "3"
        assert (await second.get_job(grandchild.id)).state is JobState.SUCCEEDED
        assert (await second.get_job(parent.id)).state is JobState.SUCCEEDED
    finally:
        await second.close()
