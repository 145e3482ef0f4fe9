"""Dashboard actions against a real server: each goes through confirmation and CSRF, and
its effect is checked through the gRPC API; bad input changes nothing."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd_client import AsyncClient, JobState, ReceivedJob, RetryPolicy

from .conftest import StartWorker
from .helpers import hold_one_job
from .web import act, get, post


@pytest.fixture
def server_config(server_config: Config) -> Config:
    return dataclasses.replace(server_config, http_listen="127.0.0.1:0")


async def test_pause_resume_width_rate(port: int, client: AsyncClient) -> None:
    await client.update_queue("q", width=2, create=True)
    done = await act(port, "pause", {"queue": "q"})
    assert done.status == 200
    assert "paused" in done.body
    assert (await client.get_queue("q")).paused
    await act(port, "resume", {"queue": "q"})
    assert not (await client.get_queue("q")).paused
    await act(port, "width", {"queue": "q", "width": "7"})
    assert (await client.get_queue("q")).width == 7
    await act(port, "rate", {"queue": "q", "per_second": "2.5", "burst": "3"})
    rate = (await client.get_queue("q")).rate
    assert rate is not None
    assert (rate.per_second, rate.burst) == (2.5, 3)
    await act(port, "rate", {"queue": "q", "per_second": "", "burst": "0"})
    assert (await client.get_queue("q")).rate is None


async def test_an_action_needs_confirmation(port: int, client: AsyncClient) -> None:
    await client.update_queue("q", width=4, create=True)
    page = await get(port, "/queues/q")
    first = await post(port, "/actions/pause", {"queue": "q", "csrf": page.csrf()})
    assert first.status == 200
    assert "Confirm" in first.body
    assert not (await client.get_queue("q")).paused


async def test_csrf_is_required_and_checked(port: int, client: AsyncClient) -> None:
    await client.update_queue("q", width=4, create=True)
    form = {"queue": "q", "confirm": "yes"}
    assert (await post(port, "/actions/pause", form)).status == 403
    forged = await post(port, "/actions/pause", {**form, "csrf": "abcd.0123"})
    assert forged.status == 403
    assert "CSRF" in forged.body
    assert not (await client.get_queue("q")).paused


@pytest.mark.parametrize(
    ("action", "form", "message"),
    [
        ("width", {"queue": "q", "width": "-1"}, "width must be 0..1000000"),
        ("width", {"queue": "q", "width": "wide"}, "width must be an integer"),
        ("rate", {"queue": "q", "per_second": "-3", "burst": "0"}, "per_second must be > 0"),
        ("rate", {"queue": "q", "per_second": "x", "burst": "0"}, "must be a number"),
        ("pause", {"queue": "nope"}, "nope"),
        ("pause", {}, "missing form field 'queue'"),
        ("reprioritize", {"job": "nope", "priority": "1"}, "nope"),
        ("explode", {"queue": "q"}, "unknown action"),
    ],
)
async def test_bad_input_is_refused_with_a_message_and_changes_nothing(
    port: int, client: AsyncClient, action: str, form: dict[str, str], message: str
) -> None:
    await client.update_queue("q", width=4, create=True)
    csrf = (await get(port, "/")).csrf()
    for confirm in ("", "yes"):
        page = await post(port, f"/actions/{action}", {**form, "csrf": csrf, "confirm": confirm})
        assert page.status in (400, 404), page.body
        assert message in page.body
    q = await client.get_queue("q")
    assert (q.width, q.paused, q.rate) == (4, False, None)


async def test_cancel_and_reprioritize(port: int, client: AsyncClient) -> None:
    job = await client.submit("q", b"x")
    await act(port, "reprioritize", {"job": job.id, "priority": "5"})
    assert (await client.get(job.id)).priority == 5
    page = await act(port, "cancel", {"job": job.id})
    assert "CANCELLED" in page.body
    assert (await client.get(job.id)).state is JobState.CANCELLED


async def test_dead_job_shows_its_error_and_retry_revives_it(
    port: int, client: AsyncClient, start_worker: StartWorker
) -> None:
    healthy = asyncio.Event()

    async def handler(job: ReceivedJob) -> str:
        if not healthy.is_set():
            raise RuntimeError("downstream <is> down")
        return "ok"

    policy = RetryPolicy(max_attempts=1, min_backoff=0.01, max_backoff=0.01)
    job = await client.submit("d", b"x", retry_policy=policy)
    start_worker(configure=lambda w: w.handler("d")(handler), worker_id="w<1>", concurrency=1)
    assert (await client.wait(job.id, timeout=10)).state is JobState.DEAD
    queue_page = await get(port, "/queues/d")
    assert "downstream &lt;is&gt; down" in queue_page.body
    workers = await get(port, "/workers")
    assert "w&lt;1&gt;" in workers.body
    assert "<td>d</td>" in workers.body
    healthy.set()
    await act(port, "retry", {"job": job.id})
    assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED


async def test_underway_jobs_show_worker_and_lease(
    port: int, client: AsyncClient, start_worker: StartWorker
) -> None:
    job, release = await hold_one_job(client, start_worker, "u", worker_id="holder", concurrency=1)
    page = await get(port, "/queues/u")
    underway = page.body[page.body.index("id=underway") :]
    assert job.id in underway
    assert "<td>holder</td>" in underway
    release.set()


async def test_drain_from_the_dashboard_stops_the_server(
    port: int, server: DispatchdServer
) -> None:
    page = await act(port, "drain", {})
    assert "drain started" in page.body
    await asyncio.wait_for(server.stopped.wait(), 10)


async def test_the_schedules_page_lists_next_fires_and_last_outcomes(
    port: int, client: AsyncClient
) -> None:
    from dispatchd_client import NewJob, ScheduleSpec

    empty = await get(port, "/schedules")
    assert empty.status == 200
    assert "No schedules" in empty.body
    await client.create_schedule("nightly", ScheduleSpec.of("30 2 * * *"), NewJob("q"))
    await client.create_schedule(
        "beat", ScheduleSpec.of(every=60), NewJob("q"), paused=True, note="<b>moving</b>"
    )
    await client.trigger_schedule("beat")
    page = await get(port, "/schedules")
    assert page.status == 200
    assert "yes: &lt;b&gt;moving&lt;/b&gt;" in page.body  # escaped, like every name
    assert "cron 30 2 * * *" in page.body
    assert "SUBMITTED" in page.body
    assert "every 60s" in page.body


async def test_delete_queue_after_confirmation(port: int, client: AsyncClient) -> None:
    await client.update_queue("old", width=0, create=True)
    job = await client.submit("old", b"x")
    page = await get(port, "/queues/old")
    assert "/actions/delete_queue" in page.body
    first = await post(port, "/actions/delete_queue", {"queue": "old", "csrf": page.csrf()})
    assert "Confirm" in first.body
    assert (await client.get_queue("old")).pending_count == 1  # not before the confirmation
    refused = await act(port, "delete_queue", {"queue": "old"})
    assert refused.status == 409
    assert "is not empty: it has 1 pending job" in refused.body
    await client.cancel(job.id)
    done = await act(port, "delete_queue", {"queue": "old"})
    assert done.status == 200
    assert "queue old deleted with 1 finished jobs" in done.body
    assert [q.name for q in await client.list_queues()] == []
