"""Dispatch order and the bounds on it: priority then submit order, width (never more
underway; narrowing takes nothing back; 0 runs nothing), pause and resume, credits."""

from __future__ import annotations

from dispatchd.engine import JobState, NewJob
from tests.conformance.harness import Driver, Worker


async def take_one_at_a_time(worker: Worker, n: int) -> list[str]:
    """``n`` jobs run one after another by a one-credit worker: their ids in run order."""
    order = []
    for _ in range(n):
        [lease] = worker.take()
        order.append(lease.job.id)
        await worker.ok(lease)
    assert worker.take() == []
    return order


async def test_higher_priority_first_then_submit_order(driver: Driver) -> None:
    jobs = [await driver.add(priority=p) for p in (0, 5, 0, 9, -3, 5)]
    w = await driver.connect(credits=1)
    assert await take_one_at_a_time(w, 6) == [jobs[i].id for i in (3, 1, 5, 0, 2, 4)]


async def test_a_batch_keeps_its_order_among_equals(driver: Driver) -> None:
    jobs = await driver.submit(*[NewJob("q", payload=bytes([i])) for i in range(5)])
    w = await driver.connect(credits=1)
    assert await take_one_at_a_time(w, 5) == [j.id for j in jobs]


async def test_a_later_higher_priority_job_overtakes_waiting_ones(driver: Driver) -> None:
    await driver.update(width=1)
    first, second = await driver.add(), await driver.add()
    w = await driver.connect(credits=5)
    [running] = w.take()
    assert running.job.id == first.id
    urgent = await driver.add(priority=10)
    assert w.take() == []  # width 1
    await w.ok(running)
    assert w.taken_ids() == [urgent.id]
    assert await driver.state(second) is JobState.PENDING


async def test_dispatch_sets_the_job_underway_with_a_lease(driver: Driver) -> None:
    await driver.update(lease_seconds=30.0)
    job = await driver.add(payload=b"p")
    w = await driver.connect(credits=1, worker_id="w1")
    [lease] = w.take()
    assert lease.job.id == job.id
    assert lease.job.payload == b"p"
    assert lease.deadline == driver.clock.now + 30.0
    seen = await driver.job(job.id)
    assert (seen.state, seen.attempt, seen.worker_id) == (JobState.UNDERWAY, 1, "w1")
    assert seen.dispatch_time == seen.first_dispatch_time == driver.clock.now
    view = await driver.queue()
    assert (view.pending_count, view.underway_count, view.worker_count) == (0, 1, 1)


async def test_nothing_is_dispatched_without_a_worker_of_the_queue(driver: Driver) -> None:
    await driver.add_n(3)
    other = await driver.connect("elsewhere")
    assert other.take() == []
    assert await driver.counts() == (3, 0, 0)


# ---- width ------------------------------------------------------------------------------


async def test_never_more_underway_than_width_across_workers(driver: Driver) -> None:
    await driver.update(width=3)
    await driver.add_n(20)
    a = await driver.connect(credits=100)
    b = await driver.connect(credits=100)
    assert len(a.take()) + len(b.take()) == 3
    await driver.advance(1.0)
    assert a.take() == b.take() == []
    assert (await driver.queue()).underway_count == 3


async def test_narrowing_takes_nothing_back_and_holds_new_work(driver: Driver) -> None:
    await driver.update(width=4)
    await driver.add_n(10)
    w = await driver.connect(credits=100)
    held = w.take()
    assert len(held) == 4
    await driver.update(width=2)
    assert await driver.states([ls.job for ls in held]) == [JobState.UNDERWAY] * 4
    assert (await driver.queue()).underway_count == 4
    for lease in held[:2]:
        await w.ok(lease)
        assert w.take() == []  # 3, then 2 underway: not below width 2...
    await w.ok(held[2])  # ...until a third one is answered
    assert len(w.take()) == 1
    assert (await driver.queue()).underway_count == 2


async def test_widening_dispatches_more_at_once(driver: Driver) -> None:
    await driver.update(width=1)
    await driver.add_n(10)
    w = await driver.connect(credits=100)
    assert len(w.take()) == 1
    await driver.update(width=5)
    assert len(w.take()) == 4


