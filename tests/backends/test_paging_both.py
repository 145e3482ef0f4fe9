"""ListJobs page tokens on both backends: a page resumes strictly after the last job of the
page before, so a job that stays in its state for the whole listing is listed exactly
once, whatever is submitted, cancelled or reprioritized between the pages."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest

from dispatchd_client import AsyncClient, NewJob
from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc

PAGE = 7


@pytest.fixture
async def stub(target: str) -> AsyncIterator[pb_grpc.DispatcherServiceStub]:
    async with grpc.aio.insecure_channel(target) as channel:
        yield pb_grpc.DispatcherServiceStub(channel)


async def page(
    stub: pb_grpc.DispatcherServiceStub,
    queue: str,
    token: str = "",
    state: int = pb.JOB_STATE_PENDING,
    size: int = PAGE,
) -> tuple[list[str], str]:
    resp = await stub.ListJobs(
        pb.ListJobsRequest(queue=queue, state=state, page_size=size, page_token=token)  # type: ignore[arg-type]
    )
    return [j.id for j in resp.jobs], resp.next_page_token


async def test_pending_pages_list_every_job_that_stayed_pending_exactly_once(
    target: str, stub: pb_grpc.DispatcherServiceStub
) -> None:
    async with AsyncClient(target) as client:
        await client.update_queue("p", paused=True, create=True)
        # Three priorities, ten jobs each: dispatch order is priority, then submit order.
        jobs = await client.submit_batch([NewJob("p", b"", priority=i % 3) for i in range(30)])
        order = [j.id for j in sorted(jobs, key=lambda j: -j.priority)]
        first, token = await page(stub, "p")
        assert first == order[:PAGE]
        assert token
        # The cursor is the 7th job (priority 2). Jobs before it and after it arrive...
        before = await client.submit_batch([NewJob("p", b"", priority=9)] * 3)
        after = await client.submit_batch([NewJob("p", b"", priority=p) for p in (2, 1, 0)])
        # ...jobs of this page and of later pages are cancelled, one later job moves.
        later = order[PAGE:]
        gone = [first[0], first[3], later[0], later[5], later[-1]]
        for job_id in gone:
            await client.cancel(job_id)
        moved = later[10]
        await client.reprioritize(moved, 9)
        rest: list[str] = []
        while token:
            ids, token = await page(stub, "p", token)
            rest += ids
    stayed = [j for j in order if j not in gone and j != moved]
    seen = Counter(first + rest)
    assert {j: seen[j] for j in stayed} == dict.fromkeys(stayed, 1)
    assert [j for j in rest if j in stayed] == [j for j in order[PAGE:] if j in stayed]
    assert [seen[j.id] for j in after] == [1, 1, 1]  # behind the cursor: still to come
    assert [seen[j.id] for j in before] == [0, 0, 0]  # ahead of it: the next listing's
    assert not set(gone[2:]) & set(rest)  # cancelled before their page was read


async def test_all_states_are_walked_in_order_across_pages(
    target: str, stub: pb_grpc.DispatcherServiceStub
) -> None:
    async with AsyncClient(target) as client:
        await client.update_queue("w", paused=True, create=True)
        pending = [await client.submit("w", b"", priority=p) for p in (0, 5, 0)]
        later = [await client.submit("w", b"", delay=d) for d in (3600.0, 1800.0)]
        done = [await client.submit("w", b"") for _ in range(2)]
        for job in done:
            await client.cancel(job.id)
    listed: list[str] = []
    token = ""
    while True:
        ids, token = await page(stub, "w", token, pb.JOB_STATE_UNSPECIFIED, size=2)
        listed += ids
        if not token:
            break
    expected = [pending[1], pending[0], pending[2], later[1], later[0], done[0], done[1]]
    assert listed == [j.id for j in expected]


async def test_bad_and_foreign_page_tokens_are_invalid_argument(
    target: str, stub: pb_grpc.DispatcherServiceStub
) -> None:
    async with AsyncClient(target) as client:
        await client.submit_batch([NewJob("t", b"")] * 3 + [NewJob("u", b"")])
    _, token = await page(stub, "t", size=1)
    cases = [
        ("t", "not a token", pb.JOB_STATE_PENDING, "is not one this server made"),
        ("t", token[:-3], pb.JOB_STATE_PENDING, "is not one this server made"),
        ("u", token, pb.JOB_STATE_PENDING, "was made for another queue or state"),
        ("t", token, pb.JOB_STATE_DEAD, "was made for another queue or state"),
    ]
    for queue, bad, state, words in cases:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await page(stub, queue, bad, state)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert words in (info.value.details() or "")
    assert (await page(stub, "t", token, size=5))[0]  # the good token still works
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await page(stub, "nosuch")
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
