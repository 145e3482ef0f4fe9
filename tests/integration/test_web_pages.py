"""The dashboard's pages against a real server: content, escaping, paging, headers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer, StartError
from dispatchd_client import AsyncClient, JobState

from .conftest import StartWorker
from .web import get, post


@pytest.fixture
def server_config(server_config: Config) -> Config:
    return dataclasses.replace(server_config, http_listen="127.0.0.1:0")


def port(server: DispatchdServer) -> int:
    assert server.web is not None
    return server.web.port


async def test_queues_page_lists_counts_and_the_json_agrees(
    server: DispatchdServer, client: AsyncClient
) -> None:
    await client.update_queue("mail", width=3, create=True)
    for _ in range(4):
        await client.submit("mail", b"x")
    page = await get(port(server), "/")
    assert page.status == 200
    assert "<a href='/queues/mail'>mail</a>" in page.body
    assert "<td>4</td>" in page.body
    assert "<td>3</td>" in page.body
    assert '<script src="/static/dashboard.js"' in page.body
    assert "script-src 'self'" in page.headers["content-security-policy"]
    data = json.loads((await get(port(server), "/api/queues")).body)
    (mail,) = data["queues"]
    assert mail["name"] == "mail"
    assert mail["pending"] == 4
    assert mail["width"] == 3
    js = await get(port(server), "/static/dashboard.js")
    assert js.status == 200
    assert js.headers["content-type"].startswith("text/javascript")


async def test_a_script_payload_and_headers_are_shown_as_text(
    server: DispatchdServer, client: AsyncClient
) -> None:
    evil = "<script>alert(1)</script>"
    job = await client.submit("q", evil.encode(), headers={"x": "'><img src=x>"})
    pages = [
        await get(port(server), "/"),
        await get(port(server), "/queues/q"),
        await get(port(server), f"/jobs/{job.id}"),
    ]
    for page in pages:
        assert page.status == 200
        assert "<script>alert" not in page.body
        assert "<img" not in page.body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[2].body
    assert "&#39;&gt;&lt;img src=x&gt;" in pages[2].body
    # A name the engine refuses is a clean 400 whose text is not HTML.
    bad = await get(port(server), "/queues/%3Cscript%3E")
    assert bad.status == 400
    assert bad.headers["content-type"].startswith("text/plain")


async def test_queue_page_pages_pending_jobs_in_dispatch_order(
    server: DispatchdServer, client: AsyncClient
) -> None:
    low = [await client.submit("q", b"", priority=0) for _ in range(55)]
    high = await client.submit("q", b"", priority=9)
    first = await get(port(server), "/queues/q")
    assert first.status == 200
    assert first.body.index(high.id) < first.body.index(low[0].id)
    assert low[-1].id not in first.body
    start = first.body.index("?page=") + len("?page=")
    token = first.body[start : first.body.index("'", start)]
    second = await get(port(server), f"/queues/q?page={token}")
    assert low[-1].id in second.body
    assert high.id not in second.body


async def test_job_page_shows_fields_and_previews_json_and_binary(
    server: DispatchdServer, client: AsyncClient
) -> None:
    as_json = await client.submit("q", b'{"a":[1,2]}', content_type="application/json")
    binary = await client.submit("q", b"\xff\x00\x01")
    page = await get(port(server), f"/jobs/{as_json.id}")
    assert "PENDING" in page.body
    assert "application/json" in page.body
    assert "&#34;a&#34;: [\n    1," in page.body  # indented JSON
    assert "ff 00 01" in (await get(port(server), f"/jobs/{binary.id}")).body
    big = await client.submit("q", b"y" * 10_000)
    assert "first 4096 of 10000 bytes" in (await get(port(server), f"/jobs/{big.id}")).body


async def test_workers_page_and_not_found_and_methods(server: DispatchdServer) -> None:
    assert "No workers" in (await get(port(server), "/workers")).body
    assert (await get(port(server), "/jobs/nope")).status == 400  # not a job id at all
    async with AsyncClient(f"127.0.0.1:{server.port}") as client:
        job = await client.submit("q", b"x")
    unknown = job.id[:20] + "000000" + job.id[26:]
    assert (await get(port(server), f"/jobs/{unknown}")).status == 404
    assert (await get(port(server), "/queues/nope")).status == 404
    assert (await get(port(server), "/elsewhere")).status == 404
    assert (await post(port(server), "/", {})).status == 405
    assert (await get(port(server), "/actions/pause")).status == 405


async def test_http_listen_0_serves_no_dashboard(server_config: Config) -> None:
    srv = DispatchdServer(dataclasses.replace(server_config, http_listen="0"))
    await srv.start()
    try:
        assert srv.web is None
    finally:
        await srv.stop_now()


async def test_a_taken_http_port_stops_the_start(server: DispatchdServer, tmp_path: Path) -> None:
    taken = f"127.0.0.1:{port(server)}"
    config = Config(listen="127.0.0.1:0", metrics_listen="0", http_listen=taken)
    srv = DispatchdServer(dataclasses.replace(config, data_dir=tmp_path / "other"))
    with pytest.raises(StartError, match="--http-listen"):
        await srv.start()


async def test_a_job_page_with_a_1_mib_result_stays_small(
    server: DispatchdServer, client: AsyncClient, start_worker: StartWorker
) -> None:
    result = b"r" * (1 << 20)
    job = await client.submit("big", b"x")
    start_worker(configure=lambda w: w.handler("big")(lambda j: result))
    assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
    page = await get(port(server), f"/jobs/{job.id}")
    assert page.status == 200
    assert len(page.body) < 32 * 1024
    assert f"first 4096 of {1 << 20} bytes" in page.body
