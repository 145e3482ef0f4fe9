"""Workflows (docs/workflows.md), the same on both backends: progress reports (rate-limited
per job), batches (live counts, close, cancel, WaitBatch, callbacks submitted exactly once)
and dependencies (WAITING children, a DAG in dependency order under width, a failed parent
cancelling its subtree)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dispatchd.backend import ProgressReport, WorkerSpec, WorkResult
from dispatchd.engine import FailedPrecondition, JobState, NewJob, NotFound
from dispatchd.engine.errors import AlreadyExists, InvalidArgument, Reason
from dispatchd.engine.flows import BATCH_HEADER, PROGRESS_INTERVAL
from dispatchd.observability.events import Event, EventFilter, EventKind, Missed
from tests.conformance.harness import Driver, RecordingOutbox

# ---- progress ----------------------------------------------------------------------------


async def test_progress_of_a_held_job_is_kept_and_rate_limited(driver: Driver) -> None:
    job = await driver.add()
    w = await driver.connect()
    lease = w.lease(job.id)
    backend = driver.backend
    report = ProgressReport(job.id, lease.lease_id, 10, "started")
    assert await backend.report_progress(w.record, [report]) == 1
    seen = await driver.job(job.id)
    assert seen.progress is not None
    assert seen.progress[:2] == (10, "started")
    # Within the interval: dropped and counted; the stored one stays.
    assert await backend.report_progress(w.record, [report._replace(percent=20)]) == 0
    seen = await driver.job(job.id)
    assert seen.progress is not None
    assert seen.progress[0] == 10
    assert seen.progress_dropped == 1
    await driver.advance(PROGRESS_INTERVAL * 2)
    later = report._replace(percent=None, message="half way")
    assert await backend.report_progress(w.record, [later]) == 1
    seen = await driver.job(job.id)
    assert seen.progress is not None
    assert seen.progress[:2] == (None, "half way")
    # A lease it does not hold: dropped silently; the finished job keeps the last report.
    stale = report._replace(lease_id="not-a-lease")
    assert await backend.report_progress(w.record, [stale]) == 0
    await w.ok(lease)
    done = await driver.job(job.id)
    assert done.state is JobState.SUCCEEDED
    assert done.progress is not None
    assert done.progress[1] == "half way"


async def test_progress_out_of_bounds_is_refused(driver: Driver) -> None:
    job = await driver.add()
    w = await driver.connect()
    lease = w.lease(job.id)
    with pytest.raises(InvalidArgument):
        await driver.backend.report_progress(
            w.record, [ProgressReport(job.id, lease.lease_id, 101, "")]
        )
    with pytest.raises(InvalidArgument):
        await driver.backend.report_progress(
            w.record, [ProgressReport(job.id, lease.lease_id, None, "x" * 1001)]
        )


# ---- batches -----------------------------------------------------------------------------


async def test_a_batch_counts_its_jobs_and_fires_its_callbacks_once(driver: Driver) -> None:
    b = driver.backend
    done_cb = NewJob("q", payload=b"complete", headers={"who": "cb"})
    ok_cb = NewJob("q", payload=b"success")
    created = await b.create_batch("q", "b1", "nightly", ok_cb, done_cb)
    assert (created.total, created.active, created.closed) == (0, 0, False)
    with pytest.raises(AlreadyExists):
        await b.create_batch("q", "b1", "", None, None)
    jobs = [await driver.add(batch_id="b1") for _ in range(3)]
    view = await b.get_batch("q", "b1")
    assert (view.total, view.active, view.description) == (3, 3, "nightly")
    w = await driver.connect()
    for job in jobs[:2]:
        await w.ok(w.lease(job.id))
    view = await b.get_batch("q", "b1")
    assert (view.active, view.succeeded) == (1, 2)
    await b.close_batch("q", "b1")
    with pytest.raises(FailedPrecondition) as closed:
        await driver.add(batch_id="b1")
    assert closed.value.reason is Reason.BATCH_CLOSED
    await w.ok(w.lease(jobs[2].id))
    view = await b.get_batch("q", "b1")
    assert view.complete
    assert view.succeeded == 3
    assert view.on_complete_job_id
    assert view.on_success_job_id
    cb = await driver.job(view.on_complete_job_id)
    assert cb.payload == b"complete"
    assert cb.batch_id == ""
    assert cb.headers["who"] == "cb"
    assert cb.headers[BATCH_HEADER] == "b1"
    assert cb.headers["dispatchd-batch-succeeded"] == "3"
    assert cb.headers["dispatchd-batch-total"] == "3"
    # Exactly once: closing again or more results change nothing.
    await b.close_batch("q", "b1")
    again = await b.get_batch("q", "b1")
    assert again.on_complete_job_id == view.on_complete_job_id
    taken = w.taken_ids()
    assert sorted(taken) == sorted([view.on_complete_job_id, view.on_success_job_id])


async def test_on_success_does_not_fire_when_a_job_failed(driver: Driver) -> None:
    b = driver.backend
    await driver.update(retry_policy=None)
    await b.create_batch("q", "b2", "", NewJob("q", payload=b"s"), NewJob("q", payload=b"c"))
    ok, bad = await driver.add(batch_id="b2"), await driver.add(batch_id="b2")
    w = await driver.connect()
    await w.ok(w.lease(ok.id))
    await w.fail(w.lease(bad.id), retryable=False)
    await b.close_batch("q", "b2")  # every job final already: fires on close
    view = await b.get_batch("q", "b2")
    assert view.complete
    assert (view.succeeded, view.failed) == (1, 1)
    assert view.on_complete_job_id
    assert not view.on_success_job_id
    assert (await driver.job(view.on_complete_job_id)).headers["dispatchd-batch-failed"] == "1"


async def test_a_batch_is_made_on_first_use_and_can_be_cancelled(driver: Driver) -> None:
    b = driver.backend
    await driver.update(width=1)
    jobs = [await driver.add(batch_id="auto") for _ in range(3)]
    w = await driver.connect()
    [underway] = w.take()
    view, n = await b.cancel_batch("q", "auto")
    assert n == 3
    assert view.closed
    assert view.cancelled == 3
    assert view.active == 0
    assert await driver.states(jobs) == [JobState.CANCELLED] * 3
    assert w.outbox.cancelled == [underway.job.id]
    with pytest.raises(NotFound) as missing:
        await b.get_batch("q", "nope")
    assert missing.value.reason is Reason.BATCH_NOT_FOUND


async def test_wait_batch_returns_when_the_last_job_is_final(driver: Driver) -> None:
    b = driver.backend
    jobs = [await driver.add(batch_id="w") for _ in range(2)]
    w = await driver.connect()
    timed_out = await b.wait_batch("q", "w", 0.05)
    assert timed_out.active == 2
    waiting = asyncio.create_task(b.wait_batch("q", "w", 10.0))
    await w.ok(w.lease(jobs[0].id))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await w.ok(w.lease(jobs[1].id))
    view = await asyncio.wait_for(waiting, 5.0)
    assert (view.active, view.succeeded) == (0, 2)


# ---- dependencies ------------------------------------------------------------------------


async def test_a_dag_runs_in_dependency_order_under_width(driver: Driver) -> None:
    """root -> (a, b, c) -> join -> tail: fan-out, fan-in, three levels, width 2."""
    await driver.update(width=2)
    root = await driver.add(payload=b"root")
    mids = [await driver.add(payload=b"m%d" % i, parent_ids=(root.id,)) for i in range(3)]
    join = await driver.add(payload=b"join", parent_ids=tuple(m.id for m in mids))
    tail = await driver.add(payload=b"tail", parent_ids=(join.id,))
    assert await driver.states([*mids, join, tail]) == [JobState.WAITING] * 5
    assert (await driver.job(join.id)).parent_ids == tuple(m.id for m in mids)
    w = await driver.connect(credits=10)
    order: list[str] = []
    while True:
        leases = list(w.take())
        if not leases and not w.held:
            break
        assert len(w.held) <= 2  # width 2, WAITING jobs not counted
        for lease in list(w.held.values()):
            order.append(lease.job.id)
            await w.ok(lease)
    assert order[0] == root.id
    assert set(order[1:4]) == {m.id for m in mids}
    assert order[4:] == [join.id, tail.id]
    assert (await driver.job(tail.id)).state is JobState.SUCCEEDED


async def test_waiting_jobs_are_listed_in_submit_order_until_they_stop_waiting(
    driver: Driver,
) -> None:
    """ListJobs shows WAITING jobs (by their state, and after the scheduled ones when the
    state is UNSPECIFIED) page by page; a cancel or their parents' success takes them out."""
    await driver.update(paused=True)
    root = await driver.add()
    kids = [await driver.add(parent_ids=(root.id,)) for _ in range(3)]
    plain = await driver.add()
    grandkid = await driver.add(parent_ids=(kids[0].id,))
    waiting = [k.id for k in kids] + [grandkid.id]
    assert await driver.listed(JobState.WAITING, page_size=1) == waiting
    assert await driver.listed(JobState.UNSPECIFIED, page_size=2) == [root.id, plain.id, *waiting]
    await driver.cancel(kids[1])
    assert await driver.listed(JobState.WAITING, page_size=2) == [
        kids[0].id,
        kids[2].id,
        grandkid.id,
    ]
    await driver.update(paused=False)
    w = await driver.connect(credits=1)
    await w.ok(w.lease(root.id))  # kids 0 and 2 may run now; the grandkid still waits
    assert await driver.listed(JobState.WAITING) == [grandkid.id]
    ran = await driver.states([kids[0], kids[2]])
    assert set(ran) <= {JobState.PENDING, JobState.UNDERWAY}


