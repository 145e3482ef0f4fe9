"""Bulk actions on the dashboard, on every backend: each confirmation says how many jobs
or queues it touches, nothing changes before it, and each request is bounded."""

from __future__ import annotations

import dataclasses
import re

import pytest

from dispatchd.config import Config
from dispatchd.engine import JobState as EngineState
from dispatchd.runtime import DispatchdServer
from dispatchd.web.bulk import Selection, select
from dispatchd_client import AsyncClient, JobState, RetryPolicy

from .conftest import StartWorker
from .web import act, get, post

COUNT = re.compile(r"<span id=preview-count class=count>([^<]+)</span>")


@pytest.fixture
def server_config(server_config: Config) -> Config:
    return dataclasses.replace(server_config, http_listen="127.0.0.1:0")


async def _preview(port: int, action: str, form: dict[str, str]) -> str:
    """The count the confirmation page shows (the form not yet confirmed)."""
    csrf = (await get(port, "/")).csrf()
    page = await post(port, f"/actions/{action}", {**form, "csrf": csrf})
    assert page.status == 200, page.body
    match = COUNT.search(page.body)
    assert match, page.body
    return match.group(1)


async def _dead_jobs(client: AsyncClient, start_worker: StartWorker, n: int) -> list[str]:
    policy = RetryPolicy(max_attempts=1, min_backoff=0.01, max_backoff=0.01)
    jobs = [await client.submit("d", b"x", retry_policy=policy) for _ in range(n)]

    def fail(job: object) -> str:
        raise RuntimeError("down")

    start_worker(configure=lambda w: w.handler("d")(fail), concurrency=n)
    for job in jobs:
        assert (await client.wait(job.id, timeout=10)).state is JobState.DEAD
    await client.update_queue("d", paused=True)  # retried jobs then wait, visibly
    return [j.id for j in jobs]


async def test_retry_all_dead_previews_its_count_then_retries(
    port: int, client: AsyncClient, start_worker: StartWorker
) -> None:
    ids = await _dead_jobs(client, start_worker, 3)
    assert await _preview(port, "retry_dead", {"queue": "d", "key": ""}) == "3"
    assert {(await client.get(i)).state for i in ids} == {JobState.DEAD}  # not yet
    done = await act(port, "retry_dead", {"queue": "d", "key": ""})
    assert "3 jobs of queue d retried" in done.body
    assert {(await client.get(i)).state for i in ids} == {JobState.PENDING}
    assert await _preview(port, "retry_dead", {"queue": "d"}) == "0"


async def test_cancel_waiting_by_key_then_purge_them(port: int, client: AsyncClient) -> None:
    await client.update_queue("c", width=1, paused=True, create=True)
    mine = [await client.submit("c", b"x", fairness_key="t1") for _ in range(2)]
    other = await client.submit("c", b"x", fairness_key="t2")
    later = await client.submit("c", b"x", fairness_key="t1", delay=600)  # scheduled
    assert await _preview(port, "cancel_pending", {"queue": "c", "key": "t1"}) == "3"
    done = await act(port, "cancel_pending", {"queue": "c", "key": "t1"})
    assert "3 jobs of queue c cancelled" in done.body
    for job in [*mine, later]:
        assert (await client.get(job.id)).state is JobState.CANCELLED
    assert (await client.get(other.id)).state is JobState.PENDING
    assert await _preview(port, "purge", {"queue": "c", "state": "CANCELLED"}) == "3"
    purged = await act(port, "purge", {"queue": "c", "state": "CANCELLED"})
    assert "3 finished jobs of queue c purged" in purged.body
    assert await _preview(port, "purge", {"queue": "c", "state": "ALL"}) == "0"
    assert (await client.get(other.id)).state is JobState.PENDING


