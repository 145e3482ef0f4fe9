"""Slots (AcquireSlot): a unit of the queue's width held outside the worker stream, granted
when width, pause and rate allow (waiting acquirers first, by priority then in turn),
renewed, released, and expired by time; they share width and rate with the queue's jobs."""

from __future__ import annotations

import asyncio

import pytest

from dispatchd.engine import InvalidArgument, NotFound, Rate, SlotRecord, Unavailable
from tests.conformance.harness import Driver


async def test_a_free_queue_grants_a_slot_at_once(driver: Driver) -> None:
    await driver.advance_to(1.0)
    slot = await driver.granted(await driver.acquire(holder="cron-7", ttl=10.0))
    assert (slot.queue, slot.holder, slot.ttl, slot.deadline) == (
        "q",
        "cron-7",
        10.0,
        driver.at(11.0),
    )
    view = await driver.queue()
    assert (view.slot_count, view.underway_count) == (1, 1)
    assert [v.name for v in await driver.backend.list_queues()] == ["q"]  # made on first use


@pytest.mark.parametrize(
    ("queue", "holder", "ttl"),
    [("", "h", 10.0), ("bad name", "h", 10.0), ("q", "h" * 257, 10.0), ("q", "h", 0.5)],
)
async def test_a_bad_request_is_refused(
    driver: Driver, queue: str, holder: str, ttl: float
) -> None:
    with pytest.raises(InvalidArgument):
        await driver.backend.acquire_slot(queue, holder, ttl, 0)
    assert await driver.backend.list_queues() == []


async def test_slots_and_jobs_share_the_width(driver: Driver) -> None:
    await driver.update(width=3)
    await driver.add_n(2)
    w = await driver.connect(credits=10)
    leases = w.take()
    assert len(leases) == 2
    first = await driver.acquire()
    await driver.granted(first)  # the one unit of width left
    second = await driver.acquire()
    assert await driver.waiting(second)
    await driver.add()
    assert w.take() == []  # a job cannot pass the slot holders either
    assert (await driver.queue()).underway_count == 3
    await w.ok(leases[0])
    second_slot = await driver.granted(second)  # a waiting acquirer goes before the job
    assert w.take() == []
    await driver.backend.release_slot(second_slot.slot_id)
    await driver.settle()
    assert len(w.take()) == 1
    assert (await driver.queue()).underway_count == 3


async def test_waiting_acquirers_go_by_priority_then_in_turn(driver: Driver) -> None:
    await driver.update(width=0)
    low = await driver.acquire(priority=0)
    high = await driver.acquire(priority=5)
    low2 = await driver.acquire(priority=0)
    order: list[str] = []
    for name, task in (("low", low), ("high", high), ("low2", low2)):
        task.add_done_callback(lambda _, name=name: order.append(name))  # type: ignore[misc]
    await driver.update(width=1)
    high_slot = await driver.granted(high)
    assert await driver.waiting(low)
    await driver.backend.release_slot(high_slot.slot_id)
    low_slot = await driver.granted(low)
    assert await driver.waiting(low2)
    await driver.backend.release_slot(low_slot.slot_id)
    await driver.granted(low2)
    assert order == ["high", "low", "low2"]


async def test_a_paused_queue_grants_nothing(driver: Driver) -> None:
    await driver.update(paused=True)
    task = await driver.acquire()
    assert await driver.waiting(task)
    await driver.update(paused=False)
    await driver.granted(task)


async def test_the_rate_applies_to_grants_and_is_shared_with_jobs(driver: Driver) -> None:
    await driver.update(rate=Rate.of(1.0, 2), lease_seconds=600.0)
    a, b, c = [await driver.acquire(ttl=600.0) for _ in range(3)]
    await driver.granted(a)
    await driver.granted(b)  # the burst
    assert await driver.waiting(c)
    await driver.add()
    w = await driver.connect()
    assert w.take() == []
    await driver.advance(1.0)
    await driver.granted(c)
    assert w.take() == []  # the token went to the waiting acquirer
    await driver.advance(1.0)
    assert len(w.take()) == 1


async def test_a_narrowed_width_holds_back_grants(driver: Driver) -> None:
    held = [await driver.granted(await driver.acquire()) for _ in range(3)]
    await driver.update(width=2)
    extra = await driver.acquire()
    await driver.backend.release_slot(held[0].slot_id)
    assert await driver.waiting(extra)  # two held, width two
    await driver.backend.release_slot(held[1].slot_id)
    await driver.granted(extra)


