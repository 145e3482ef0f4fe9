"""ListJobs (dispatch order for waiting and underway jobs, finish order for finished ones,
stable cursors: a job that stays in its state is listed once) and queue settings."""

from __future__ import annotations

import pytest

from dispatchd.engine import InvalidArgument, JobFailure, JobState, NewJob, NotFound
from tests.conformance.harness import Driver


async def pages(driver: Driver, state: JobState, size: int, queue: str = "q") -> list[list[str]]:
    out: list[list[str]] = []
    token = ""
    for _ in range(1000):
        jobs, token = await driver.backend.list_jobs(queue, state, size, token)
        out.append([j.id for j in jobs])
        if not token:
            return out
    raise AssertionError("page tokens never ran out")


async def mixed(driver: Driver) -> dict[JobState, list[str]]:
    """Two waiting, two underway, and finished jobs of three states, on queue q."""
    jobs = await driver.submit(*[NewJob("q", payload=bytes([i])) for i in range(7)])
    w = await driver.connect(credits=5)
    leases = w.take()
    assert [lease.job.id for lease in leases] == [j.id for j in jobs[:5]]
    await driver.update(paused=True)  # what is answered is not replaced
    await driver.advance_to(1.0)
    await w.ok(leases[0])
    await driver.advance_to(2.0)
    assert await w.answer(leases[1], JobFailure("bad")) == []
    await driver.advance_to(3.0)
    await driver.cancel(jobs[2])  # underway -> CANCELLED, lease still held
    await driver.advance_to(4.0)
    await driver.cancel(jobs[5])  # pending -> CANCELLED
    await driver.advance_to(5.0)
    await w.ok(leases[2])
    return {
        JobState.PENDING: [jobs[6].id],
        JobState.UNDERWAY: [jobs[3].id, jobs[4].id],
        JobState.SUCCEEDED: [jobs[0].id],
        JobState.FAILED: [jobs[1].id],
        JobState.CANCELLED: [jobs[2].id, jobs[5].id],
    }


async def test_each_state_lists_its_jobs_only(driver: Driver) -> None:
    expected = await mixed(driver)
    for state, ids in expected.items():
        jobs, token = await driver.backend.list_jobs("q", state, 100, "")
        assert ([j.id for j in jobs], token) == (ids, ""), state
        assert all(j.state is state for j in jobs)


@pytest.mark.parametrize("size", [1, 2, 3, 100])
async def test_all_states_list_waiting_then_underway_then_finished(
    driver: Driver, size: int
) -> None:
    expected = await mixed(driver)
    order = [
        *expected[JobState.PENDING],
        *expected[JobState.UNDERWAY],
        *expected[JobState.SUCCEEDED],
        *expected[JobState.FAILED],
        *expected[JobState.CANCELLED],
    ]
    got = await pages(driver, JobState.UNSPECIFIED, size)
    assert [i for page in got for i in page] == order
    assert all(len(page) == size for page in got[:-1])


async def test_pending_jobs_are_listed_in_dispatch_order(driver: Driver) -> None:
    await driver.update(paused=True)
    jobs = await driver.submit(*[NewJob("q", priority=i % 3) for i in range(10)])
    order = [j.id for j in sorted(jobs, key=lambda j: -j.priority)]  # stable: submit order
    assert [i for page in await pages(driver, JobState.PENDING, 3) for i in page] == order
    assert len(await pages(driver, JobState.PENDING, 5)) == 2  # an exact multiple ends clean


async def test_underway_jobs_are_listed_in_dispatch_order(driver: Driver) -> None:
    await driver.submit(*[NewJob("q")] * 2)
    w = await driver.connect(credits=10)
    first = w.taken_ids()
    await driver.advance_to(1.0)
    await driver.submit(*[NewJob("q", priority=5)] * 3)
    order = first + w.taken_ids()
    got = await pages(driver, JobState.UNDERWAY, 2)
    assert [i for page in got for i in page] == order
    assert len(got) == 3


async def test_finished_jobs_are_listed_in_finish_order(driver: Driver) -> None:
    await driver.submit(*[NewJob("q")] * 5)
    w = await driver.connect(credits=10)
    leases = w.take()
    for t, i in enumerate([3, 0, 4, 1, 2]):
        await driver.advance_to(float(t))
        await w.ok(leases[i])
    got = await pages(driver, JobState.SUCCEEDED, 2)
    assert [i for page in got for i in page] == [leases[i].job.id for i in [3, 0, 4, 1, 2]]