async def test_cancel_waiting_covers_jobs_waiting_on_parents(
    port: int, client: AsyncClient
) -> None:
    await client.update_queue("w", width=1, paused=True, create=True)
    parent = await client.submit("w", b"p")
    child = await client.submit("w", b"c", parent_ids=[parent.id], fairness_key="t1")
    grandchild = await client.submit("w", b"g", parent_ids=[child.id])
    assert (await client.get(child.id)).state is JobState.WAITING
    # by key: the one waiting child (and, with it, the job waiting on it)
    assert await _preview(port, "cancel_pending", {"queue": "w", "key": "t1"}) == "1"
    done = await act(port, "cancel_pending", {"queue": "w", "key": "t1"})
    assert "1 jobs of queue w cancelled" in done.body
    assert (await client.get(child.id)).state is JobState.CANCELLED
    assert (await client.get(grandchild.id)).state is JobState.CANCELLED
    assert (await client.get(parent.id)).state is JobState.PENDING
    # all: a parent and its waiting children, those cancelled with their parent counted
    kids = [await client.submit("w", b"k", parent_ids=[parent.id]) for _ in range(2)]
    assert await _preview(port, "cancel_pending", {"queue": "w", "key": ""}) == "3"
    done = await act(port, "cancel_pending", {"queue": "w", "key": ""})
    assert "3 jobs of queue w cancelled" in done.body
    assert "moved on" not in done.body
    for job in [parent, *kids]:
        assert (await client.get(job.id)).state is JobState.CANCELLED


async def test_pause_several_queues(port: int, client: AsyncClient) -> None:
    for name in ("a", "b", "c"):
        await client.update_queue(name, width=1, create=True)
    page = await get(port, "/")
    assert "name='pick:a'" in page.body
    picks = {"pick:a": "1", "pick:b": "1", "paused": "yes"}
    assert await _preview(port, "pause_many", picks) == "2"
    assert not (await client.get_queue("a")).paused
    done = await act(port, "pause_many", picks)
    assert "2 queues paused: a, b" in done.body
    assert [(await client.get_queue(n)).paused for n in "abc"] == [True, True, False]
    await act(port, "pause_many", {"pick:b": "1", "paused": "no"})
    assert not (await client.get_queue("b")).paused


@pytest.mark.parametrize(
    ("action", "form", "status", "message"),
    [
        ("pause_many", {"paused": "yes"}, 400, "tick at least one queue"),
        ("pause_many", {"pick:a": "1", "pick:nope": "1", "paused": "yes"}, 404, "nope"),
        ("pause_many", {"pick:a": "1", "paused": "maybe"}, 400, "paused must be yes or no"),
        ("purge", {"queue": "a", "state": "PENDING"}, 400, "state must be ALL or one of"),
        ("retry_dead", {"key": ""}, 400, "missing form field 'queue'"),
        ("cancel_pending", {"queue": "a", "key": "k" * 2000}, 400, "at most 1024"),
    ],
)
async def test_bad_bulk_input_is_refused_and_changes_nothing(
    port: int,
    client: AsyncClient,
    action: str,
    form: dict[str, str],
    status: int,
    message: str,
) -> None:
    await client.update_queue("a", width=1, create=True)
    job = await client.submit("a", b"x", delay=600)
    csrf = (await get(port, "/")).csrf()
    for confirm in ("", "yes"):
        page = await post(port, f"/actions/{action}", {**form, "csrf": csrf, "confirm": confirm})
        assert page.status == status, page.body
        assert message in page.body
    assert not (await client.get_queue("a")).paused
    assert (await client.get(job.id)).state is JobState.SCHEDULED


async def test_one_request_changes_a_bounded_number_of_jobs(
    server: DispatchdServer, client: AsyncClient
) -> None:
    await client.update_queue("big", width=1, paused=True, create=True)
    for _ in range(5):
        await client.submit("big", b"x")
    sel = Selection("big", (EngineState.PENDING, EngineState.SCHEDULED))
    ids, more = await select(server.backend, sel, limit=3)
    assert (len(ids), more) == (3, True)
    ids, more = await select(server.backend, sel, limit=5)
    assert (len(ids), more) == (5, False)