async def test_a_failed_parent_cancels_its_subtree(driver: Driver) -> None:
    await driver.update(retry_policy=None)
    root = await driver.add()
    child = await driver.add(parent_ids=(root.id,))
    grandchild = await driver.add(parent_ids=(child.id,))
    stubborn = await driver.add(parent_ids=(root.id,), run_after_failed_parents=True)
    w = await driver.connect()
    await w.fail(w.lease(root.id), retryable=False)
    assert await driver.states([child, grandchild]) == [JobState.CANCELLED] * 2
    gone = await driver.job(child.id)
    assert gone.cancel_reason == f"parent {root.id} ended FAILED"
    assert "CANCELLED" in (await driver.job(grandchild.id)).cancel_reason
    assert await driver.state(stubborn) is JobState.UNDERWAY  # it runs anyway
    # A child of a parent that already failed is cancelled at once.
    late = await driver.add(parent_ids=(root.id,))
    assert late.state is JobState.CANCELLED


async def test_unknown_parents_are_refused_and_nothing_is_admitted(driver: Driver) -> None:
    known = await driver.add()
    other = "1" if known.id[25] != "1" else "2"
    made_up = known.id[:25] + other + known.id[26:]  # a well-formed id nobody has
    with pytest.raises(NotFound) as unknown:
        await driver.submit(NewJob("q", parent_ids=(known.id,)), NewJob("q", parent_ids=(made_up,)))
    assert unknown.value.reason is Reason.PARENT_NOT_FOUND
    assert (await driver.queue()).pending_count == 1