async def test_a_job_waiting_behind_its_ordering_key_is_listed_as_pending(
    driver: Driver,
) -> None:
    head, behind = await driver.add(ordering_key="k"), await driver.add(ordering_key="k")
    later = await driver.add()
    w = await driver.connect(credits=1)
    assert w.taken_ids() == [head.id]
    assert await driver.state(behind) is JobState.PENDING
    assert await driver.counts() == (2, 1, 0)
    assert await driver.listed(JobState.PENDING) == [behind.id, later.id]
    assert await driver.listed(JobState.UNSPECIFIED) == [behind.id, later.id, head.id]


async def test_a_cursor_survives_its_last_job_leaving(driver: Driver) -> None:
    await driver.update(paused=True)
    jobs = await driver.add_n(5)
    first, token = await driver.backend.list_jobs("q", JobState.PENDING, 2, "")
    assert [j.id for j in first] == [jobs[0].id, jobs[1].id]
    await driver.cancel(jobs[1])
    rest, token = await driver.backend.list_jobs("q", JobState.PENDING, 10, token)
    assert ([j.id for j in rest], token) == ([j.id for j in jobs[2:]], "")


async def test_a_job_that_stays_waiting_is_listed_exactly_once(driver: Driver) -> None:
    """Between pages, jobs arrive before and after the cursor, jobs of this page and of
    later pages are cancelled, and one later job moves ahead of the cursor."""
    await driver.update(paused=True)
    jobs = await driver.submit(*[NewJob("q", priority=i % 3) for i in range(21)])
    order = [j.id for j in sorted(jobs, key=lambda j: -j.priority)]
    first, token = await driver.backend.list_jobs("q", JobState.PENDING, 7, "")
    assert [j.id for j in first] == order[:7]
    await driver.submit(*[NewJob("q", priority=9)] * 2)
    after = await driver.submit(NewJob("q", priority=0))
    later = order[7:]
    for job_id in (order[0], later[0], later[-1]):
        await driver.backend.cancel_job(job_id)
    moved = later[5]
    await driver.backend.reprioritize_job(moved, 9)
    rest: list[str] = []
    while token:
        page, token = await driver.backend.list_jobs("q", JobState.PENDING, 7, token)
        rest += [j.id for j in page]
    stayed = [i for i in later[1:-1] if i != moved]
    assert rest == [*stayed, after[0].id]


async def test_scheduled_jobs_paging_survives_jobs_becoming_due(driver: Driver) -> None:
    for t in (5, 1, 4, 2, 3):
        await driver.add(not_before=driver.at(float(t)))
    page, token = await driver.backend.list_jobs("q", JobState.SCHEDULED, 2, "")
    assert [j.not_before for j in page] == [driver.at(1.0), driver.at(2.0)]
    await driver.advance_to(3.0)  # 1, 2 and 3 become pending
    page, token = await driver.backend.list_jobs("q", JobState.SCHEDULED, 2, token)
    assert [j.not_before for j in page] == [driver.at(4.0), driver.at(5.0)]
    assert token == ""


@pytest.mark.parametrize("token", ["garbage!!", "x", "Zm9v", "====", "MXxx"])
async def test_a_bad_token_is_refused(driver: Driver, token: str) -> None:
    await driver.add()
    with pytest.raises(InvalidArgument):
        await driver.backend.list_jobs("q", JobState.PENDING, 10, token)


async def test_a_token_is_only_good_for_its_queue_and_state(driver: Driver) -> None:
    await driver.update("a", paused=True)
    await driver.submit(*[NewJob("a")] * 3, *[NewJob("b")] * 3)
    _, token = await driver.backend.list_jobs("a", JobState.PENDING, 1, "")
    with pytest.raises(InvalidArgument, match="another queue"):
        await driver.backend.list_jobs("b", JobState.PENDING, 1, token)
    with pytest.raises(InvalidArgument):
        await driver.backend.list_jobs("a", JobState.UNSPECIFIED, 1, token)


@pytest.mark.parametrize("size", [-1, 1001])
async def test_a_bad_page_size_is_refused(driver: Driver, size: int) -> None:
    await driver.add()
    with pytest.raises(InvalidArgument):
        await driver.backend.list_jobs("q", JobState.PENDING, size, "")


