"""HTTP push end to end: a real dispatchd delivers to a real local HTTP endpoint."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from dispatchd.config import Config
from dispatchd.engine import JobState as EngineState
from dispatchd.runtime import DispatchdServer
from dispatchd_client import (
    AsyncClient,
    HttpTarget,
    InvalidArgument,
    JobState,
    NewJob,
    Rate,
    RetryPolicy,
)
from tests.inproc import stored_job

from .conftest import StartWorker
from .endpoint import Call, Endpoint, verify_signature
from .helpers import eventually
from .scrape import scrape

FAST_RETRY = RetryPolicy(max_attempts=5, min_backoff=0.01, max_backoff=0.05)
#: The endpoint listens on 127.0.0.1, which the server calls only when told it may.
LOOPBACK = ("127.0.0.0/8",)


@pytest.fixture
def server_config(server_config: Config) -> Config:
    return dataclasses.replace(server_config, http_allow_cidr=LOOPBACK)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    ep = await Endpoint().start()
    try:
        yield ep
    finally:
        await ep.stop()


async def test_delivers_payload_and_headers_and_keeps_the_response(
    client: AsyncClient, endpoint: Endpoint
) -> None:
    target = HttpTarget(
        url=endpoint.url + "/hook?x=1",
        headers={"Authorization": "Bearer t"},
        keep_response_body=True,
    )
    queue = await client.update_queue("push", http_target=target, create=True)
    assert queue.http_target is not None
    assert (queue.http_target.url, queue.http_target.method) == (target.url, "POST")
    assert queue.http_target.signing_enabled is False
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    job = await client.submit(
        "push",
        b'{"n": 1}',
        headers={"traceparent": trace, "X-Tenant": "acme", "Authorization": "from-job"},
        content_type="application/json",
    )
    done = await client.wait(job.id, timeout=10)
    assert (done.state, done.result) == (JobState.SUCCEEDED, b'ok:{"n": 1}')
    [call] = endpoint.calls
    assert (call.method, call.path, call.body) == ("POST", "/hook?x=1", b'{"n": 1}')
    h = call.headers
    assert h["x-dispatchd-job-id"] == job.id
    assert h["x-dispatchd-attempt"] == "1"
    assert h["x-dispatchd-queue"] == "push"
    assert h["traceparent"] == trace
    assert h["content-type"] == "application/json"
    assert h["x-tenant"] == "acme"
    assert h["authorization"] == "Bearer t"  # the target's header wins over the job's
    assert "x-dispatchd-signature" not in h
    [attempt] = done.attempts
    assert (attempt.http_status, attempt.worker_id, attempt.failed) == (200, "http:push", False)
    assert attempt.latency is not None
    assert attempt.latency > 0
    assert (await client.get_queue("push")).worker_count == 1


async def test_width_is_never_exceeded(
    client: AsyncClient, endpoint: Endpoint, server: DispatchdServer
) -> None:
    full = asyncio.Event()

    async def slow(call: Call) -> web.StreamResponse:
        if endpoint.in_flight >= 3:
            full.set()
        await asyncio.wait_for(full.wait(), 10)  # every call waits until width is reached
        return web.Response(text="done")

    endpoint.respond = slow
    await client.update_queue(
        "wide3", width=3, http_target=HttpTarget(url=endpoint.url), create=True
    )
    jobs = await client.submit_batch([NewJob("wide3", b"%d" % i) for i in range(12)])
    for job in jobs:
        assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
    assert (len(endpoint.calls), endpoint.max_in_flight) == (12, 3)
    stats = server.pusher.stats["wide3"]
    assert (stats.outcomes["2xx"], stats.latency_count, stats.in_flight) == (12, 12, 0)
    m = await scrape(server.observability.metrics_port)
    assert m.value("dispatchd_http_push_requests_total", queue="wide3", outcome="2xx") == 12
    assert m.value("dispatchd_http_push_seconds_count", queue="wide3") == 12
    assert m.value("dispatchd_http_push_seconds_bucket", queue="wide3", le="+Inf") == 12
    assert m.value("dispatchd_http_push_in_flight", queue="wide3") == 0


async def test_rate_is_respected_at_the_endpoint(client: AsyncClient, endpoint: Endpoint) -> None:
    per_second, burst, n = 20.0, 2, 14
    await client.update_queue(
        "paced",
        width=100,
        rate=Rate(per_second, burst),
        http_target=HttpTarget(url=endpoint.url),
        create=True,
    )
    jobs = await client.submit_batch([NewJob("paced", b"x") for _ in range(n)])
    done = [await client.wait(job.id, timeout=10) for job in jobs]
    assert all(job.state is JobState.SUCCEEDED for job in done)
    assert len(endpoint.calls) == n
    # The rate governs dispatches: check the server's own dispatch times. Arrival times at
    # the endpoint add HTTP jitter on a busy machine (a late call followed by a prompt one
    # arrive together), which says nothing about the rate limiter.
    times = sorted(j.dispatch_time.timestamp() for j in done if j.dispatch_time is not None)
    assert len(times) == n
    slack = 0.002  # the timestamps' own rounding and the timer's whole-ms wake-ups
    for i in range(n):
        for j in range(i, n):
            allowed = burst + per_second * (times[j] - times[i] + slack)
            assert j - i + 1 <= allowed, f"{j - i + 1} calls in {times[j] - times[i]:.3f} s"
    assert times[-1] - times[0] >= (n - burst) / per_second - slack


async def test_a_503_without_retry_after_is_a_plain_retryable_failure(
    client: AsyncClient, endpoint: Endpoint
) -> None:
    """(429s, and 503s with a Retry-After, are throttle signals: test_throttle_signals.py.)"""

    async def down_once(call: Call) -> web.StreamResponse:
        if call.number == 1:
            return web.Response(status=503, text="down")
        return web.Response(text="fine")

    endpoint.respond = down_once
    await client.update_queue(
        "down",
        http_target=HttpTarget(url=endpoint.url, keep_response_body=True),
        retry_policy=FAST_RETRY,
        create=True,
    )
    job = await client.submit("down", b"x")
    done = await client.wait(job.id, timeout=10)
    assert (done.state, done.attempt, done.result) == (JobState.SUCCEEDED, 2, b"fine")
    failed = done.attempts[0]
    assert (failed.http_status, failed.error_code, failed.failed) == (503, "HTTP_503", True)
    assert "down" in failed.error_message
    assert done.attempts[1].http_status == 200


async def test_client_errors_are_not_retried_server_errors_are(
    client: AsyncClient, endpoint: Endpoint
) -> None:
    async def answer(call: Call) -> web.StreamResponse:
        if call.body == b"bad":
            return web.Response(status=400, text="field n is missing")
        if call.number <= 2:
            return web.Response(status=500, text="oops")
        return web.Response(text="ok")

    endpoint.respond = answer
    await client.update_queue(
        "strict", http_target=HttpTarget(url=endpoint.url), retry_policy=FAST_RETRY, create=True
    )
    flaky = await client.submit("strict", b"flaky")
    done = await client.wait(flaky.id, timeout=10)
    assert (done.state, done.attempt) == (JobState.SUCCEEDED, 3)
    assert [a.http_status for a in done.attempts] == [500, 500, 200]
    bad = await client.submit("strict", b"bad")
    dead = await client.wait(bad.id, timeout=10)
    assert (dead.state, dead.attempt) == (JobState.DEAD, 1)
    assert dead.error is not None
    assert (dead.error.code, dead.error.retryable) == ("HTTP_400", False)
    assert "field n is missing" in dead.error.message
    assert sum(1 for c in endpoint.calls if c.body == b"bad") == 1


async def test_timeout_fails_the_attempt_and_retries(
    client: AsyncClient, endpoint: Endpoint, server: DispatchdServer
) -> None:
    async def stall_first(call: Call) -> web.StreamResponse:
        if call.number == 1:
            await endpoint.hold()
        return web.Response(text="in time")

    endpoint.respond = stall_first
    target = HttpTarget(url=endpoint.url, timeout=0.2, keep_response_body=True)
    await client.update_queue("slow", http_target=target, retry_policy=FAST_RETRY, create=True)
    job = await client.submit("slow", b"x")
    done = await client.wait(job.id, timeout=10)
    assert (done.state, done.attempt, done.result) == (JobState.SUCCEEDED, 2, b"in time")
    timed_out = done.attempts[0]
    assert (timed_out.error_code, timed_out.http_status) == ("Timeout", 0)
    assert timed_out.latency is not None
    assert 0.2 <= timed_out.latency < 5
    assert server.pusher.stats["slow"].outcomes["timeout"] == 1


async def test_calls_are_signed(client: AsyncClient, endpoint: Endpoint) -> None:
    secret = "whsec-test-7f3a"

    async def check(call: Call) -> web.StreamResponse:
        header = call.headers.get("x-dispatchd-signature", "")
        if not header or not verify_signature(secret, header, call.body):
            return web.Response(status=401, text="bad signature")
        return web.Response(text="verified")

    endpoint.respond = check
    target = HttpTarget(url=endpoint.url, signing_secret=secret, keep_response_body=True)
    queue = await client.update_queue("signed", http_target=target, create=True)
    assert queue.http_target is not None
    assert (queue.http_target.signing_enabled, queue.http_target.signing_secret) == (True, "")
    job = await client.submit("signed", b'{"amount": 42}')
    done = await client.wait(job.id, timeout=10)
    assert (done.state, done.result) == (JobState.SUCCEEDED, b"verified")
    assert not verify_signature(
        "another-secret", endpoint.calls[0].headers["x-dispatchd-signature"], b'{"amount": 42}'
    )


async def test_drain_waits_for_calls_in_flight(
    client: AsyncClient, endpoint: Endpoint, server: DispatchdServer
) -> None:
    async def held(call: Call) -> web.StreamResponse:
        await endpoint.hold()
        return web.Response(text="finished during the drain")

    endpoint.respond = held
    kept = HttpTarget(url=endpoint.url, keep_response_body=True)
    await client.update_queue("held", http_target=kept, create=True)
    job = await client.submit("held", b"x")
    await eventually(lambda: endpoint.in_flight == 1, what="the call to arrive")
    await server.start_drain(30.0)
    assert server.backend.draining
    assert not server.stopped.is_set()
    assert endpoint.in_flight == 1
    endpoint.release.set()
    await asyncio.wait_for(server.stopped.wait(), 10)
    finished = await stored_job(server, job.id)
    assert (finished.state, finished.result) == (
        EngineState.SUCCEEDED,
        b"finished during the drain",
    )


async def test_drain_grace_running_out_takes_the_call_back(
    client: AsyncClient, endpoint: Endpoint, server: DispatchdServer
) -> None:
    async def held(call: Call) -> web.StreamResponse:
        await endpoint.hold()
        return web.Response(text="too late")

    endpoint.respond = held
    await client.update_queue("late", http_target=HttpTarget(url=endpoint.url), create=True)
    job = await client.submit("late", b"x")
    await eventually(lambda: endpoint.in_flight == 1, what="the call to arrive")
    await server.start_drain(0.2)
    await asyncio.wait_for(server.stopped.wait(), 10)
    back = await stored_job(server, job.id)
    assert (back.state, back.attempt) == (EngineState.PENDING, 1)
    assert server.pusher.bindings["late"].tasks == set()


async def test_clearing_the_target_hands_the_queue_back_to_workers(
    client: AsyncClient, endpoint: Endpoint, start_worker: StartWorker
) -> None:
    await client.update_queue("back", http_target=HttpTarget(url=endpoint.url), create=True)
    assert (await client.get_queue("back")).worker_count == 1
    queue = await client.update_queue("back", http_target=None)
    assert queue.http_target is None
    await eventually(lambda: _worker_count(client, "back", 0), what="the target's worker to leave")
    job = await client.submit("back", b"x")
    assert (await client.get(job.id)).state is JobState.PENDING
    start_worker(configure=lambda w: w.handler("back")(lambda j: "by a worker"), concurrency=1)
    done = await client.wait(job.id, timeout=10)
    assert (done.state, done.result) == (JobState.SUCCEEDED, b"by a worker")
    assert endpoint.calls == []


async def _worker_count(client: AsyncClient, queue: str, n: int) -> bool:
    return (await client.get_queue(queue)).worker_count == n


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (HttpTarget(url="ftp://example.com/x"), "http:// or https://"),
        (HttpTarget(url="http:///nohost"), "names no host"),
        (HttpTarget(url="http://h/", method="TRACE"), "method must be one of"),
        (HttpTarget(url="http://h/", timeout=0.05), "timeout must be"),
        (HttpTarget(url="http://h/", timeout=601), "timeout must be"),
        (HttpTarget(url="http://h/", success_codes=(700,)), "success_codes must be 100-599"),
        (HttpTarget(url="http://h/", headers={"Host": "x"}), "set by the server"),
    ],
)
async def test_bad_targets_are_refused_and_change_nothing(
    client: AsyncClient, bad: HttpTarget, message: str
) -> None:
    await client.update_queue("guarded", width=4, create=True)
    with pytest.raises(InvalidArgument, match=message):
        await client.update_queue("guarded", width=9, http_target=bad)
    queue = await client.get_queue("guarded")
    assert (queue.width, queue.http_target) == (4, None)


async def test_a_changed_target_takes_the_next_call(
    client: AsyncClient, endpoint: Endpoint
) -> None:
    await client.update_queue(
        "moving", http_target=HttpTarget(url=endpoint.url + "/a"), create=True
    )
    first = await client.submit("moving", b"1")
    assert (await client.wait(first.id, timeout=10)).state is JobState.SUCCEEDED
    await client.update_queue(
        "moving", http_target=HttpTarget(url=endpoint.url + "/b", method="PUT")
    )
    second = await client.submit("moving", b"2")
    assert (await client.wait(second.id, timeout=10)).state is JobState.SUCCEEDED
    assert [(c.method, c.path, c.body) for c in endpoint.calls] == [
        ("POST", "/a", b"1"),
        ("PUT", "/b", b"2"),
    ]


async def test_a_job_header_http_cannot_carry_fails_without_a_call(
    client: AsyncClient, endpoint: Endpoint
) -> None:
    await client.update_queue(
        "headers", http_target=HttpTarget(url=endpoint.url), retry_policy=FAST_RETRY, create=True
    )
    job = await client.submit("headers", b"x", headers={"not a token": "v"})
    dead = await client.wait(job.id, timeout=10)
    assert (dead.state, dead.attempt) == (JobState.DEAD, 1)
    assert dead.error is not None
    assert dead.error.code == "InvalidHeader"
    assert "not a token" in dead.error.message
    assert endpoint.calls == []


async def test_a_long_response_body_is_cut_to_the_payload_cap(
    server_config: Config, endpoint: Endpoint
) -> None:
    async def long(call: Call) -> web.StreamResponse:
        return web.Response(body=b"0123456789" * 100)

    endpoint.respond = long
    srv = DispatchdServer(dataclasses.replace(server_config, max_payload_bytes=64))
    await srv.start()
    try:
        async with AsyncClient(f"127.0.0.1:{srv.port}") as c:
            kept = HttpTarget(url=endpoint.url, keep_response_body=True)
            await c.update_queue("capped", http_target=kept, create=True)
            job = await c.submit("capped", b"x")
            done = await c.wait(job.id, timeout=10)
    finally:
        await srv.stop_now()
    assert (done.state, done.result) == (JobState.SUCCEEDED, (b"0123456789" * 7)[:64])
    assert srv.pusher.stats["capped"].truncated == 1


async def test_a_target_set_the_moment_a_server_starts_is_called(server_config: Config) -> None:
    """On Redis the change reached the pusher only by pub/sub, and a server's first
    moments had no subscription yet: about one fresh server in ten never bound the target
    and its job waited. Each round is a fresh server and endpoint, the target set at once."""
    for round_ in range(10):
        endpoint = await Endpoint().start()
        srv = DispatchdServer(server_config)
        await srv.start()
        try:
            async with AsyncClient(f"127.0.0.1:{srv.port}") as client:
                target = HttpTarget(url=endpoint.url)
                await client.update_queue("fresh", http_target=target, create=True)
                job = await client.submit("fresh", b"x")
                done = await client.wait(job.id, timeout=10)
        finally:
            await srv.stop_now()
            await endpoint.stop()
        assert done.state is JobState.SUCCEEDED, (round_, done.state)
