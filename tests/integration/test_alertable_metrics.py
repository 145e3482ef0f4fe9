"""The metrics an on-call engineer alerts on, scraped from a real server after real traffic
(a stuck queue, a dead and a failed job, a push queue, a lost worker, refused submits):
each reads the true value, on both backends; with three Redis replicas the per-queue
gauges sum to the fleet's figures, not three times them; `promtool check metrics` finds
nothing to fix in the page."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd_client import (
    AsyncClient,
    HttpTarget,
    JobState,
    NewJob,
    PermanentError,
    ReceivedJob,
    ResourceExhausted,
    RetryableError,
    RetryPolicy,
    Worker,
)
from tests.inproc import serving
from tests.redisproc import RedisProcess

from ..polling import eventually
from .dashboard_eval import check_panels
from .endpoint import Endpoint
from .raw_worker import RawWorker
from .scrape import Samples, fetch, scrape

ONE_TRY = RetryPolicy(max_attempts=1, min_backoff=0.01, max_backoff=0.01)


@pytest.fixture
def server_config(server_config: Config) -> Config:
    return dataclasses.replace(
        server_config, http_allow_cidr=("127.0.0.0/8",), max_payload_bytes=PAYLOAD_CAP
    )


PAYLOAD_CAP = 4096


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    ep = await Endpoint().start()
    try:
        yield ep
    finally:
        await ep.stop()


def promtool_check(text: str) -> None:
    """`promtool check metrics` on a scrape: no lint problem (exit 0, nothing printed)."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: `make prometheus-tools` installs it"
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not done.stdout.strip(), done.stdout


async def _job_in(client: AsyncClient, job_id: str, state: JobState) -> None:
    await eventually(lambda: _state_is(client, job_id, state), what=f"{job_id} {state.name}")


async def _state_is(client: AsyncClient, job_id: str, state: JobState) -> bool:
    return (await client.get(job_id)).state == state