@pytest.mark.redis_only
async def test_on_complete_fires_once_when_the_last_two_jobs_finish_on_two_replicas(
    driver: Driver,
) -> None:
    """The last two jobs of a batch finish at the same instant on two replicas: whichever
    script runs second sees the batch complete and submits the callback, once."""
    a, b = driver.backend, await driver.peer()
    await driver.update(width=0)  # nothing is dispatched until both workers are there
    box_a, box_b = RecordingOutbox(), RecordingOutbox()
    wa = await a.connect(WorkerSpec("a", ["q"], 1), box_a)
    wb = await b.connect(WorkerSpec("b", ["q"], 1), box_b)
    rounds = 10
    for r in range(rounds):
        name = f"race{r}"
        await a.create_batch("q", name, "", None, NewJob("q", payload=b"callback"))
        # Above the callbacks of earlier rounds, which wait (priority 0) behind them.
        await driver.submit(*[NewJob("q", batch_id=name, priority=10) for _ in range(2)])
        await a.close_batch("q", name)
        await driver.update(width=2)
        await b.settle()
        [la], [lb] = box_a.delivered[-1:], box_b.delivered[-1:]
        await driver.update(width=0)
        await asyncio.gather(
            a.results(wa, [WorkResult(la.job.id, la.lease_id, b"ok")]),
            b.results(wb, [WorkResult(lb.job.id, lb.lease_id, b"ok")]),
        )
        view = await a.get_batch("q", name)
        assert view.complete
        assert view.on_complete_job_id
    callbacks = [
        job
        for job_id in await driver.listed(JobState.PENDING)
        if (job := await driver.job(job_id)).headers.get(BATCH_HEADER, "").startswith("race")
    ]
    assert len(callbacks) == rounds
    assert len({j.headers[BATCH_HEADER] for j in callbacks}) == rounds


# ---- events ------------------------------------------------------------------------------


async def _take(
    it: AsyncIterator[Event | Missed], n: int, within: float = 5.0
) -> list[Event | Missed]:
    out: list[Event | Missed] = []
    async with asyncio.timeout(within):
        while len(out) < n:
            out.append(await anext(it))
    return out