async def test_listing_an_unknown_or_empty_queue(driver: Driver) -> None:
    with pytest.raises(NotFound):
        await driver.backend.list_jobs("nope", JobState.PENDING, 10, "")
    with pytest.raises(InvalidArgument):
        await driver.backend.list_jobs("bad name", JobState.PENDING, 10, "")
    await driver.connect("empty")
    assert await driver.backend.list_jobs("empty", JobState.UNSPECIFIED, 10, "") == ([], "")


# ---- queue settings -----------------------------------------------------------------------


async def test_update_queue_changes_what_it_names_only(driver: Driver) -> None:
    await driver.add()
    view = await driver.update(width=3, paused=True, lease_seconds=12.5)
    assert (view.settings.width, view.settings.paused, view.settings.lease_seconds) == (
        3,
        True,
        12.5,
    )
    again = await driver.update()
    assert again.settings == view.settings
    assert (await driver.queue()).settings == view.settings


async def test_a_bad_setting_changes_nothing(driver: Driver) -> None:
    await driver.add()
    before = (await driver.queue()).settings
    with pytest.raises(InvalidArgument):
        await driver.update(width=-1, paused=True)
    for seconds in (0.0, 0.999, 3600.5):
        with pytest.raises(InvalidArgument, match="lease_duration"):
            await driver.update(lease_seconds=seconds, width=1)
    for window in (-1.0, 8 * 86_400.0):
        with pytest.raises(InvalidArgument):
            await driver.update(dedup_window=window, width=1)
    with pytest.raises(InvalidArgument):
        await driver.update(max_pending=-1, width=1)
    assert (await driver.queue()).settings == before


async def test_update_queue_needs_the_queue_unless_told_to_create_it(driver: Driver) -> None:
    with pytest.raises(NotFound):
        await driver.backend.update_queue("nope", width=3)
    with pytest.raises(InvalidArgument):
        await driver.backend.update_queue("", width=1, create=True)
    assert await driver.backend.list_queues() == []
    view = await driver.backend.update_queue("new", width=0, create=True)
    assert (view.name, view.settings.width, view.settings.lease_seconds) == ("new", 0, 30.0)
    again = await driver.backend.update_queue("new", paused=True, create=True)
    assert (again.settings.width, again.settings.paused) == (0, True)
    with pytest.raises(NotFound):
        await driver.backend.get_queue("nope")


async def test_jobs_behind_their_ordering_keys_keep_their_place_through_pages_and_changes(
    driver: Driver,
) -> None:
    """Pending jobs in line behind their key's job are listed in (priority, submit) order
    among the others, page by page; a reprioritize moves them, a cancel or their turn
    coming takes them out of the line (not out of PENDING, until dispatched)."""
    a1 = await driver.add(ordering_key="a")
    a2 = await driver.add(ordering_key="a", priority=5)
    plain = await driver.add()
    a3 = await driver.add(ordering_key="a")
    b1 = await driver.add(ordering_key="b", priority=5)
    b2 = await driver.add(ordering_key="b")
    w = await driver.connect(credits=2)
    held = {lease.job.id: lease for lease in w.take()}
    assert set(held) == {a1.id, b1.id}
    assert await driver.listed(JobState.PENDING, page_size=1) == [a2.id, plain.id, a3.id, b2.id]
    await driver.reprioritize(b2, 9)
    assert await driver.listed(JobState.PENDING, page_size=2) == [b2.id, a2.id, plain.id, a3.id]
    await driver.cancel(a2)
    assert await driver.listed(JobState.PENDING, page_size=3) == [b2.id, plain.id, a3.id]
    assert await driver.counts() == (3, 2, 0)
    # a1 ends: a3 (a2 was cancelled) owns key a now and waits in the pending index, while
    # the freed credit goes to plain (same priority, submitted before a3).
    await w.ok(held[a1.id])
    assert w.taken_ids() == [plain.id]
    assert await driver.listed(JobState.PENDING, page_size=1) == [b2.id, a3.id]
    everything = await driver.listed(JobState.UNSPECIFIED, page_size=2)
    assert everything[:4] == [b2.id, a3.id, b1.id, plain.id]  # then the finished a2, a1
    assert sorted(everything[4:]) == sorted([a1.id, a2.id])
