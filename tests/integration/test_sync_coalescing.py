"""The blocking Client coalesces submit() calls from concurrent threads into SubmitBatch round
trips, against the real server: RPCs are counted from its real /metrics endpoint, and every
calling thread still gets its own job or its own error.

The server runs on this test's event loop, so the threads run in ``asyncio.to_thread``. Tests
that need several calls in one batch start the threads together (a Barrier) and give the
client a window far longer than the threads take to queue; the server's refused-SubmitBatch
count then shows the calls really did share a batch.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import grpc
import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd_client import (
    Client,
    DispatchdError,
    InvalidArgument,
    Job,
    ResourceExhausted,
)

from .scrape import method_calls, scrape, submit_rpc_counts

PAYLOAD_CAP = 1024
#: Long enough for every thread behind a Barrier to queue its call on a busy machine.
WINDOW = 1.0

Outcome = Job | DispatchdError


@pytest.fixture
def server_config(server_config: Config) -> Config:
    return replace(server_config, max_payload_bytes=PAYLOAD_CAP)


@pytest.fixture
def client(target: str) -> Iterator[Client]:
    with Client(target, coalesce_window=WINDOW) as c:
        yield c


@pytest.fixture
async def queue(target: str) -> str:
    def create() -> None:
        with Client(target) as c:
            c.update_queue("co", width=1, create=True)

    await asyncio.to_thread(create)
    return "co"


def _together(calls: Sequence[Callable[[], Job]]) -> list[Outcome]:
    """Runs each call in its own thread, all released at once; outcomes in call order."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], Job]) -> Outcome:
        start.wait()
        try:
            return call()
        except DispatchdError as e:
            return e

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


async def _submit_together(client: Client, queue: str, payloads: list[bytes]) -> list[Outcome]:
    calls = [functools.partial(client.submit, queue, p) for p in payloads]
    return await asyncio.to_thread(_together, calls)


async def test_concurrent_threads_share_batches(
    server: DispatchdServer, target: str, queue: str
) -> None:
    threads, per_thread = 20, 25

    def produce(t: int) -> list[tuple[Job, bytes]]:
        return [(c.submit(queue, p), p) for p in (f"{t}-{i}".encode() for i in range(per_thread))]

    def run() -> list[tuple[Job, bytes]]:
        with ThreadPoolExecutor(threads) as pool:
            return [pair for got in pool.map(produce, range(threads)) for pair in got]

    with Client(target) as c:  # no window: batches form while one is in flight
        produced = await asyncio.to_thread(run)
        assert len({job.id for job, _ in produced}) == threads * per_thread
        submits, batches = await submit_rpc_counts(server.observability.metrics_port)
        assert batches >= 1
        # One Submit per call would be 500 round trips; queued calls share them.
        assert submits + batches <= threads * per_thread / 2
        for job, payload in produced[::25]:  # each caller got its own job
            assert (await asyncio.to_thread(c.get, job.id)).payload == payload


async def test_coalescing_can_be_turned_off(
    server: DispatchdServer, target: str, queue: str
) -> None:
    with Client(target, coalesce=False) as c:
        await _submit_together(c, queue, [b"x"] * 20)
    assert await submit_rpc_counts(server.observability.metrics_port) == (20, 0)


async def test_a_window_gathers_calls(server: DispatchdServer, client: Client, queue: str) -> None:
    outcomes = await _submit_together(client, queue, [f"{i}".encode() for i in range(10)])
    assert all(isinstance(o, Job) for o in outcomes)
    assert len({o.id for o in outcomes if isinstance(o, Job)}) == 10
    assert await submit_rpc_counts(server.observability.metrics_port) == (0, 1)


async def test_a_lone_call_is_a_plain_submit(
    server: DispatchdServer, target: str, queue: str
) -> None:
    with Client(target) as c:
        job = await asyncio.to_thread(c.submit, queue, b"alone")
    assert job.queue == queue
    assert await submit_rpc_counts(server.observability.metrics_port) == (1, 0)


async def test_an_invalid_job_fails_only_its_caller(
    server: DispatchdServer, client: Client, queue: str
) -> None:
    calls: list[Callable[[], Job]] = [lambda: client.submit(queue, b"ok") for _ in range(10)]
    calls.insert(5, lambda: client.submit("bad queue!", b"x"))
    outcomes = await asyncio.to_thread(_together, calls)
    bad = outcomes.pop(5)
    assert isinstance(bad, InvalidArgument)
    assert "jobs[" not in bad.details  # the error a lone submit gets, not the batch's
    assert all(isinstance(o, Job) for o in outcomes)
    assert len({o.id for o in outcomes if isinstance(o, Job)}) == 10
    m = await scrape(server.observability.metrics_port)
    assert method_calls(m, "SubmitBatch", "INVALID_ARGUMENT") >= 1  # it did share a batch


async def test_an_oversized_payload_fails_only_its_caller(
    server: DispatchdServer, client: Client, queue: str
) -> None:
    payloads = [b"a", b"b", b"x" * (PAYLOAD_CAP + 1), b"c", b"d"]
    outcomes = await _submit_together(client, queue, payloads)
    assert isinstance(outcomes[2], ResourceExhausted)
    assert "--max-payload-bytes" in outcomes[2].details
    assert all(isinstance(o, Job) for i, o in enumerate(outcomes) if i != 2)
    m = await scrape(server.observability.metrics_port)
    assert method_calls(m, "SubmitBatch", "RESOURCE_EXHAUSTED") >= 1


async def test_a_refusal_naming_no_job_is_settled_one_by_one(
    server: DispatchdServer, client: Client, queue: str
) -> None:
    await asyncio.to_thread(client.update_queue, queue, max_pending=3)
    outcomes = await _submit_together(client, queue, [f"{i}".encode() for i in range(5)])
    # The batch of five is refused as a whole; resent one by one, three fit.
    assert sum(isinstance(o, Job) for o in outcomes) == 3
    assert sum(isinstance(o, ResourceExhausted) for o in outcomes) == 2
    assert await submit_rpc_counts(server.observability.metrics_port) == (
        3,
        0,
    )  # only the accepted calls count as OK


async def test_transport_errors_reach_every_caller() -> None:
    # Nothing listens there: every caller of the batch gets UNAVAILABLE, none is retried.
    with Client("127.0.0.1:1", timeout=5.0, coalesce_window=WINDOW) as c:
        outcomes = await asyncio.to_thread(
            _together, [lambda: c.submit("co", b"x") for _ in range(3)]
        )
    assert all(isinstance(o, DispatchdError) for o in outcomes)
    assert {o.code for o in outcomes if isinstance(o, DispatchdError)} == {
        grpc.StatusCode.UNAVAILABLE
    }
    assert len({id(o) for o in outcomes}) == 3  # each caller its own exception object


async def test_a_closed_client_refuses_submits(target: str) -> None:
    c = Client(target)
    c.close()
    with pytest.raises(RuntimeError, match="closed"):
        c.submit("co", b"x")
