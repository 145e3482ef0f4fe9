"""Finding a job on the dashboard (by id, idempotency, ordering or fairness key), a queue's
jobs by state, and payload previews and downloads, on every backend."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
from urllib.parse import urlencode

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd.web.search import find_jobs
from dispatchd_client import AsyncClient, JobState, NewJob, RetryPolicy

from .conftest import StartWorker
from .web import get


@pytest.fixture
def server_config(server_config: Config) -> Config:
    return dataclasses.replace(server_config, http_listen="127.0.0.1:0")


async def _search(port: int, **query: str) -> str:
    page = await get(port, "/search?" + urlencode(query))
    assert page.status == 200, page.body
    return page.body[page.body.index("id=search-summary") :]


async def test_a_job_is_found_by_its_id_and_each_key(port: int, client: AsyncClient) -> None:
    await client.update_queue("other", width=1, create=True)
    target = await client.submit(
        "mail", b"x", idempotency_key="order-17", ordering_key="user-9", fairness_key="tenant-a"
    )
    await client.submit("mail", b"y", ordering_key="user-1")
    by_id = await _search(port, q=target.id)
    assert f"<a href='/jobs/{target.id}'>" in by_id
    assert "<td>id</td>" in by_id
    for text, label in [
        ("order-17", "idempotency key"),
        ("user-9", "ordering key"),
        ("tenant-a", "fairness key"),
    ]:
        found = await _search(port, q=text)
        assert f"<a href='/jobs/{target.id}'>" in found, text
        assert f"<td>{label}</td>" in found
        assert "1</span> found" in found
    # The field narrows: an ordering key is not an idempotency key.
    assert "No job has that id or key" in await _search(port, q="user-9", field="idempotency_key")
    assert "No job has that id or key" in await _search(port, q="user-9", queue="other")
    assert "No job has that id or key" in await _search(port, q="nothing-like-it")
    assert (await get(port, "/search?q=x&field=colour")).status == 400
    assert (await get(port, "/search?q=x&queue=nope")).status == 404


async def test_a_search_for_markup_is_shown_as_text(port: int, client: AsyncClient) -> None:
    await client.submit("mail", b"x", ordering_key="<script>alert(1)</script>")
    page = await get(port, "/search?" + urlencode({"q": "<script>alert(1)</script>"}))
    assert "<script>alert" not in page.body
    assert "value='&lt;script&gt;alert(1)&lt;/script&gt;'" in page.body
    assert "1</span> found" in page.body


async def test_the_key_scan_stops_at_its_cap_and_says_so(
    server: DispatchdServer, client: AsyncClient, port: int
) -> None:
    await client.submit_batch([NewJob("big", b"x") for _ in range(30)])
    last = await client.submit("big", b"x", ordering_key="needle")
    found = await find_jobs(server.backend, "needle", cap=10)
    assert (found.matches, found.scanned, found.cut) == ([], 10, True)
    whole = await find_jobs(server.backend, "needle", cap=100)
    assert [m.job.id for m in whole.matches] == [last.id]
    assert not whole.cut
    assert whole.scanned == 31


async def test_a_queue_filters_its_jobs_by_state(
    port: int, client: AsyncClient, start_worker: StartWorker
) -> None:
    policy = RetryPolicy(max_attempts=1, min_backoff=0.01, max_backoff=0.01)
    dead = await client.submit("f", b"x", retry_policy=policy)

    def fail(job: object) -> str:
        raise RuntimeError("no <luck>")

    start_worker(configure=lambda w: w.handler("f")(fail), concurrency=1)
    assert (await client.wait(dead.id, timeout=10)).state is JobState.DEAD
    await client.update_queue("f", paused=True)
    waiting = await client.submit("f", b"y")
    page = await get(port, "/queues/f?state=DEAD")
    assert page.status == 200
    jobs = page.body[page.body.index("id=jobs") :]
    assert dead.id in jobs
    assert waiting.id not in jobs
    assert "no &lt;luck&gt;" in jobs
    assert "/actions/retry" in jobs
    pending = (await get(port, "/queues/f?state=pending")).body
    assert waiting.id in pending[pending.index("id=jobs") :]
    assert "<option value='DEAD'>" in pending  # the menu on the page
    assert (await get(port, "/queues/f?state=WAITING")).status == 200  # listed since main
    assert (await get(port, "/queues/f?state=LOST")).status == 400


async def test_payload_previews_say_their_size_and_download_whole(
    port: int, client: AsyncClient
) -> None:
    binary = bytes(range(256)) * 64  # 16 KiB, every byte value
    job = await client.submit("p", binary)
    page = (await get(port, f"/jobs/{job.id}")).body
    assert "16384 bytes, shown as hex (first 4096 of 16384 bytes)" in page
    assert "00 01 02 03" in page
    assert f"href='/jobs/{job.id}/payload' download" in page
    whole = await _raw(port, f"/jobs/{job.id}/payload")
    assert whole == binary
    # Text cut inside a character is still text, not hex; NULs make bytes binary.
    text = await client.submit("p", "é" * 3000)
    assert "shown as text (first 4096 of 6000 bytes)" in (await get(port, f"/jobs/{text.id}")).body
    nul = await client.submit("p", b"a\x00b")
    assert "shown as hex" in (await get(port, f"/jobs/{nul.id}")).body
    empty = await client.submit("p", b"")
    assert "0 bytes</p>" in (await get(port, f"/jobs/{empty.id}")).body


async def _raw(port: int, path: str) -> bytes:
    def call() -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            assert r.status == 200
            assert r.getheader("Content-Type") == "application/octet-stream"
            assert (r.getheader("Content-Disposition") or "").startswith("attachment;")
            return r.read()
        finally:
            conn.close()

    return await asyncio.to_thread(call)