async def test_width_zero_runs_nothing(driver: Driver) -> None:
    """The txrdq regression: width 0 must mean "run nothing", never "unlimited"."""
    await driver.update(width=0)
    await driver.add_n(3)
    w = await driver.connect(credits=5)
    await driver.advance(10.0)
    assert w.take() == []
    assert await driver.counts() == (3, 0, 0)
    await driver.update(width=2)
    assert len(w.take()) == 2


# ---- pause and resume ---------------------------------------------------------------------


async def test_pause_holds_everything_and_resume_sets_the_width(driver: Driver) -> None:
    await driver.add_n(10)
    view = await driver.update(paused=True)
    assert view.settings.paused
    w = await driver.connect(credits=100)
    assert w.take() == []
    view = await driver.update(paused=False, width=3)
    assert not view.settings.paused
    assert view.settings.width == 3
    assert len(w.take()) == 3
    await driver.update(paused=True)
    await driver.update(paused=False)
    assert (await driver.queue()).settings.width == 3


async def test_pause_keeps_underway_jobs_and_takes_their_results(driver: Driver) -> None:
    await driver.add_n(3)
    w = await driver.connect(credits=1)
    [lease] = w.take()
    await driver.update(paused=True)
    await w.ok(lease)
    assert await driver.state(lease.job) is JobState.SUCCEEDED
    assert w.take() == []


# ---- credits -------------------------------------------------------------------------------


async def test_a_worker_gets_no_more_than_its_credits(driver: Driver) -> None:
    await driver.add_n(10)
    w = await driver.connect(credits=3)
    held = w.take()
    assert len(held) == 3
    await w.ok(held[0])
    assert len(w.take()) == 1
    assert len(w.record.leases) == 3


async def test_credit_changes_apply_live(driver: Driver) -> None:
    await driver.add_n(10)
    w = await driver.connect(credits=1)
    assert len(w.take()) == 1
    await w.set_credit(4)
    assert len(w.take()) == 3
    await w.set_credit(1)
    held = list(w.held.values())
    for lease in held[:3]:
        await w.ok(lease)
        assert w.take() == []  # still holding as many as its credit
    await w.ok(held[3])
    assert len(w.take()) == 1


async def test_a_disconnected_worker_gets_nothing_more(driver: Driver) -> None:
    a = await driver.connect(credits=5)
    b = await driver.connect(credits=5)
    await a.disconnect()
    jobs = await driver.add_n(4)
    assert a.take() == []
    assert sorted(b.taken_ids()) == sorted(j.id for j in jobs)
    assert (await driver.queue()).worker_count == 1


async def test_a_worker_of_two_queues_never_holds_more_than_its_credits(driver: Driver) -> None:
    await driver.add_n(10, queue="a")
    await driver.add_n(10, queue="b")
    w = await driver.connect(["a", "b"], credits=3)
    assert len(w.take()) == 3
    assert len(w.record.leases) == 3


async def test_a_quiet_queue_is_not_starved_by_a_busy_one(driver: Driver) -> None:
    await driver.add_n(30, queue="busy")
    w = await driver.connect(["busy", "small"], credits=2)
    small = await driver.add(queue="small")  # arrives while the worker is full
    for _ in range(3):
        await w.ok(w.oldest())
    delivered = [lease.job.id for lease in w.outbox.delivered]
    assert len(delivered) == 5
    assert small.id in delivered


async def test_a_one_credit_worker_of_two_busy_queues_serves_both(driver: Driver) -> None:
    """Passes that dispatch nothing (a kick after the pass that did) take no queue's turn."""
    await driver.add_n(10, queue="a")
    await driver.add_n(10, queue="b")
    w = await driver.connect(["a", "b"], credits=1)
    served = []
    for _ in range(8):
        lease = w.oldest()
        served.append(lease.job.queue)
        await w.ok(lease)
    assert served.count("a") >= 3
    assert served.count("b") >= 3