async def test_true_figures_after_a_stuck_queue_dead_job_push_and_lost_worker(
    server: DispatchdServer, target: str, endpoint: Endpoint, tmp_path: Path
) -> None:
    port = server.observability.metrics_port
    async with AsyncClient(target) as client:
        # A stuck queue: paused with 40 jobs, width 5.
        await client.update_queue("stuck", width=5, paused=True, create=True)
        await client.submit_batch([NewJob("stuck", b"x")] * 40)
        # No worker at all for a queue with backlog.
        await client.update_queue("orphan", width=10, create=True)
        await client.submit_batch([NewJob("orphan", b"x")] * 2)
        # One DEAD (retry policy used up) and one FAILED (no policy) job.
        await client.update_queue("dq", retry_policy=ONE_TRY, create=True)
        await client.update_queue("fq", width=10, create=True)
        worker = Worker(target, worker_id="w1", concurrency=4)

        @worker.handler("dq")
        async def dies(job: ReceivedJob) -> bytes:
            raise RetryableError("try again")

        @worker.handler("fq")
        async def fails(job: ReceivedJob) -> bytes:
            raise PermanentError("no")

        task = asyncio.create_task(worker.run_async())
        try:
            await worker.wait_connected(10)
            dead = await client.submit("dq", b"x")
            failed = await client.submit("fq", b"x")
            await _job_in(client, dead.id, JobState.DEAD)
            await _job_in(client, failed.id, JobState.FAILED)
            # A push queue: its HTTP worker is not a stream worker.
            await client.update_queue("push", http_target=HttpTarget(url=endpoint.url), create=True)
            pushed = await client.submit("push", b"p")
            await _job_in(client, pushed.id, JobState.SUCCEEDED)
            # A lost worker: it takes the job and its stream ends; no retry policy.
            await client.update_queue("lost", width=10, create=True)
            async with RawWorker(target, ["lost"], credits=1, worker_id="goner") as raw:
                lost = await client.submit("lost", b"x")
                await raw.next("deliveries")
            await _job_in(client, lost.id, JobState.PENDING)
            # A lease that expires: the silent worker keeps its stream, the job comes back.
            await client.update_queue("silent", width=10, lease_duration=1.0, create=True)
            async with RawWorker(target, ["silent"], credits=1, worker_id="mute") as mute:
                silent = await client.submit("silent", b"x")
                await mute.next("deliveries")
                await _job_in(client, silent.id, JobState.PENDING)
            # Refused submits: max_pending 1.
            await client.update_queue("full", max_pending=1, create=True)
            await client.submit("full", b"x")
            with pytest.raises(ResourceExhausted):
                await client.submit_batch([NewJob("full", b"x")] * 3)
            with pytest.raises(ResourceExhausted):
                await client.submit("big", b"x" * (PAYLOAD_CAP + 1))
            # Every worker of a queue busy: its pending jobs wait for a credit.
            await client.update_queue("busy", width=10, create=True)
            async with RawWorker(target, ["busy"], credits=1, worker_id="busy") as busy:
                await client.submit_batch([NewJob("busy", b"x")] * 3)
                await busy.next("deliveries")
                first = await scrape(port)
                await eventually(
                    lambda: _older(port, first.value(AGE, queue="stuck")), what="the age rising"
                )
                m = await scrape(port)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    assert m.value("dispatchd_jobs_pending", queue="stuck") == 40
    assert m.value("dispatchd_queue_width", queue="stuck") == 5
    assert m.value("dispatchd_jobs_held_back", queue="stuck", reason="paused") == 40
    assert m.value("dispatchd_jobs_held_back", queue="stuck", reason="width") == 0
    assert 0 < m.value(AGE, queue="stuck") < 60
    assert m.value("dispatchd_jobs_held_back", queue="orphan", reason="no_worker") == 2
    assert m.value("dispatchd_jobs_held_back", queue="lost", reason="no_worker") == 1
    assert m.value(AGE, queue="dq") == 0  # nothing waiting
    assert m.value("dispatchd_jobs_dead", queue="dq") == 1
    assert m.value("dispatchd_jobs_failed", queue="dq") == 0
    assert m.value("dispatchd_jobs_failed", queue="fq") == 1
    assert m.value("dispatchd_jobs_requeued_total", queue="lost", reason="worker_lost") == 1
    assert m.get("dispatchd_jobs_requeued_total", queue="dq", reason="worker_lost") is None
    assert m.value("dispatchd_jobs_requeued_total", queue="silent", reason="lease_expired") == 1
    assert m.value("dispatchd_leases_expired_total", queue="silent") == 1
    assert m.value("dispatchd_submit_refused_total", queue="full", reason="max_pending") == 3
    assert m.value("dispatchd_submit_refused_total", queue="big", reason="payload_size") == 1
    # Stream workers only: the push queue's HTTP worker has its own series.
    assert m.value("dispatchd_jobs_held_back", queue="busy", reason="no_credit") == 2
    assert m.value("dispatchd_jobs_held_back", queue="dq", reason="no_credit") == 0
    assert m.value("dispatchd_workers_connected") == 2  # w1 and busy
    assert m.value("dispatchd_worker_credits", state="free") == 4
    assert m.value("dispatchd_worker_credits", state="held") == 1
    assert m.value("dispatchd_queue_workers", queue="dq") == 1
    assert m.value("dispatchd_queue_worker_credits_free", queue="fq") == 4
    assert m.value("dispatchd_http_push_targets", queue="push") == 1
    assert m.get("dispatchd_queue_workers", queue="push") in (None, 0)
    # Jobs per delivery message counts stream deliveries only (the push job is not one).
    assert m.value("dispatchd_work_jobs_delivered_total") == 5  # dq, fq, lost, silent, busy
    assert m.value("dispatchd_jobs_dispatched_total", queue="push") == 1
    assert m.value("dispatchd_backend_up", backend=server.backend.capabilities.name) == 1
    # go-grpc-prometheus names next to ours.
    grpc = {"grpc_service": "dispatchd.v1.DispatcherService", "grpc_type": "unary"}
    assert m.value("grpc_server_started_total", grpc_method="Submit", **grpc) == 7
    handled = m.value("grpc_server_handled_total", grpc_method="Submit", grpc_code="OK", **grpc)
    assert handled == 6  # and the payload refused:
    too_big = {"grpc_method": "Submit", "grpc_code": "RESOURCE_EXHAUSTED", **grpc}
    assert m.value("grpc_server_handled_total", **too_big) == 1
    assert m.value("grpc_server_handling_seconds_count", grpc_method="Submit", **grpc) == 7
    refused = {"grpc_method": "SubmitBatch", "grpc_code": "RESOURCE_EXHAUSTED", **grpc}
    assert m.value("grpc_server_handled_total", **refused) == 1
    if server.backend.capabilities.name == "redis":
        assert m.value("dispatchd_redis_call_seconds_count", script="submit") >= 6
        assert m.get("dispatchd_redis_call_errors_total", script="submit", kind="script") is None
    else:
        assert m.value("dispatchd_journal_commit_seconds_count") >= 1
        assert m.value("dispatchd_journal_commit_records_sum") >= 46
        assert m.value("dispatchd_journal_size_bytes") > 0
        assert m.value("dispatchd_journal_commit_failures_total") == 0
    promtool_check(m.text)
    # The dashboard's panels on this one server read the same figures.
    check_panels(
        [m],
        {
            ("Jobs pending", "A"): [({}, 40)],
            ("Backlog", "A"): [({"queue": "stuck"}, 40)],
            ("Width vs underway", "B"): [({"queue": "stuck"}, 5)],
            ("Pending held back", "A"): [({"queue": "stuck", "reason": "paused"}, 40)],
            ("Workers connected", "A"): [({}, 2)],
        },
        tmp_path,
        queue="stuck",
    )
    check_panels(
        [m],
        {
            ("Dead and failed jobs held", "A"): [({"queue": "dq"}, 1)],
            ("Workers per queue", "A"): [({"queue": "dq"}, 1)],
            ("Workers per queue", "B"): [({"queue": "dq"}, 4)],
        },
        tmp_path,
        queue="dq",
    )


