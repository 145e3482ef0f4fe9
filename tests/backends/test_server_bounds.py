"""Server-wide bounds on both backends: --max-pending-total (jobs waiting across every
queue) and --max-queues, each refused whole with RESOURCE_EXHAUSTED and its own reason
before anything is admitted or created (issue 24, items 2 and 5)."""

from __future__ import annotations

from dataclasses import replace

import grpc
import pytest

from dispatchd.config import Config
from dispatchd_client import (
    AsyncClient,
    FiringOutcome,
    NewJob,
    NotFound,
    ResourceExhausted,
    ScheduleSpec,
)
from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc
from tests.integration.helpers import eventually

from .conftest import StartWorker


@pytest.fixture
def server_config(server_config: Config) -> Config:
    return replace(server_config, max_queues=3, max_pending_total=5)


async def test_a_submit_past_max_pending_total_is_refused_whole(
    client: AsyncClient, start_worker: StartWorker
) -> None:
    await client.submit_batch([NewJob("a", b"1"), NewJob("a", b"2"), NewJob("b", b"3")])
    keyed = await client.submit("b", b"4", idempotency_key="k")
    await client.submit("b", b"5", delay=60)  # scheduled jobs count too
    with pytest.raises(ResourceExhausted) as refused:
        await client.submit_batch([NewJob("a", b"6"), NewJob("c", b"7")])
    assert refused.value.reason == "TOO_MANY_PENDING"
    assert refused.value.retry_delay is not None
    assert "--max-pending-total 5" in refused.value.details
    assert refused.value.info["max_pending_total"] == "5"
    with pytest.raises(NotFound):
        await client.get_queue("c")  # nothing was created or admitted
    assert (await client.get_queue("a")).pending_count == 2
    again = await client.submit("b", b"4", idempotency_key="k")  # a repeat adds nothing
    assert (again.id, again.duplicate) == (keyed.id, True)

    start_worker(configure=lambda w: w.handler("a")(lambda job: b"ok"), concurrency=2)

    async def admitted() -> bool:
        try:
            await client.submit("a", b"later")
        except ResourceExhausted:
            return False
        return True

    await eventually(admitted, what="room once the worker took the jobs of a")


async def test_creating_a_queue_past_max_queues_is_refused(
    client: AsyncClient, target: str
) -> None:
    for name in ("a", "b", "c"):
        await client.update_queue(name, width=1, create=True)
    await client.submit("a", b"known queues take jobs as before")
    calls = {
        "submit": client.submit("d", b"x"),
        "batch": client.submit_batch([NewJob("a", b"y"), NewJob("d", b"z")]),
        "update": client.update_queue("d", width=1, create=True),
        "slot": client.acquire_slot("d", ttl=5, timeout=5),
    }
    for what, call in calls.items():
        with pytest.raises(ResourceExhausted) as refused:
            await call
        assert refused.value.reason == "TOO_MANY_QUEUES", what
        assert "--max-queues 3" in refused.value.details
    with pytest.raises(NotFound):
        await client.get_queue("d")
    assert (await client.get_queue("a")).pending_count == 1  # the refused batch added nothing
    with pytest.raises(grpc.aio.AioRpcError) as hello:
        await _hello(target, ["a", "d"])
    assert hello.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-queues" in (hello.value.details() or "")
    assert [q.name for q in await client.list_queues()] == ["a", "b", "c"]


async def _hello(target: str, queues: list[str]) -> None:
    """Opens a Work stream with a hello and reads its first answer."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DispatcherServiceStub(channel)
        hello = pb.WorkRequest(hello=pb.WorkerHello(queues=queues, max_in_flight=1))
        call = stub.Work(iter([hello]))
        await call.read()
        await call.read()  # the welcome, then the end of the stream


@pytest.mark.on_cluster
async def test_a_schedule_firing_into_a_new_queue_past_max_queues_is_refused(
    client: AsyncClient,
) -> None:
    """A schedule is a producer like any other: its firing cannot create the queue that
    --max-queues forbids (on Redis, fire.lua used to create it; on a Cluster the refusal
    passes through fire_jobs.lua into the record)."""
    for name in ("a", "b", "c"):
        await client.update_queue(name, width=1, create=True)
    await client.create_schedule("into-d", ScheduleSpec.of(every=3600), NewJob("d", b"x"))
    firing = await client.trigger_schedule("into-d")
    assert firing.outcome is FiringOutcome.REFUSED
    assert "--max-queues 3" in firing.message
    assert firing.job_id == ""
    with pytest.raises(NotFound):
        await client.get_queue("d")
    schedule = await client.get_schedule("into-d")
    assert (schedule.submitted_count, schedule.refused_count) == (0, 1)
    await client.delete_queue("c")  # room again: the next firing goes through
    assert (await client.trigger_schedule("into-d")).outcome is FiringOutcome.SUBMITTED
    assert (await client.get_queue("d")).pending_count == 1
