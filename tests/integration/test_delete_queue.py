"""DeleteQueue through the client, on both backends: an empty queue goes with its settings
and finished jobs; one with work, slots or workers stays and the refusal says which."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd_client import (
    AsyncClient,
    FailedPrecondition,
    JobState,
    NotFound,
    ReceivedJob,
    ResourceExhausted,
)
from tests.inproc import serving

from .conftest import StartWorker
from .helpers import eventually


async def test_an_empty_queue_is_deleted_with_its_finished_jobs(
    client: AsyncClient, start_worker: StartWorker
) -> None:
    await client.update_queue("old", width=3, create=True)
    done = await client.submit("old", b"x", idempotency_key="k")
    worker = start_worker(configure=lambda w: w.handler("old")(lambda job: b"ok"))
    assert (await client.wait(done.id, timeout=10)).state is JobState.SUCCEEDED
    await worker.stop()

    async def deleted() -> bool:  # the worker's stream may take a moment to end
        try:
            return await client.delete_queue("old") == 1
        except FailedPrecondition:
            return False

    await eventually(deleted, what="the queue to be deleted once its worker left")
    with pytest.raises(NotFound):
        await client.get_queue("old")
    with pytest.raises(NotFound):
        await client.get(done.id)
    assert "old" not in [q.name for q in await client.list_queues()]
    with pytest.raises(NotFound):
        await client.delete_queue("old")
    fresh = await client.submit("old", b"y", idempotency_key="k")  # a new queue, defaults
    assert not fresh.duplicate
    assert (await client.get_queue("old")).width == 10


async def test_a_queue_with_work_or_workers_is_not_deleted(
    client: AsyncClient, start_worker: StartWorker
) -> None:
    await client.update_queue("busy", width=0, create=True)
    await client.submit("busy", b"a")
    await client.submit("busy", b"b", delay=60)
    with pytest.raises(FailedPrecondition) as refused:
        await client.delete_queue("busy")
    e = refused.value
    assert e.reason == "QUEUE_NOT_EMPTY"
    assert "1 pending job, 1 scheduled job" in e.details
    assert (e.info["pending"], e.info["scheduled"], e.info["workers"]) == ("1", "1", "0")
    assert (await client.get_queue("busy")).pending_count == 1

    await client.update_queue("served", width=1, create=True)
    worker = start_worker(configure=lambda w: w.handler("served")(_never))
    await worker.wait_connected(10)
    with pytest.raises(FailedPrecondition, match="1 connected worker"):
        await client.delete_queue("served")

    await client.update_queue("slotted", width=1, create=True)
    slot = await client.acquire_slot("slotted", ttl=30)
    with pytest.raises(FailedPrecondition, match="1 slot held or requested"):
        await client.delete_queue("slotted")
    await client.release_slot(slot.slot_id)
    assert await client.delete_queue("slotted") == 0


def _never(job: ReceivedJob) -> bytes:
    raise AssertionError(f"no job was submitted to this queue ({job.id})")


async def test_deleting_makes_room_under_max_queues(server_config: Config) -> None:
    config = replace(server_config, max_queues=2)
    async with (
        serving(DispatchdServer(config)) as srv,
        AsyncClient(f"127.0.0.1:{srv.port}") as client,
    ):
        await client.update_queue("a", width=1, create=True)
        await client.update_queue("b", width=1, create=True)
        with pytest.raises(ResourceExhausted):
            await client.submit("c", b"x")
        await client.delete_queue("a")
        await client.submit("c", b"x")
        assert sorted(q.name for q in await client.list_queues()) == ["b", "c"]


@pytest.mark.embedded_only  # the journal is the embedded backend's
async def test_a_deleted_queue_stays_deleted_after_a_restart(server_config: Config) -> None:
    async with (
        serving(DispatchdServer(server_config)) as srv,
        AsyncClient(f"127.0.0.1:{srv.port}") as client,
    ):
        await client.update_queue("gone", width=4, create=True)
        await client.update_queue("kept", width=5, create=True)
        await client.delete_queue("gone")
    async with (
        serving(DispatchdServer(server_config)) as srv,
        AsyncClient(f"127.0.0.1:{srv.port}") as client,
    ):
        assert [q.name for q in await client.list_queues()] == ["kept"]