AGE = "dispatchd_queue_oldest_pending_age_seconds"


async def _older(port: int, age: float) -> bool:
    return (await scrape(port)).value(AGE, queue="stuck") > age


@pytest.mark.redis_only
async def test_three_replicas_export_the_fleet_figures_once(
    server_config: Config, tmp_path: Path
) -> None:
    configs = [dataclasses.replace(server_config, default_lease=1.0) for _ in range(3)]
    async with (
        serving(DispatchdServer(configs[0])) as a,
        serving(DispatchdServer(configs[1])) as b,
        serving(DispatchdServer(configs[2])) as c,
    ):
        replicas = [a, b, c]
        ports = [r.observability.metrics_port for r in replicas]
        async with AsyncClient(f"127.0.0.1:{b.port}") as client:
            await client.update_queue("stuck", width=5, paused=True, create=True)
            await client.submit_batch([NewJob("stuck", b"x")] * 40)
            worker = Worker(f"127.0.0.1:{c.port}", worker_id="w", concurrency=3)
            worker.handler("stuck")(_never)
            task = asyncio.create_task(worker.run_async())
            try:
                await worker.wait_connected(10)
                await eventually(
                    lambda: _exporters(ports, 1), within=15, what="one replica exporting gauges"
                )
                pages = [await scrape(p) for p in ports]
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def total(name: str, **labels: str) -> float:
        return sum(page.get(name, **labels) or 0 for page in pages)

    assert total("dispatchd_jobs_pending", queue="stuck") == 40
    assert total("dispatchd_queue_width", queue="stuck") == 5
    assert total("dispatchd_jobs_held_back", queue="stuck", reason="paused") == 40
    assert total("dispatchd_queue_paused", queue="stuck") == 1
    ages = [p.get(AGE, queue="stuck") for p in pages]
    assert sum(age is not None for age in ages) == 1  # one replica's series: max == sum
    # Workers and credits are each replica's own: their sum is the fleet's.
    assert total("dispatchd_queue_workers", queue="stuck") == 1
    assert total("dispatchd_queue_worker_credits_free", queue="stuck") == 3
    assert total("dispatchd_workers_connected") == 1
    for page in pages:
        promtool_check(page.text)
    # Every panel reads the fleet's figures from the three pages, not three times them.
    check_panels(
        pages,
        {
            ("Jobs pending", "A"): [({}, 40)],
            ("Jobs underway", "A"): [({}, 0)],
            ("Backlog", "A"): [({"queue": "stuck"}, 40)],
            ("Width vs underway", "B"): [({"queue": "stuck"}, 5)],
            ("Width vs underway", "C"): [({"queue": "stuck"}, 1)],
            ("Pending held back", "A"): [({"queue": "stuck", "reason": "paused"}, 40)],
            ("Workers connected", "A"): [({}, 1)],
            ("Workers per queue", "A"): [({"queue": "stuck"}, 1)],
            ("Workers per queue", "B"): [({"queue": "stuck"}, 3)],
            ("Workers and credits", "A"): [({}, 1)],
        },
        tmp_path,
    )
    # During a hand-over two replicas may both export for a moment: max, not a sum.
    exporter = next(p for p in pages if p.get("dispatchd_jobs_pending", queue="stuck"))
    check_panels(
        [*pages, exporter],
        {
            ("Jobs pending", "A"): [({}, 40)],
            ("Width vs underway", "B"): [({"queue": "stuck"}, 5)],
            ("Oldest pending job", "A"): [({"queue": "stuck"}, _age(exporter))],
        },
        tmp_path,
    )


