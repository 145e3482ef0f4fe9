"""What only the Redis backend has: replicas sharing one Redis, refusals of features it
lacks, and Redis going away."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis

from dispatchd.config import Config, ConfigError
from dispatchd.runtime import DispatchdServer, StartError
from dispatchd_client import (
    AsyncClient,
    Internal,
    JobState,
    NewJob,
    PermissionDenied,
    ReceivedJob,
    Unauthenticated,
    Unavailable,
    Worker,
)
from tests.grpc_probes import NOT_SERVING, SERVING, check_health_and_reflection, health_is
from tests.inproc import base_config
from tests.integration.helpers import eventually
from tests.integration.scrape import scrape
from tests.redisproc import RedisProcess

from .conftest import StartWorker, start_server


def redis_config(tmp_path: Path, url: str) -> Config:
    return replace(base_config(tmp_path), backend="redis", redis_url=url, data_dir=None)


async def test_two_replicas_share_the_width_and_never_lease_a_job_twice(
    tmp_path: Path, redis_url: str, workers: StartWorker
) -> None:
    a = await start_server(redis_config(tmp_path, redis_url))
    b = await start_server(redis_config(tmp_path, redis_url))
    running, peak = 0, 0
    runs: Counter[str] = Counter()

    async def handle(job: ReceivedJob) -> bytes:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        runs[job.id] += 1
        try:
            await asyncio.sleep(0.005)
        finally:
            running -= 1
        return b"ok"

    try:
        async with AsyncClient(f"127.0.0.1:{a.port}") as client:
            await client.update_queue("shared", width=3, create=True)
            jobs = await client.submit_batch([NewJob("shared", b"x")] * 120)
            for replica in (a, b, a, b):
                workers(
                    f"127.0.0.1:{replica.port}",
                    configure=lambda w: w.handler("shared")(handle),
                    concurrency=5,
                )
            for job in jobs:
                assert (await client.wait(job.id, timeout=20)).state is JobState.SUCCEEDED
            queue = await client.get_queue("shared")
        assert peak == 3  # both replicas' workers were busy, never more than the width
        assert set(runs) == {j.id for j in jobs}
        assert max(runs.values()) == 1
        assert (queue.pending_count, queue.underway_count) == (0, 0)
    finally:
        await a.stop_now()
        await b.stop_now()


async def test_a_cancel_reaches_the_worker_through_another_replica(
    tmp_path: Path, redis_url: str, workers: StartWorker
) -> None:
    a = await start_server(redis_config(tmp_path, redis_url))
    b = await start_server(redis_config(tmp_path, redis_url))
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(job: ReceivedJob) -> bytes:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return b""

    try:
        async with AsyncClient(f"127.0.0.1:{b.port}") as client:
            job = await client.submit("c", b"x")
            workers(f"127.0.0.1:{a.port}", configure=lambda w: w.handler("c")(slow))
            await asyncio.wait_for(started.wait(), 10)
            assert (await client.cancel(job.id)).state is JobState.CANCELLED
            await asyncio.wait_for(cancelled.wait(), 10)
    finally:
        await a.stop_now()
        await b.stop_now()


async def test_redis_going_away_answers_unavailable(tmp_path: Path) -> None:
    proc = RedisProcess(tmp_path)
    server = DispatchdServer(redis_config(tmp_path, proc.url))
    try:
        await server.start()
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            job = await client.submit("down", b"x")
            proc.stop()
            with pytest.raises(Unavailable, match="redis is unreachable"):
                await client.get(job.id)
            with pytest.raises(Unavailable, match="redis is unreachable"):
                await client.submit("down", b"y")
    finally:
        proc.stop()
        await server.stop_now()


async def test_health_is_not_serving_while_redis_is_away(tmp_path: Path) -> None:
    """Readiness follows Redis: NOT_SERVING while it cannot be reached (noticed by the
    reaper's next pass, no client call needed), SERVING again once it answers."""
    proc = RedisProcess(tmp_path / "first")
    server = DispatchdServer(redis_config(tmp_path, proc.url))
    try:
        await server.start()
        target = f"127.0.0.1:{server.port}"
        assert await health_is(target, SERVING)
        proc.stop()
        await eventually(lambda: health_is(target, NOT_SERVING), what="NOT_SERVING")
        assert await health_is(target, SERVING, "liveness")  # alive all the same
        proc = RedisProcess(tmp_path / "second", port=proc.port)
        await eventually(lambda: health_is(target, SERVING), what="SERVING again")
    finally:
        proc.stop()
        await server.stop_now()


async def test_an_unreachable_redis_stops_the_start(tmp_path: Path) -> None:
    dead = RedisProcess(tmp_path)
    dead.stop()  # a port nothing listens on any more
    server = DispatchdServer(redis_config(tmp_path, dead.url))
    with pytest.raises(StartError, match="--redis-url: redis is unreachable"):
        await server.start()
    await server.stop_now()


def test_config_names_what_the_redis_backend_needs() -> None:
    with pytest.raises(ConfigError, match="--backend redis needs --redis-url"):
        Config(backend="redis")
    with pytest.raises(ConfigError, match="--backend must be embedded or redis"):
        Config(backend="sql")
    with pytest.raises(ConfigError, match="only used with --backend redis"):
        Config(redis_url="redis://x:6379/0")
    with pytest.raises(StartError, match="scheme must be one of"):
        DispatchdServer(Config(backend="redis", redis_url="http://x:1/"))


async def test_a_drained_replica_hands_its_jobs_to_the_others(
    tmp_path: Path, redis_url: str, workers: StartWorker
) -> None:
    a = await start_server(redis_config(tmp_path, redis_url))
    b = await start_server(redis_config(tmp_path, redis_url))
    held = asyncio.Event()

    async def hold(job: ReceivedJob) -> bytes:
        held.set()
        await asyncio.Event().wait()  # never finishes on its own
        return b""

    async def finish(job: ReceivedJob) -> bytes:
        return b"on b"

    try:
        async with AsyncClient(f"127.0.0.1:{a.port}") as on_a:
            job = await on_a.submit("d", b"x")
            workers(f"127.0.0.1:{a.port}", configure=lambda w: w.handler("d")(hold))
            await asyncio.wait_for(held.wait(), 10)
            await on_a.drain(grace=0.2)
            with pytest.raises(Unavailable):
                await on_a.submit("d", b"y")
            await asyncio.wait_for(a.stopped.wait(), 10)
        async with AsyncClient(f"127.0.0.1:{b.port}") as on_b:
            back = await on_b.get(job.id)
            assert (back.state, back.attempt) == (JobState.PENDING, 1)  # handed back, no snapshot
            workers(f"127.0.0.1:{b.port}", configure=lambda w: w.handler("d")(finish))
            done = await on_b.wait(job.id, timeout=10)
            assert (done.state, done.result, done.attempt) == (JobState.SUCCEEDED, b"on b", 2)
    finally:
        await a.stop_now()
        await b.stop_now()


@pytest.mark.redis_only
async def test_metrics_show_grpc_calls_and_queue_gauges_read_from_redis(
    server: DispatchdServer, target: str, backend: str
) -> None:
    async with AsyncClient(target) as client:
        await client.update_queue("m", width=7, create=True)
        await client.submit_batch([NewJob("m", b"x")] * 3)
    port = server.observability.metrics_port

    async def gauges_seen() -> bool:
        samples = await scrape(port)
        return samples.get("dispatchd_jobs_pending", queue="m") == 3

    await eventually(gauges_seen, what="the reaper pass to refresh the queue gauges")
    samples = await scrape(port)
    assert samples.value("dispatchd_queue_width", queue="m") == 7
    calls = samples.labels_of("dispatchd_grpc_requests_total", "method")
    assert {"SubmitBatch", "UpdateQueue"} <= calls


@pytest.mark.redis_only
async def test_health_and_reflection_serve_in_redis_mode(
    server: DispatchdServer, target: str, backend: str
) -> None:
    await check_health_and_reflection(target, server.health.enter_graceful_shutdown)


async def test_tokens_and_the_probe_port_work_as_on_the_embedded_backend(
    tmp_path: Path, redis_url: str
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("submit tok-mine-0123456789 mine\nsubmit tok-theirs-0123456789 theirs\n")
    config = replace(
        redis_config(tmp_path, redis_url), auth_tokens=tokens, health_listen="127.0.0.1:0"
    )
    server = await start_server(config)
    assert isinstance(server, DispatchdServer)
    target = f"127.0.0.1:{server.port}"
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.health_port}") as channel:
            probe = health_pb2_grpc.HealthStub(channel)
            resp = await probe.Check(health_pb2.HealthCheckRequest(service=""))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        async with (
            AsyncClient(target, token="tok-mine-0123456789") as mine,
            AsyncClient(target, token="tok-theirs-0123456789") as theirs,
            AsyncClient(target) as anonymous,
        ):
            job = await mine.submit("q", b"x")
            with pytest.raises(PermissionDenied, match="was submitted by mine"):
                await theirs.cancel(job.id)
            with pytest.raises(Unauthenticated):
                await anonymous.get(job.id)
            assert (await mine.cancel(job.id)).state is JobState.CANCELLED
    finally:
        await server.stop_now()


async def test_replicas_carry_on_after_redis_restarts_empty(
    tmp_path: Path, workers: StartWorker
) -> None:
    proc = RedisProcess(tmp_path / "first")
    server = await start_server(redis_config(tmp_path, proc.url))
    target = f"127.0.0.1:{server.port}"
    try:
        workers(target, configure=lambda w: w.handler("r")(lambda job: b"done"))
        async with AsyncClient(target) as client:
            job = await client.submit("r", b"x")
            assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
            proc.stop()
            proc = RedisProcess(tmp_path / "second", port=proc.port)  # empty: scripts reload
            later: list[str] = []

            async def resubmitted() -> bool:
                try:
                    later.append((await client.submit("r", b"y")).id)
                except Unavailable:
                    return False
                return True

            await eventually(resubmitted, what="a submit to succeed on the new Redis")
            done = await client.wait(later[0], timeout=15)
            assert (done.state, done.result) == (JobState.SUCCEEDED, b"done")
    finally:
        await server.stop_now()
        proc.stop()


async def test_three_replicas_export_the_true_fleet_figures(tmp_path: Path, redis_url: str) -> None:
    """With 3 replicas sharing a paused queue of 40 jobs and width 5, the sum over the
    replicas' /metrics (what the shipped Grafana dashboard draws) is 40 pending and width
    5: one replica exports the per-queue gauges. When it stops, another takes over."""
    servers = [await start_server(redis_config(tmp_path, redis_url)) for _ in range(3)]
    try:
        async with AsyncClient(f"127.0.0.1:{servers[0].port}") as client:
            await client.update_queue("fleet", width=5, paused=True, create=True)
            await client.submit_batch([NewJob("fleet", b"x") for _ in range(40)])

        async def totals(live: list[DispatchdServer]) -> tuple[float, float, int]:
            pending = width = 0.0
            exporters = 0
            for srv in live:
                m = await scrape(srv.observability.metrics_port)
                p = m.get("dispatchd_jobs_pending", queue="fleet")
                if p is not None:
                    exporters += 1
                    pending += p
                    width += m.value("dispatchd_queue_width", queue="fleet")
            return pending, width, exporters

        assert await totals(servers) == (40, 5, 1)
        exporter = next(s for s in servers if s.backend.reports_queues)
        await exporter.stop_now()
        rest = [s for s in servers if s is not exporter]

        async def taken_over() -> bool:
            return await totals(rest) == (40, 5, 1)

        await eventually(taken_over, within=15, what="another replica to export the gauges")
    finally:
        for srv in servers:
            if not srv.stopped.is_set():
                await srv.stop_now()


@pytest.mark.redis_only
async def test_one_queues_broken_data_fails_that_queue_only(
    server: DispatchdServer, target: str, redis_url: str, workers: StartWorker
) -> None:
    """A queue whose Redis data makes its scripts fail: its calls answer INTERNAL naming
    the script (not UNKNOWN with redis-py's text), the reaper carries on with the other
    queues, and a worker serving it and a healthy queue keeps its stream."""
    ran: list[str] = []

    def handle(job: ReceivedJob) -> bytes:
        ran.append(job.queue)
        return b"ok"

    def configure(w: Worker) -> None:
        w.handler("broken")(handle)
        w.handler("healthy")(handle)

    worker = workers(target, configure=configure, concurrency=2)
    await worker.wait_connected(10)
    async with AsyncClient(target) as client:
        await client.update_queue("broken", width=1, create=True)
        r = Redis.from_url(redis_url)
        try:
            # Its submits, claims and reaps all fail on these.
            await r.hset("{dq:broken}:cfg", mapping={"lease": "not a number", "seq": "x"})
        finally:
            await r.aclose()
        with pytest.raises(Internal, match="script failed on"):
            await client.submit("broken", b"x")
        for _ in range(3):
            done = await client.wait((await client.submit("healthy", b"y")).id, timeout=10)
            assert done.state is JobState.SUCCEEDED
    assert worker.connected
    assert ran == ["healthy"] * 3


async def test_a_redis_restart_ends_no_worker_stream(tmp_path: Path, workers: StartWorker) -> None:
    """A worker holds a job while redis-server restarts (with its append-only file, so the
    job survives). Its heartbeats during the outage fail without ending its stream; its
    result, sent once Redis is back, is recorded although the replica's pooled connections
    died with the old Redis (checked before use; repeatable scripts run once more on a
    fresh one). The job runs once."""
    proc = RedisProcess(tmp_path / "redis", persist=True)
    server = await start_server(redis_config(tmp_path, proc.url))
    target = f"127.0.0.1:{server.port}"
    started, release = asyncio.Event(), asyncio.Event()

    async def hold(job: ReceivedJob) -> bytes:
        started.set()
        await release.wait()
        return b"done"

    try:
        workers(target, configure=lambda w: w.handler("r")(hold))
        async with AsyncClient(target) as client:
            job = await client.submit("r", b"x")
            await asyncio.wait_for(started.wait(), 10)
            (stream,) = server.backend.local_workers()
            proc.stop()
            # Down for more than a heartbeat interval (5 s lease / 3): a beat fails.
            await asyncio.sleep(2.0)  # the outage itself, not a wait for state
            proc = RedisProcess(tmp_path / "redis", port=proc.port, persist=True)
            release.set()
            done = await client.wait(job.id, timeout=15)
            assert (done.state, done.attempt) == (JobState.SUCCEEDED, 1)
            assert server.backend.local_workers() == [stream]  # the same stream throughout
    finally:
        release.set()
        await server.stop_now()
        proc.stop()
