"""list_jobs paging and update_queue."""

from __future__ import annotations

import base64

import pytest

from dispatchd.engine import (
    Engine,
    InvalidArgument,
    JobFailure,
    JobState,
    NotFound,
)

from .engine_helpers import Connect, Dispatch, Submit


def walk(engine: Engine, queue: str, state: JobState, page_size: int) -> list[list[str]]:
    """Every page, following tokens until the empty one."""
    pages: list[list[str]] = []
    token = ""
    for _ in range(1000):
        jobs, token = engine.list_jobs(queue, state, page_size, token)
        pages.append([j.id for j in jobs])
        if not token:
            return pages
    raise AssertionError("page tokens never ran out")


def test_pending_pages_in_dispatch_order(engine: Engine, submit: Submit) -> None:
    a = submit(priority=0)[0]
    b = submit(priority=2)[0]
    c = submit(priority=1)[0]
    d = submit(priority=2)[0]
    e = submit(priority=0)[0]
    pages = walk(engine, "q", JobState.PENDING, 2)
    assert pages == [[b.id, d.id], [c.id, a.id], [e.id]]


def test_exact_multiple_of_page_size_ends_with_empty_token(engine: Engine, submit: Submit) -> None:
    jobs = submit(n=4)
    pages = walk(engine, "q", JobState.PENDING, 2)
    assert pages == [[jobs[0].id, jobs[1].id], [jobs[2].id, jobs[3].id]]


def test_page_size_zero_means_default(engine: Engine, submit: Submit) -> None:
    submit(n=150)
    jobs, token = engine.list_jobs("q", JobState.PENDING, 0, "")
    assert len(jobs) == 100
    assert token
    rest, token = engine.list_jobs("q", JobState.PENDING, 0, token)
    assert len(rest) == 50
    assert token == ""


def test_max_page_size(engine: Engine, submit: Submit) -> None:
    submit(n=3)
    jobs, token = engine.list_jobs("q", JobState.PENDING, 1000, "")
    assert len(jobs) == 3
    assert token == ""


def test_empty_queue_lists_nothing(engine: Engine, connect: Connect) -> None:
    connect("q")
    assert engine.list_jobs("q", JobState.UNSPECIFIED, 10, "") == ([], "")


def test_pending_paging_survives_removal_of_last_seen(engine: Engine, submit: Submit) -> None:
    jobs = submit(n=5)
    first, token = engine.list_jobs("q", JobState.PENDING, 2, "")
    assert [j.id for j in first] == [jobs[0].id, jobs[1].id]
    engine.cancel(jobs[1].id, 1.0)
    rest, token = engine.list_jobs("q", JobState.PENDING, 10, token)
    assert [j.id for j in rest] == [j.id for j in jobs[2:]]
    assert token == ""


