"""Dashboard figures that come from running work: sparklines, the workers page, and a
drain with a chosen grace, against a real server with a real Worker."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd_client import AsyncClient, JobState

from .conftest import StartWorker
from .helpers import eventually, hold_one_job
from .web import act, get, post


@pytest.fixture
def server_config(server_config: Config) -> Config:
    # Short buckets: a finished job shows in a complete bucket within a fraction of a second.
    return dataclasses.replace(server_config, http_listen="127.0.0.1:0", dashboard_bucket=0.1)


async def _queues(port: int) -> dict[str, dict[str, object]]:
    data = json.loads((await get(port, "/api/queues")).body)
    return {q["name"]: q for q in data["queues"]}


async def test_sparklines_show_finished_jobs_and_their_wait(
    port: int, client: AsyncClient, start_worker: StartWorker
) -> None:
    await client.update_queue("spark", width=5, create=True)
    empty = (await _queues(port))["spark"]
    assert empty["bucket_seconds"] == 0.1
    assert empty["throughput"] == [0.0] * 59
    assert empty["wait"] == [None] * 59
    jobs = [await client.submit("spark", b"x") for _ in range(5)]
    start_worker(configure=lambda w: w.handler("spark")(lambda job: "ok"), concurrency=5)
    for job in jobs:
        assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED

    async def shown() -> bool:
        q = (await _queues(port))["spark"]
        assert isinstance(q["throughput"], list)
        assert isinstance(q["wait"], list)
        return sum(q["throughput"]) * 0.1 >= 5 and any(w is not None for w in q["wait"])

    await eventually(shown, what="5 finished jobs in the throughput ring")
    page = await get(port, "/")
    row = page.body[page.body.index("<a href='/queues/spark'>") :]
    assert "<svg class='spark throughput'" in row
    assert "<svg class='spark wait'" in row
    assert "<path d='M0.0 23.0" in row  # the line starts at the bottom: no work back then


async def test_no_observer_without_the_dashboard(server_config: Config) -> None:
    srv = DispatchdServer(dataclasses.replace(server_config, http_listen="0"))
    assert srv.trends is None


async def test_workers_page_shows_labels_credits_and_held_jobs(
    port: int, client: AsyncClient, start_worker: StartWorker
) -> None:
    job, release = await hold_one_job(
        client,
        start_worker,
        "held",
        worker_id="w<1>",
        labels={"zone": "<eu>", "host": "a"},
        concurrency=3,
    )
    body = (await get(port, "/workers")).body
    row = body[body.index("w&lt;1&gt;") :]
    assert "<td>host=a, zone=&lt;eu&gt;</td>" in row
    assert "<td>held</td>" in row
    assert "<td>2 free of 3</td>" in row
    assert f"<td>1: <a href='/jobs/{job.id}'>{job.id}</a></td>" in row
    release.set()


@pytest.mark.parametrize("grace", ["-1", "abc", "nan", "inf", "3601"])
async def test_a_bad_drain_grace_is_refused_and_changes_nothing(
    port: int, server: DispatchdServer, grace: str
) -> None:
    page = await get(port, "/")
    refused = await post(port, "/actions/drain", {"grace": grace, "csrf": page.csrf()})
    assert refused.status == 400
    assert "grace must be" in refused.body
    confirmed = {"grace": grace, "csrf": page.csrf(), "confirm": "yes"}
    assert (await post(port, "/actions/drain", confirmed)).status == 400
    assert not server.backend.draining


async def test_drain_with_a_chosen_grace_takes_jobs_back_after_it(
    port: int, server: DispatchdServer, client: AsyncClient, start_worker: StartWorker
) -> None:
    _, never = await hold_one_job(client, start_worker, "slow", concurrency=1)
    page = await act(port, "drain", {"grace": "0.2"})
    assert "underway jobs get 0.2 s to end" in page.body
    # The server's --drain-grace is 25 s: stopping within 10 s means the form's grace held.
    await asyncio.wait_for(server.stopped.wait(), 10)
    never.set()


async def test_a_second_drain_says_the_first_grace_stays(
    port: int, server: DispatchdServer, client: AsyncClient, start_worker: StartWorker
) -> None:
    _, never = await hold_one_job(client, start_worker, "slow", concurrency=1)
    first = await act(port, "drain", {"grace": "3"})
    assert "underway jobs get 3 s to end" in first.body
    second = await act(port, "drain", {"grace": "600"})
    assert "a drain is already under way" in second.body
    assert "600" not in second.body
    await asyncio.wait_for(server.stopped.wait(), 10)
    never.set()
