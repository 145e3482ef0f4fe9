"""Worker-side coalescing, counted in messages by the server itself (its Work stream message
counter, also served on /metrics as dispatchd_work_messages_total)."""

from __future__ import annotations

import asyncio

import pytest

from dispatchd.runtime import DispatchdServer
from dispatchd_client import AsyncClient, JobState, ReceivedJob, Worker

from .conftest import StartWorker
from .helpers import eventually
from .scrape import scrape


def received(server: DispatchdServer, kind: str) -> int:
    return server.messages.counts.get(("received", kind), 0)


def sent(server: DispatchdServer, kind: str) -> int:
    return server.messages.counts.get(("sent", kind), 0)


async def _all_succeeded(client: AsyncClient, ids: list[str]) -> bool:
    jobs = [await client.get(i) for i in ids]
    return all(j.state is JobState.SUCCEEDED for j in jobs)


async def test_results_of_one_tick_share_one_message(
    server: DispatchdServer, target: str, start_worker: StartWorker
) -> None:
    async def noop(job: ReceivedJob) -> bytes:
        return b"ok"

    async with AsyncClient(target) as client:
        await client.update_queue("tick", width=100, paused=True, create=True)
        ids = [(await client.submit("tick", b"x")).id for _ in range(20)]
        worker = start_worker(configure=lambda w: w.handler("tick")(noop), concurrency=20)
        await worker.wait_connected(timeout=10)
        await client.resume("tick")
        await eventually(lambda: _all_succeeded(client, ids), what="20 jobs succeeded")
    # One pass hands the 20 jobs out in one message; the 20 handlers finish in one loop
    # tick, so their results travel together (one message per result would be 20).
    assert sent(server, "deliveries") == 1
    assert received(server, "results") <= 2
    m = await scrape(server.observability.metrics_port)
    assert m.value(
        "dispatchd_work_messages_total", direction="received", kind="results"
    ) == received(server, "results")
    assert m.value("dispatchd_work_messages_total", direction="received", kind="hello") == 1
    assert m.value("dispatchd_work_messages_total", direction="sent", kind="deliveries") == 1


async def test_result_window_joins_results_of_different_ticks(
    server: DispatchdServer, target: str, start_worker: StartWorker
) -> None:
    async def staggered(job: ReceivedJob) -> bytes:
        # Jobs end 10 ms apart: each in a tick of its own, well inside the window.
        await asyncio.sleep(0.01 * int(job.payload))
        return b"ok"

    async with AsyncClient(target) as client:
        for queue, window in (("apart", 0.0), ("window", 0.5)):
            await client.update_queue(queue, width=100, paused=True, create=True)
            ids = [(await client.submit(queue, str(i).encode())).id for i in range(10)]
            before = received(server, "results")
            worker = start_worker(
                configure=lambda w, q=queue: w.handler(q)(staggered),
                concurrency=10,
                result_window=window,
            )
            await worker.wait_connected(timeout=10)
            await client.resume(queue)
            await eventually(lambda ids=ids: _all_succeeded(client, ids), what=f"{queue} done")
            messages = received(server, "results") - before
            if window:
                assert messages == 1, f"{messages} result messages within a {window} s window"
            else:
                assert messages >= 5, f"only {messages} messages for results 10 ms apart"
            await worker.stop()


async def test_one_heartbeat_message_covers_every_held_lease(
    server: DispatchdServer, target: str, start_worker: StartWorker
) -> None:
    release = asyncio.Event()

    async def hold(job: ReceivedJob) -> bytes:
        await release.wait()
        return b"ok"

    async with AsyncClient(target) as client:
        # Lease 1.5 s: a heartbeat every 0.5 s.
        await client.update_queue("held", width=100, lease_duration=1.5, create=True)
        ids = [(await client.submit("held", b"x")).id for _ in range(5)]
        start_worker(configure=lambda w: w.handler("held")(hold), concurrency=5)
        await eventually(
            lambda: _states_are(client, ids, JobState.UNDERWAY), what="5 jobs underway"
        )
        before = {i: (await client.get(i)).lease_expire_time for i in ids}
        await eventually(lambda: received(server, "heartbeat") >= 1, what="a heartbeat")
        # A heartbeat per lease would have sent five at once.
        assert received(server, "heartbeat") < 5
        after = {i: (await client.get(i)).lease_expire_time for i in ids}
        assert all(after[i] > before[i] for i in ids)  # type: ignore[operator]
        release.set()
        await eventually(lambda: _all_succeeded(client, ids), what="5 jobs succeeded")


async def _states_are(client: AsyncClient, ids: list[str], state: JobState) -> bool:
    jobs = [await client.get(i) for i in ids]
    return all(j.state is state for j in jobs)


def test_result_window_is_bounded() -> None:
    with pytest.raises(ValueError, match="result_window"):
        Worker("127.0.0.1:1", result_window=-0.1)
    with pytest.raises(ValueError, match="result_window"):
        Worker("127.0.0.1:1", result_window=5.0)


async def test_a_result_window_longer_than_the_lease_keeps_the_lease(
    server: DispatchdServer, target: str, start_worker: StartWorker
) -> None:
    async def nearly_a_lease(job: ReceivedJob) -> bytes:
        await asyncio.sleep(0.6)  # simulated work, not a wait for state
        return b"ok"

    async with AsyncClient(target) as client:
        await client.update_queue("short", lease_duration=1.0, create=True)
        job = await client.submit("short", b"x")
        start_worker(
            configure=lambda w: w.handler("short")(nearly_a_lease),
            concurrency=1,
            result_window=1.0,
        )
        await eventually(lambda: _all_succeeded(client, [job.id]), what="the job succeeded")
        # Held 0.6 s then waiting out a 1 s window: only heartbeats over the waiting result
        # keep its 1 s lease, so it succeeds on its first delivery.
        assert (await client.get(job.id)).attempt == 1