def make_mixed(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> dict[JobState, list[str]]:
    """Two pending, two underway, one of each finished state, on queue q."""
    jobs = submit(n=7)
    w = connect(credits=5)
    leases = dispatch(0.0)
    assert [lease.job for lease in leases] == jobs[:5]
    engine.complete(w, jobs[0].id, leases[0].lease_id, b"ok", 1.0)
    engine.complete(w, jobs[1].id, leases[1].lease_id, JobFailure("bad"), 2.0)
    engine.cancel(jobs[2].id, 3.0)  # underway -> cancelled, lease still held
    engine.cancel(jobs[5].id, 4.0)  # pending -> cancelled
    engine.complete(w, jobs[2].id, leases[2].lease_id, b"", 5.0)
    return {
        JobState.PENDING: [jobs[6].id],
        JobState.UNDERWAY: [jobs[3].id, jobs[4].id],
        JobState.SUCCEEDED: [jobs[0].id],
        JobState.FAILED: [jobs[1].id],
        JobState.CANCELLED: [jobs[2].id, jobs[5].id],
    }


def test_filter_by_state(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    expected = make_mixed(engine, submit, connect, dispatch)
    for state, ids in expected.items():
        jobs, token = engine.list_jobs("q", state, 100, "")
        assert [j.id for j in jobs] == ids, state
        assert all(j.state is state for j in jobs)
        assert token == ""


@pytest.mark.parametrize("page_size", [1, 2, 3, 100])
def test_unspecified_walks_pending_underway_finished(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch, page_size: int
) -> None:
    expected = make_mixed(engine, submit, connect, dispatch)
    order = [
        *expected[JobState.PENDING],
        *expected[JobState.UNDERWAY],
        *expected[JobState.SUCCEEDED],
        *expected[JobState.FAILED],
        *expected[JobState.CANCELLED],
    ]
    pages = walk(engine, "q", JobState.UNSPECIFIED, page_size)
    assert [i for page in pages for i in page] == order
    assert all(len(page) == page_size for page in pages[:-1])


def test_underway_in_dispatch_order_across_pages(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=2, priority=0)
    connect(credits=10)
    first = dispatch(0.0)
    submit(n=3, priority=5, now=1.0)
    second = dispatch(1.0)
    order = [lease.job.id for lease in first + second]
    pages = walk(engine, "q", JobState.UNDERWAY, 2)
    assert [i for page in pages for i in page] == order
    assert len(pages) == 3


def test_finished_in_finish_order(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=5)
    w = connect(credits=10)
    leases = dispatch(0.0)
    for t, i in enumerate([3, 0, 4, 1, 2]):
        engine.complete(w, leases[i].job.id, leases[i].lease_id, b"", float(t))
    pages = walk(engine, "q", JobState.SUCCEEDED, 2)
    assert [i for page in pages for i in page] == [leases[i].job.id for i in [3, 0, 4, 1, 2]]


@pytest.mark.parametrize("token", ["garbage!!", "x", "Zm9v", "\u00e9\u00e9", "====", "MXxx"])
def test_bad_token(engine: Engine, submit: Submit, token: str) -> None:
    submit()
    with pytest.raises(InvalidArgument):
        engine.list_jobs("q", JobState.PENDING, 10, token)


def test_token_with_wrong_version(engine: Engine, submit: Submit) -> None:
    submit()
    raw = base64.urlsafe_b64encode(b"9|q|1|1|0|1").decode().rstrip("=")
    with pytest.raises(InvalidArgument):
        engine.list_jobs("q", JobState.PENDING, 10, raw)


def test_token_from_other_queue(engine: Engine, submit: Submit) -> None:
    submit("a", n=3)
    submit("b", n=3)
    _, token = engine.list_jobs("a", JobState.PENDING, 1, "")
    assert token
    with pytest.raises(InvalidArgument, match="another queue"):
        engine.list_jobs("b", JobState.PENDING, 1, token)


def test_token_from_other_state(engine: Engine, submit: Submit) -> None:
    submit(n=3)
    _, token = engine.list_jobs("q", JobState.PENDING, 1, "")
    with pytest.raises(InvalidArgument):
        engine.list_jobs("q", JobState.UNSPECIFIED, 1, token)


@pytest.mark.parametrize("page_size", [-1, 1001])
def test_bad_page_size(engine: Engine, submit: Submit, page_size: int) -> None:
    submit()
    with pytest.raises(InvalidArgument):
        engine.list_jobs("q", JobState.PENDING, page_size, "")


def test_list_unknown_queue(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.list_jobs("nope", JobState.PENDING, 10, "")
    with pytest.raises(InvalidArgument):
        engine.list_jobs("bad name", JobState.PENDING, 10, "")


# ---- update_queue -----------------------------------------------------------


def test_update_queue_changes_settings(engine: Engine, submit: Submit) -> None:
    submit()
    view = engine.update_queue("q", width=3, paused=True, lease_seconds=12.5)
    assert (view.settings.width, view.settings.paused, view.settings.lease_seconds) == (
        3,
        True,
        12.5,
    )
    view = engine.update_queue("q")  # nothing named, nothing changed
    assert (view.settings.width, view.settings.paused, view.settings.lease_seconds) == (
        3,
        True,
        12.5,
    )
    assert engine.get_queue("q") == view


def test_update_queue_negative_width(engine: Engine, submit: Submit) -> None:
    submit()
    before = engine.get_queue("q")
    with pytest.raises(InvalidArgument):
        engine.update_queue("q", width=-1, paused=True, lease_seconds=5.0)
    assert engine.get_queue("q") == before


def test_update_queue_unknown(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.update_queue("nope", width=3)
    assert engine.list_queues() == []


def test_update_queue_create(engine: Engine) -> None:
    view = engine.update_queue("new", width=0, create=True)
    assert view.name == "new"
    assert view.settings.width == 0
    assert view.settings.lease_seconds == 30.0
    assert view.pending_count == 0
    again = engine.update_queue("new", paused=True, create=True)
    assert again.settings.width == 0
    assert again.settings.paused


def test_update_queue_bad_name(engine: Engine) -> None:
    with pytest.raises(InvalidArgument):
        engine.update_queue("", width=1, create=True)
    assert engine.list_queues() == []


@pytest.mark.parametrize("seconds", [1.0, 3600.0, 30.0])
def test_lease_seconds_in_bounds(engine: Engine, seconds: float) -> None:
    view = engine.update_queue("q", lease_seconds=seconds, create=True)
    assert view.settings.lease_seconds == seconds


@pytest.mark.parametrize("seconds", [0.0, 0.999, 3600.5, -1.0])
def test_lease_seconds_out_of_bounds(engine: Engine, submit: Submit, seconds: float) -> None:
    submit()
    before = engine.get_queue("q")
    with pytest.raises(InvalidArgument, match="lease_duration"):
        engine.update_queue("q", lease_seconds=seconds, width=1)
    assert engine.get_queue("q") == before
    with pytest.raises(InvalidArgument):
        engine.update_queue("other", lease_seconds=seconds, create=True)
    assert [v.name for v in engine.list_queues()] == ["q"]


def test_update_queue_new_lease_seconds_for_new_dispatches(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=2)
    connect(credits=10)
    engine.update_queue("q", width=1)
    [a] = dispatch(0.0)
    engine.update_queue("q", lease_seconds=5.0, width=2)
    [b] = dispatch(1.0)
    assert a.deadline == 30.0  # unchanged
    assert b.deadline == 6.0
