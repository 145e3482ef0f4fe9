"""The dashboard of one Redis replica shows the whole fleet: every replica's workers with
the replica that holds each stream, and fleet-wide totals."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from dispatchd.config import Config
from dispatchd_client import AsyncClient, ReceivedJob
from tests.inproc import base_config
from tests.integration.helpers import eventually
from tests.integration.web import get

from .conftest import StartWorker, start_server

pytestmark = pytest.mark.redis_only


def _replica_config(tmp_path: Path, redis_url: str) -> Config:
    """A Redis replica with its dashboard on a free port (the second replica turns it off)."""
    return replace(
        base_config(tmp_path),
        backend="redis",
        redis_url=redis_url,
        data_dir=None,
        http_listen="127.0.0.1:0",
    )


async def test_one_replicas_dashboard_shows_every_replicas_workers(
    tmp_path: Path, redis_url: str, workers: StartWorker, backend: str
) -> None:
    config = _replica_config(tmp_path, redis_url)
    a = await start_server(config)
    b = await start_server(replace(config, http_listen="0"))

    async def handle(job: ReceivedJob) -> bytes:
        return b"ok"

    try:
        for name, replica in (("on-a", a), ("on-b", b)):
            workers(
                f"127.0.0.1:{replica.port}",
                configure=lambda w: w.handler("fleet")(handle),
                worker_id=name,
            )
        assert a.web is not None
        port = a.web.port

        async def both() -> bool:
            data = json.loads((await get(port, "/api/workers")).body)
            return {w["worker_id"] for w in data["workers"]} == {"on-a", "on-b"}

        await eventually(both, what="both replicas' workers on replica a's dashboard")
        data = json.loads((await get(port, "/api/workers")).body)
        replicas = {w["worker_id"]: w["replica"] for w in data["workers"]}
        assert replicas["on-a"]
        assert replicas["on-b"]
        assert replicas["on-a"] != replicas["on-b"]
        page = (await get(port, "/workers")).body
        assert "<th>Replica</th>" in page
        assert "2 workers on 2 replicas" in page
        async with AsyncClient(f"127.0.0.1:{b.port}") as client:
            await client.update_queue("fleet", paused=True, create=True)
            await client.submit("fleet", b"x")  # through replica b
        overview = json.loads((await get(port, "/api/overview")).body)
        assert overview["totals"]["pending"] == 1
        assert overview["totals"]["dead"] == 0
        assert overview["totals"]["replicas"] == 2
        assert "Replicas with workers" in (await get(port, "/")).body
    finally:
        await b.stop_now()
        await a.stop_now()


async def test_the_chart_of_one_replica_counts_the_jobs_another_replicas_workers_ran(
    tmp_path: Path, redis_url: str, workers: StartWorker, backend: str
) -> None:
    config = replace(_replica_config(tmp_path, redis_url), dashboard_bucket=0.2)
    a = await start_server(config)
    b = await start_server(replace(config, http_listen="0"))  # no dashboard: counts anyway

    async def handle(job: ReceivedJob) -> bytes:
        return b"ok"

    try:
        workers(
            f"127.0.0.1:{b.port}", configure=lambda w: w.handler("on-b")(handle), worker_id="b1"
        )
        async with AsyncClient(f"127.0.0.1:{b.port}") as client:
            jobs = [await client.submit("on-b", b"x") for _ in range(5)]
            for job in jobs:
                assert (await client.wait(job.id, timeout=10)).state.name == "SUCCEEDED"
        assert a.web is not None
        port = a.web.port

        async def charted() -> bool:
            series = json.loads((await get(port, "/api/overview")).body)["chart"]["series"]
            sums = {k: round(sum(v) * 0.2) for k, v in series.items()}
            return sums == {"dispatched": 5, "succeeded": 5, "failed": 0}

        await eventually(charted, what="replica b's 5 jobs on replica a's chart")
        assert "every replica" in (await get(port, "/")).body
    finally:
        await b.stop_now()
        await a.stop_now()
