"""AsyncClient coalesces concurrent submit() calls into SubmitBatch round trips, against the real
server: RPCs are counted from its real /metrics endpoint, and every caller still gets its own
job or its own error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd_client import (
    AsyncClient,
    DispatchdError,
    InvalidArgument,
    Job,
    ReceivedJob,
    ResourceExhausted,
)

from .conftest import StartWorker
from .scrape import submit_rpc_counts

PAYLOAD_CAP = 1024


@pytest.fixture
def server_config(server_config: Config) -> Config:
    return replace(server_config, max_payload_bytes=PAYLOAD_CAP)


@pytest.fixture
async def client(target: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(target) as c:
        await c.update_queue("co", width=1, create=True)
        yield c


async def _outcomes(client: AsyncClient, payloads: list[bytes]) -> list[Job | BaseException]:
    return await asyncio.gather(*(client.submit("co", p) for p in payloads), return_exceptions=True)


async def test_concurrent_submits_share_batches(
    server: DispatchdServer, client: AsyncClient
) -> None:
    jobs = await asyncio.gather(*(client.submit("co", f"{i}".encode()) for i in range(200)))
    assert len({j.id for j in jobs}) == 200
    assert all(j.queue == "co" and not j.duplicate and j.payload == b"" for j in jobs)
    submits, batches = await submit_rpc_counts(server.observability.metrics_port)
    assert submits == 0
    assert 1 <= batches <= 5  # one tick: one batch (fewer than 1,000 jobs)
    for job, i in zip(jobs, range(200), strict=True):  # each caller got its own job
        assert (await client.get(job.id)).payload == f"{i}".encode()


async def test_coalescing_can_be_turned_off(server: DispatchdServer, target: str) -> None:
    async with AsyncClient(target, coalesce=False) as c:
        await asyncio.gather(*(c.submit("co", b"x") for _ in range(20)))
    assert await submit_rpc_counts(server.observability.metrics_port) == (20, 0)


async def test_a_window_gathers_calls_from_later_ticks(
    server: DispatchdServer, target: str
) -> None:
    async def later(i: int) -> Job:
        await asyncio.sleep(0)  # a tick after the first caller, still inside the window
        return await c.submit("co", f"{i}".encode())

    async with AsyncClient(target, coalesce_window=0.5) as c:
        jobs = await asyncio.gather(c.submit("co", b"first"), *(later(i) for i in range(9)))
    assert len({j.id for j in jobs}) == 10
    assert await submit_rpc_counts(server.observability.metrics_port) == (0, 1)


async def test_duplicate_flag_reaches_its_caller(client: AsyncClient) -> None:
    first = await client.submit("co", b"a", idempotency_key="k")
    again, other = await asyncio.gather(
        client.submit("co", b"a", idempotency_key="k"), client.submit("co", b"b")
    )
    assert again.duplicate
    assert again.id == first.id
    assert not other.duplicate
    assert other.id != first.id


async def test_an_invalid_job_fails_only_its_caller(
    server: DispatchdServer, client: AsyncClient
) -> None:
    good = [client.submit("co", f"{i}".encode()) for i in range(10)]
    outcomes = await asyncio.gather(
        *good[:5], client.submit("bad queue!", b"x"), *good[5:], return_exceptions=True
    )
    bad = outcomes[5]
    assert isinstance(bad, InvalidArgument)
    assert "jobs[" not in bad.details  # the error a lone submit gets, not the batch's
    ok = outcomes[:5] + outcomes[6:]
    assert all(isinstance(j, Job) for j in ok)
    assert len({j.id for j in ok if isinstance(j, Job)}) == 10


async def test_an_oversized_payload_fails_only_its_caller(client: AsyncClient) -> None:
    payloads = [b"a", b"b", b"x" * (PAYLOAD_CAP + 1), b"c", b"d"]
    outcomes = await _outcomes(client, payloads)
    assert isinstance(outcomes[2], ResourceExhausted)
    assert "--max-payload-bytes" in outcomes[2].details
    assert all(isinstance(o, Job) for i, o in enumerate(outcomes) if i != 2)


async def test_a_refusal_naming_no_job_is_settled_one_by_one(client: AsyncClient) -> None:
    await client.update_queue("co", max_pending=3)
    outcomes = await _outcomes(client, [f"{i}".encode() for i in range(5)])
    # The batch of five is refused as a whole; resent one by one, in call order, the first
    # three fit and the last two are refused.
    assert [isinstance(o, Job) for o in outcomes] == [True, True, True, False, False]
    assert all(isinstance(o, ResourceExhausted) for o in outcomes[3:])


async def test_call_order_is_kept_within_a_batch(
    client: AsyncClient, start_worker: StartWorker
) -> None:
    await client.pause("co")
    payloads = [f"{i}".encode() for i in range(50)]
    outcomes = await _outcomes(client, [*payloads[:20], b"x" * (PAYLOAD_CAP + 1), *payloads[20:]])
    jobs = [o for o in outcomes if isinstance(o, Job)]
    assert len(jobs) == 50
    seen: list[bytes] = []
    done = asyncio.Event()

    async def handle(job: ReceivedJob) -> bytes:
        seen.append(job.payload)
        if len(seen) == 50:
            done.set()
        return b""

    start_worker(configure=lambda w: w.handler("co")(handle), concurrency=1)
    await client.resume("co")
    await asyncio.wait_for(done.wait(), 10)
    assert seen == payloads


async def test_transport_errors_reach_every_caller() -> None:
    # Nothing listens there: every caller of the batch gets UNAVAILABLE, none is retried.
    async with AsyncClient("127.0.0.1:1", timeout=5.0) as c:
        outcomes = await asyncio.gather(
            *(c.submit("co", b"x") for _ in range(3)), return_exceptions=True
        )
    assert all(isinstance(o, DispatchdError) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 3  # each caller its own exception object


async def test_close_settles_queued_submits(server: DispatchdServer, target: str) -> None:
    c = AsyncClient(target)
    pending = [asyncio.ensure_future(c.submit("co", b"x")) for _ in range(5)]
    await asyncio.sleep(0)  # the submits have queued their jobs
    await c.close()
    assert all(isinstance(p.result(), Job) for p in pending)
    with pytest.raises(RuntimeError, match="closed"):
        await c.submit("co", b"x")