def _age(page: Samples) -> float:
    return page.value(AGE, queue="stuck")


async def _never(job: ReceivedJob) -> bytes:
    await asyncio.sleep(3600)
    return b""


async def _exporters(ports: list[int], n: int) -> bool:
    pages: list[Samples] = [await scrape(p) for p in ports]
    return sum(p.get("dispatchd_jobs_pending", queue="stuck") is not None for p in pages) == n


async def test_metrics_page_is_lint_clean(server: DispatchdServer) -> None:
    resp = await fetch(server.observability.metrics_port)
    promtool_check(resp.body)


@pytest.mark.redis_only
async def test_redis_away_shows_in_backend_up_and_call_errors(
    server_config: Config, tmp_path: Path
) -> None:
    """What DispatchdRedisUnreachable alerts on: backend_up 0 while Redis cannot be
    reached, the failed calls counted by script, and 1 again once it answers."""
    proc = RedisProcess(tmp_path / "first")
    config = dataclasses.replace(server_config, redis_url=proc.url)
    try:
        async with serving(DispatchdServer(config)) as srv:
            port = srv.observability.metrics_port
            assert (await scrape(port)).value("dispatchd_backend_up", backend="redis") == 1
            proc.stop()

            async def down() -> bool:
                return (await scrape(port)).value("dispatchd_backend_up", backend="redis") == 0

            await eventually(down, within=15, what="backend_up 0")
            m = await scrape(port)
            errors = {
                (s, k): m.value("dispatchd_redis_call_errors_total", script=s, kind=k)
                for s in m.labels_of("dispatchd_redis_call_errors_total", "script")
                for k in m.labels_of("dispatchd_redis_call_errors_total", "kind")
                if m.get("dispatchd_redis_call_errors_total", script=s, kind=k) is not None
            }
            assert "unreachable" in {k for _, k in errors}, errors
            promtool_check(m.text)
            proc = RedisProcess(tmp_path / "second", port=proc.port)

            async def up() -> bool:
                return (await scrape(port)).value("dispatchd_backend_up", backend="redis") == 1

            await eventually(up, within=15, what="backend_up 1 again")
    finally:
        proc.stop()
