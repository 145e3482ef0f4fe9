"""The unary RPCs through the real AsyncClient against a real grpc.aio server."""

from __future__ import annotations

import pytest

from dispatchd.runtime import DispatchdServer
from dispatchd_client import (
    AsyncClient,
    FailedPrecondition,
    InvalidArgument,
    JobState,
    NewJob,
    NotFound,
    ResourceExhausted,
)


async def test_submit_get_and_list_in_dispatch_order(target: str) -> None:
    async with AsyncClient(target) as client:
        low = await client.submit("mail", b"low", priority=1)
        high = await client.submit("mail", b"high", priority=9)
        low2 = await client.submit("mail", "low again", priority=1)
        assert low.state is JobState.PENDING
        assert low2.content_type.startswith("text/plain")
        got = await client.get(high.id)
        assert (got.payload, got.priority, got.queue) == (b"high", 9, "mail")
        assert got.submit_time is not None
        listed = [j.id async for j in client.list_jobs("mail", JobState.PENDING, page_size=2)]
        assert listed == [high.id, low.id, low2.id]
        queue = await client.get_queue("mail")
        assert (queue.pending_count, queue.underway_count, queue.width) == (3, 0, 10)


async def test_submit_batch_is_all_or_nothing(target: str) -> None:
    async with AsyncClient(target) as client:
        jobs = await client.submit_batch([NewJob("b", b"1"), NewJob("b", b"2", priority=2)])
        assert [j.priority for j in jobs] == [0, 2]
        assert [j.payload for j in jobs] == [b"", b""]  # not echoed back: the caller has them
        assert [(await client.get(j.id)).payload for j in jobs] == [b"1", b"2"]
        with pytest.raises(InvalidArgument, match=r"jobs\[1\]"):
            await client.submit_batch([NewJob("b", b"3"), NewJob("bad name!", b"4")])
        assert (await client.get_queue("b")).pending_count == 2


async def test_reprioritize_moves_a_pending_job_to_the_front(target: str) -> None:
    async with AsyncClient(target) as client:
        first = await client.submit("r", b"1")
        second = await client.submit("r", b"2")
        moved = await client.reprioritize(second.id, 5)
        assert moved.priority == 5
        listed = [j.id async for j in client.list_jobs("r", JobState.PENDING)]
        assert listed == [second.id, first.id]


async def test_cancel_pending_job_removes_it(target: str) -> None:
    async with AsyncClient(target) as client:
        job = await client.submit("c", b"x")
        cancelled = await client.cancel(job.id)
        assert cancelled.state is JobState.CANCELLED
        assert cancelled.finish_time is not None
        assert (await client.get_queue("c")).pending_count == 0
        with pytest.raises(FailedPrecondition, match="already finished"):
            await client.cancel(job.id)
        with pytest.raises(FailedPrecondition, match="already finished"):
            await client.reprioritize(job.id, 3)
        waited = await client.wait(job.id, timeout=1)
        assert waited.state is JobState.CANCELLED


async def test_wait_returns_the_job_as_it_is_when_the_timeout_passes(target: str) -> None:
    async with AsyncClient(target) as client:
        job = await client.submit("w", b"x")
        waited = await client.wait(job.id, timeout=0.05)
        assert waited.state is JobState.PENDING


async def test_queue_settings_change_live(target: str) -> None:
    async with AsyncClient(target) as client:
        with pytest.raises(NotFound, match="does not exist"):
            await client.update_queue("fresh", width=3)
        created = await client.update_queue("fresh", width=3, lease_duration=12.5, create=True)
        assert (created.width, created.lease_duration, created.paused) == (3, 12.5, False)
        paused = await client.pause("fresh")
        assert paused.paused
        resumed = await client.resume("fresh", width=7)
        assert (resumed.paused, resumed.width) == (False, 7)
        zero = await client.update_queue("fresh", width=0)
        assert zero.width == 0
        names = [q.name for q in await client.list_queues()]
        assert "fresh" in names


@pytest.mark.parametrize(
    "name",
    ["", "x" * 129, "has space", "slash/name", "ünicode"],
)
async def test_bad_queue_names_are_invalid_argument(target: str, name: str) -> None:
    async with AsyncClient(target) as client:
        with pytest.raises(InvalidArgument, match="queue name"):
            await client.submit(name, b"x")
        with pytest.raises(InvalidArgument, match="queue name"):
            await client.get_queue(name)
        assert await client.list_queues() == []


async def test_bad_input_gets_a_clear_error_and_changes_nothing(
    target: str, server: DispatchdServer
) -> None:
    async with AsyncClient(target) as client:
        job = await client.submit("q", b"x")
        with pytest.raises(InvalidArgument, match="width must be 0 or more"):
            await client.update_queue("q", width=-1)
        assert (await client.get_queue("q")).width == 10
        with pytest.raises(InvalidArgument, match="lease_duration"):
            await client.update_queue("q", lease_duration=0.001)
        with pytest.raises(InvalidArgument, match="'nope' is not a job id"):
            await client.get("nope")
        with pytest.raises(InvalidArgument, match="'nope' is not a job id"):
            await client.cancel("nope")
        unknown = job.id[:20] + "000000" + job.id[26:]  # well-formed on either backend
        with pytest.raises(NotFound, match="does not exist"):
            await client.get(unknown)
        with pytest.raises(NotFound):
            await client.cancel(unknown)
        with pytest.raises(NotFound, match="queue 'ghost' does not exist"):
            await client.get_queue("ghost")
        cap = server.config.max_payload_bytes
        with pytest.raises(ResourceExhausted, match=f"limit is {cap} bytes"):
            await client.submit("q", b"x" * (cap + 1))
        for size in (-1, 1001):
            with pytest.raises(InvalidArgument, match="page_size"):
                async for _ in client.list_jobs("q", page_size=size):
                    pass
        assert (await client.get_queue("q")).pending_count == 1
        assert (await client.get(job.id)).state is JobState.PENDING
