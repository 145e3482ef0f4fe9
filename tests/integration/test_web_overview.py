"""The overview on every backend: fleet totals, queues sorted by what needs attention,
the live chart's series, and the JSON the workers page polls."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from dispatchd.config import Config
from dispatchd.web import pages
from dispatchd_client import AsyncClient, JobState, Rate, ReceivedJob, RetryPolicy

from .conftest import StartWorker
from .helpers import eventually, hold_one_job
from .web import get


@pytest.fixture
def server_config(server_config: Config) -> Config:
    # Short buckets: finished jobs show in a complete bucket within a fraction of a second.
    return dataclasses.replace(server_config, http_listen="127.0.0.1:0", dashboard_bucket=0.1)


async def _overview(port: int) -> dict[str, Any]:
    page = await get(port, "/api/overview")
    assert page.status == 200, page.body
    data: dict[str, Any] = json.loads(page.body)
    return data


async def test_queues_are_sorted_by_what_needs_attention(
    port: int, client: AsyncClient, start_worker: StartWorker
) -> None:
    await client.update_queue("a-idle", width=1, create=True)
    await client.update_queue("b-paused", width=1, paused=True, create=True)
    await client.submit("b-paused", b"x")
    for _ in range(2):
        await client.submit("c-stuck", b"x")  # no worker serves it
    # A rate of one job an hour holds the backlog past its burst (a worker would get one).
    await client.update_queue("d-slow", width=5, rate=Rate(1 / 3600, 1), create=True)
    start_worker(configure=lambda w: w.handler("d-slow")(lambda job: "ok"))
    for _ in range(4):
        await client.submit("d-slow", b"x")

    async def held() -> bool:
        return (await client.get_queue("d-slow")).pending_count == 3

    await eventually(held, what="the first d-slow job run, three held by the rate")
    data = await _overview(port)
    assert [q["name"] for q in data["queues"]] == ["c-stuck", "d-slow", "b-paused", "a-idle"]
    reasons = [q["attention"] for q in data["queues"]]
    assert reasons == [
        "stuck: 2 waiting, no workers",
        "throttled: 3 waiting at 0.000277778/s",
        "paused, 1 waiting",
        "",
    ]
    totals = data["totals"]
    assert (totals["queues"], totals["pending"], totals["underway"]) == (4, 6, 0)
    page = (await get(port, "/")).body
    assert page.index("'/queues/c-stuck'") < page.index("'/queues/b-paused'")
    assert "<td class=attention>stuck: 2 waiting, no workers</td>" in page
    assert "<dd data-total=pending>6</dd>" in page


async def test_the_chart_counts_dispatched_succeeded_and_failed(
    port: int, client: AsyncClient, start_worker: StartWorker
) -> None:
    policy = RetryPolicy(max_attempts=1, min_backoff=0.01, max_backoff=0.01)

    async def handle(job: ReceivedJob) -> str:
        if job.payload == b"bad":
            raise RuntimeError("no")
        return "ok"

    jobs = [await client.submit("ch", b"good") for _ in range(4)]
    jobs += [await client.submit("ch", b"bad", retry_policy=policy) for _ in range(2)]
    start_worker(configure=lambda w: w.handler("ch")(handle), concurrency=4)
    for job in jobs:
        assert (await client.wait(job.id, timeout=10)).state in (JobState.SUCCEEDED, JobState.DEAD)

    async def charted() -> bool:
        series = (await _overview(port))["chart"]["series"]
        sums = {k: round(sum(v) * 0.1) for k, v in series.items()}
        return sums == {"dispatched": 6, "succeeded": 4, "failed": 2}

    await eventually(charted, what="6 dispatched, 4 succeeded, 2 failed on the chart")
    data = await _overview(port)
    assert data["totals"]["dead_recent"] == 2
    assert (data["totals"]["dead"], data["totals"]["failed"]) == (2, 0)  # the backend's count
    assert data["queues"][0]["attention"].startswith("2 dead in the last ")
    page = (await get(port, "/")).body
    for name in ("dispatched", "succeeded", "failed"):
        assert f"<path class='{name}' data-series='{name}' d='M0.0 " in page


async def test_the_workers_json_lists_held_jobs(
    port: int, client: AsyncClient, start_worker: StartWorker
) -> None:
    job, release = await hold_one_job(
        client, start_worker, "held", worker_id="w<1>", labels={"zone": "eu"}, concurrency=2
    )
    (w,) = json.loads((await get(port, "/api/workers")).body)["workers"]
    assert (w["worker_id"], w["labels"], w["queues"]) == ("w<1>", "zone=eu", "held")
    assert (w["held"], w["held_jobs"], w["credits"]) == (1, [job.id], "1 free of 2")
    release.set()


async def test_the_overview_lists_the_queues_needing_attention_most(
    port: int, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "OVERVIEW_ROWS", 2)
    for name in ("a", "b", "c"):
        await client.update_queue(name, width=1, create=True)
    await client.submit("c", b"x")  # stuck: no workers
    page = (await get(port, "/")).body
    assert "'/queues/c'" in page
    assert "'/queues/a'" in page
    assert "'/queues/b'" not in page
    assert "The 2 queues that need attention most; 1 more." in page
    assert "'/queues/b'" in (await get(port, "/?all=1")).body
    assert len((await _overview(port))["queues"]) == 2
    assert (await _overview(port))["totals"]["queues"] == 3
    every = json.loads((await get(port, "/api/overview?all=1")).body)
    assert len(every["queues"]) == 3


async def test_the_queue_page_polls_only_its_own_queue(port: int, client: AsyncClient) -> None:
    for name in ("one", "two"):
        await client.update_queue(name, width=1, create=True)
    data = json.loads((await get(port, "/api/queues?queue=two")).body)
    assert [q["name"] for q in data["queues"]] == ["two"]
    assert (await get(port, "/api/queues?queue=nope")).status == 404


async def test_the_job_json_has_the_fields_the_job_page_refreshes(
    port: int, client: AsyncClient
) -> None:
    job = await client.submit("j", b"x", priority=3)
    data = json.loads((await get(port, f"/api/jobs/{job.id}")).body)
    assert data["id"] == job.id
    assert not data["finished"]
    assert (data["fields"]["State"], data["fields"]["Priority"]) == ("PENDING", "3")
    assert "Queue" not in data["fields"]  # fixed fields are not polled
    assert data["fields"]["Progress"] == "-"  # no report yet
    assert (await get(port, "/api/jobs/nope")).status == 400
