"""Throttle signals end to end: a Python handler's ``raise Throttled(...)`` and an HTTP
target's 429/503 with Retry-After hold the whole queue (or one fairness key) on the
server, on both backends; GetQueue shows the hold."""

from __future__ import annotations

import dataclasses
import time

import pytest
from aiohttp import web

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd_client import AsyncClient, HttpTarget, JobState, ReceivedJob, Throttled
from tests.integration.dispatchctl import Dispatchctl

from .conftest import StartWorker
from .endpoint import Call, Endpoint
from .helpers import eventually
from .scrape import scrape
from .web import get

LOOPBACK = ("127.0.0.0/8",)


@pytest.fixture
def server_config(server_config: Config) -> Config:
    return dataclasses.replace(server_config, http_allow_cidr=LOOPBACK, http_listen="127.0.0.1:0")


async def test_a_handler_raising_throttled_holds_the_queue(
    server: DispatchdServer, target: str, start_worker: StartWorker
) -> None:
    started: list[tuple[str, float]] = []

    async def handler(job: ReceivedJob) -> bytes:
        started.append((job.id, time.monotonic()))
        if len(started) == 1:
            raise Throttled(retry_after=1, reason="provider says 429")
        return b"done"

    async with AsyncClient(target) as client:
        await client.update_queue("thr", width=10, create=True)
        first = await client.submit("thr", b"1")
        start_worker(configure=lambda w: w.handler("thr")(handler), concurrency=1)

        async def held() -> bool:
            return (await client.get_queue("thr")).throttled_until is not None

        await eventually(held, what="the queue to be held")
        queue = await client.get_queue("thr")
        assert queue.throttle_reason == "provider says 429"
        m = await scrape(server.observability.metrics_port)
        assert m.value("dispatchd_queue_throttled", queue="thr") == 1
        assert m.value("dispatchd_throttle_signals_total", queue="thr", scope="queue") == 1
        shown = await Dispatchctl(target)("queue", "show", "thr")
        assert shown.code == 0, shown.err
        assert "throttled until:" in shown.out
        assert "(provider says 429)" in shown.out
        assert server.web is not None
        page = await get(server.web.port, "/queues/thr")
        assert "Throttled until " in page.body
        assert ": provider says 429." in page.body
        second = await client.submit("thr", b"2")
        done = await client.wait(first.id, timeout=10)
        assert (done.state, done.attempt, done.throttle_count) == (JobState.SUCCEEDED, 1, 1)
        assert (await client.wait(second.id, timeout=10)).state is JobState.SUCCEEDED
    # Nothing ran during the hold: the re-run and the second job came a second later.
    assert [job_id for job_id, _ in started] == [first.id, first.id, second.id]
    assert started[1][1] - started[0][1] >= 0.9


@pytest.mark.parametrize("status", [503, 429])
async def test_retry_after_from_a_target_holds_the_whole_queue(
    client: AsyncClient, status: int
) -> None:
    endpoint = await Endpoint().start()

    async def busy_once(call: Call) -> web.StreamResponse:
        if call.number == 1:
            return web.Response(status=status, text="busy", headers={"Retry-After": "1"})
        return web.Response(text="fine")

    endpoint.respond = busy_once
    try:
        q = f"held{status}"
        await client.update_queue(
            q, http_target=HttpTarget(url=endpoint.url, keep_response_body=True), create=True
        )
        first = await client.submit(q, b"x")

        async def held() -> bool:
            return (await client.get_queue(q)).throttled_until is not None

        await eventually(held, what="the queue to be held")
        assert (await client.get_queue(q)).throttle_reason.startswith(f"HTTP {status}")
        second = await client.submit(q, b"y")
        for job in (first, second):
            done = await client.wait(job.id, timeout=10)
            assert (done.state, done.result) == (JobState.SUCCEEDED, b"fine")
        done = await client.get(first.id)
        assert (done.attempt, done.throttle_count) == (1, 1)  # the 429 was not an attempt
        one, two, three = endpoint.calls
        # Neither the first job's second call nor the second job came during the hold.
        assert min(two.arrived, three.arrived) - one.finished >= 0.95
    finally:
        await endpoint.stop()


async def test_a_day_quota_set_with_dispatchctl_stops_dispatch_and_shows_its_count(
    server: DispatchdServer, target: str, start_worker: StartWorker
) -> None:
    ctl = Dispatchctl(target)
    done = await ctl("queue", "set", "quota", "--windows", "2/1d,100/1h", "--create")
    assert done.code == 0, done.err
    ran: list[str] = []

    async def handler(job: ReceivedJob) -> bytes:
        ran.append(job.id)
        return b"ok"

    async with AsyncClient(target) as client:
        jobs = [await client.submit("quota", b"x") for _ in range(4)]
        start_worker(configure=lambda w: w.handler("quota")(handler), concurrency=4)

        async def two_done() -> bool:
            states = [(await client.get(j.id)).state for j in jobs]
            return states.count(JobState.SUCCEEDED) == 2

        await eventually(two_done, what="the day's quota of two to run")
        queue = await client.get_queue("quota")
        assert [(w.limit, w.period, w.used) for w in queue.windows] == [
            (100, 3600.0, 2),
            (2, 86400.0, 2),
        ]
        assert queue.pending_count == 2  # the rest waits for tomorrow
    shown = await ctl("queue", "show", "quota")
    assert "2/100 per 1h; 2/2 per 1d" in shown.out
    assert server.web is not None
    page = await get(server.web.port, "/queues/quota")
    assert "Quotas used in their current windows: 2 of 100 per 3600 s; 2 of 2 per 86400 s." in (
        page.body
    )
    assert len(ran) == 2