async def test_events_follow_a_job_and_resume_from_a_token(driver: Driver) -> None:
    await driver.update(retry_policy=None)
    watch = await driver.backend.watch_events(EventFilter(queues=frozenset({"q"})), "")
    job = await driver.add(batch_id="ev")
    await driver.add(queue="other")  # filtered out
    w = await driver.connect()
    lease = w.lease(job.id)
    await driver.backend.report_progress(w.record, [ProgressReport(job.id, lease.lease_id, 5, "")])
    await w.fail(lease, retryable=False)
    got = await _take(watch, 4)
    assert all(isinstance(e, Event) for e in got)
    events = [e for e in got if isinstance(e, Event)]
    kinds = [e.kind for e in events]
    assert kinds == [
        EventKind.SUBMITTED,
        EventKind.DISPATCHED,
        EventKind.PROGRESS,
        EventKind.FAILED,
    ]
    assert {e.job_id for e in events} == {job.id}
    assert events[0].batch_id == "ev"
    assert events[2].progress is not None
    assert events[2].progress[0] == 5
    assert events[3].error is not None
    assert events[3].error.message == "boom"
    # Resuming after the DISPATCHED event delivers what followed it, and nothing else.
    resumed = await driver.backend.watch_events(
        EventFilter(queues=frozenset({"q"})), events[1].token
    )
    again = await _take(resumed, 2)
    assert [e.kind for e in again if isinstance(e, Event)] == [
        EventKind.PROGRESS,
        EventKind.FAILED,
    ]


async def test_events_of_a_batch_end_with_batch_complete(driver: Driver) -> None:
    flt = EventFilter(batch_ids=frozenset({"done"}), kinds=frozenset({EventKind.BATCH_COMPLETE}))
    watch = await driver.backend.watch_events(flt, "")
    job = await driver.add(batch_id="done")
    await driver.backend.close_batch("q", "done")
    w = await driver.connect()
    await w.ok(w.lease(job.id))
    [complete] = await _take(watch, 1)
    assert isinstance(complete, Event)
    assert (complete.kind, complete.batch_id, complete.job_id) == (
        EventKind.BATCH_COMPLETE,
        "done",
        "",
    )
    assert complete.counts is not None
    assert complete.counts[0] == 1
    assert complete.counts[2] == 1


async def test_a_foreign_resume_token_is_refused(driver: Driver) -> None:
    with pytest.raises(InvalidArgument):
        await driver.backend.watch_events(EventFilter(), "not a token")


@pytest.mark.redis_only
async def test_a_resume_older_than_the_queue_stream_is_told(driver: Driver) -> None:
    """Redis keeps about the last 20,000 events of each queue: a token from before that many
    events is told RESUME_TOO_OLD, then the stream goes on with the oldest kept."""
    flt = EventFilter(queues=frozenset({"q"}))
    watch = await driver.backend.watch_events(flt, "")
    await driver.add()
    [first] = await _take(watch, 1)
    assert isinstance(first, Event)
    for _ in range(22):
        await driver.backend.submit([NewJob("q") for _ in range(1_000)])
    resumed = await driver.backend.watch_events(flt, first.token)
    missed, after = await _take(resumed, 2)
    assert isinstance(missed, Missed)
    assert missed.reason == "RESUME_TOO_OLD"
    assert isinstance(after, Event)
    assert after.kind is EventKind.SUBMITTED


async def test_a_queue_with_waiting_jobs_is_not_deleted(driver: Driver) -> None:
    parent = await driver.add()
    child = await driver.add(parent_ids=(parent.id,))
    await driver.cancel(parent)  # cancels the child too
    assert await driver.state(child) is JobState.CANCELLED
    other = await driver.add()
    waiting = await driver.add(parent_ids=(other.id,))
    await driver.cancel(other)
    assert await driver.state(waiting) is JobState.CANCELLED
    keeper = await driver.add()
    held = await driver.add(parent_ids=(keeper.id,))
    assert held.state is JobState.WAITING
    await driver.cancel(keeper)
    await driver.backend.delete_queue("q")  # nothing waits any more: it goes
    again = await driver.add()
    await driver.add(parent_ids=(again.id,))
    await driver.cancel(again)
    kept = await driver.add()
    await driver.add(parent_ids=(kept.id,))
    with pytest.raises(FailedPrecondition):  # the parent pending, the child WAITING
        await driver.backend.delete_queue("q")


async def test_a_deleted_queue_takes_its_batches_along(driver: Driver) -> None:
    b = driver.backend
    await b.create_batch("q", "gone", "", None, None)
    await b.close_batch("q", "gone")
    await b.delete_queue("q")
    with pytest.raises(NotFound):
        await b.get_batch("q", "gone")