# ---- renew, release, expire ---------------------------------------------------------------


async def test_a_renewal_extends_the_deadline(driver: Driver) -> None:
    slot = await driver.granted(await driver.acquire(ttl=10.0))
    await driver.advance_to(8.0)
    assert (await driver.backend.renew_slot(slot.slot_id, None)).deadline == driver.at(18.0)
    await driver.advance_to(15.0)
    assert (await driver.queue()).slot_count == 1
    await driver.advance_to(17.0)
    renewed = await driver.backend.renew_slot(slot.slot_id, 30.0)  # a new ttl from now on
    assert renewed.deadline == driver.at(47.0)
    await driver.advance_to(46.9)
    assert (await driver.queue()).slot_count == 1
    await driver.advance_to(47.0)
    assert (await driver.queue()).slot_count == 0
    with pytest.raises(NotFound):
        await driver.backend.renew_slot(slot.slot_id, None)


async def test_a_renewal_with_a_shorter_ttl_is_honoured(driver: Driver) -> None:
    slot = await driver.granted(await driver.acquire(ttl=100.0))
    await driver.advance_to(1.0)
    assert (await driver.backend.renew_slot(slot.slot_id, 5.0)).deadline == driver.at(6.0)
    await driver.advance_to(6.0)
    assert (await driver.queue()).slot_count == 0


async def test_renewals_that_are_refused(driver: Driver) -> None:
    slot = await driver.granted(await driver.acquire())
    with pytest.raises(InvalidArgument):
        await driver.backend.renew_slot(slot.slot_id, 0.1)
    with pytest.raises(InvalidArgument):
        await driver.backend.renew_slot("", None)
    with pytest.raises(NotFound):
        await driver.backend.renew_slot(slot.slot_id[:-1] + "x", None)
    await driver.advance_to(1.0)
    assert (await driver.backend.renew_slot(slot.slot_id, None)).deadline == driver.at(11.0)


async def test_a_release_frees_the_width_once(driver: Driver) -> None:
    await driver.update(width=1)
    slot = await driver.granted(await driver.acquire())
    await driver.add()
    w = await driver.connect()
    assert w.take() == []
    await driver.backend.release_slot(slot.slot_id)
    await driver.settle()
    assert (await driver.queue()).slot_count == 0
    assert len(w.take()) == 1
    with pytest.raises(NotFound):
        await driver.backend.release_slot(slot.slot_id)


async def test_an_expired_slot_frees_the_width(driver: Driver) -> None:
    await driver.update(width=1, lease_seconds=600.0)
    slot = await driver.granted(await driver.acquire(ttl=5.0))
    await driver.add()
    w = await driver.connect()
    await driver.advance_to(4.9)
    assert w.take() == []
    await driver.advance_to(5.0)
    assert len(w.take()) == 1
    assert (await driver.queue()).slot_count == 0
    with pytest.raises(NotFound):
        await driver.backend.renew_slot(slot.slot_id, None)
    with pytest.raises(NotFound):
        await driver.backend.release_slot(slot.slot_id)


# ---- giving up, and the drain -------------------------------------------------------------


async def test_an_acquirer_that_gives_up_is_never_granted(driver: Driver) -> None:
    await driver.update(width=1)
    holder = await driver.granted(await driver.acquire())
    gives_up = await driver.acquire(priority=9)
    behind = await driver.acquire()
    gives_up.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gives_up
    await driver.backend.release_slot(holder.slot_id)
    await driver.granted(behind)
    assert (await driver.queue()).slot_count == 1


async def test_a_draining_backend_grants_no_slots(driver: Driver) -> None:
    await driver.granted(await driver.acquire())
    await driver.backend.begin_drain(30.0)
    with pytest.raises(Unavailable):
        await driver.backend.acquire_slot("q", "late", 10.0, 0)


async def test_slots_count_as_underway_with_the_jobs(driver: Driver) -> None:
    await driver.add_n(2)
    w = await driver.connect()
    assert len(w.take()) == 2
    slots: list[SlotRecord] = [await driver.granted(await driver.acquire()) for _ in range(2)]
    view = await driver.queue()
    assert (view.underway_count, view.slot_count) == (4, 2)
    assert len({s.slot_id for s in slots}) == 2
