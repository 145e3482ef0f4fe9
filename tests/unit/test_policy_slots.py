"""Semaphore mode: slots requested, granted through the observer, renewed, released and
expired; they share the queue's width (and rate) with streamed jobs."""

from __future__ import annotations

import pytest

from dispatchd.engine import (
    Engine,
    EngineObserver,
    InvalidArgument,
    NotFound,
    Rate,
    SlotRecord,
    Unavailable,
)

from .engine_helpers import Connect, Pump, Submit, ok


class SlotLog(EngineObserver):
    def __init__(self) -> None:
        self.granted: list[tuple[str, SlotRecord]] = []
        self.expired: list[SlotRecord] = []
        self.released: list[str] = []

    def slot_granted(self, request_id: str, slot: SlotRecord) -> None:
        self.granted.append((request_id, slot))

    def slot_expired(self, slot: SlotRecord) -> None:
        self.expired.append(slot)

    def lease_released(self, queue: str) -> None:
        self.released.append(queue)

    def granted_ids(self) -> list[str]:
        return [request_id for request_id, _ in self.granted]


@pytest.fixture
def log(engine: Engine) -> SlotLog:
    engine.observer = SlotLog()
    assert isinstance(engine.observer, SlotLog)
    return engine.observer


def ask(engine: Engine, now: float = 0.0, ttl: float = 10.0, priority: int = 0) -> str:
    return engine.request_slot("q", "cron-7", ttl, priority, now).request_id


def test_request_is_granted_by_the_next_pass(engine: Engine, pump: Pump, log: SlotLog) -> None:
    request = engine.request_slot("q", "cron-7", 10.0, 0, 1.0)
    assert request.queue == "q"
    assert log.granted == []  # granted by a pass, not by the call
    assert pump(1.0) == []
    [(request_id, slot)] = log.granted
    assert request_id == request.request_id
    assert slot.slot_id == request.request_id
    assert (slot.queue, slot.holder, slot.ttl, slot.deadline) == ("q", "cron-7", 10.0, 11.0)
    view = engine.get_queue("q")
    assert (view.slot_count, view.underway_count) == (1, 1)
    assert engine.underway_total() == 1
    assert engine.next_wakeup() == 11.0


def test_request_creates_its_queue(engine: Engine) -> None:
    ask(engine)
    assert [q.name for q in engine.list_queues()] == ["q"]


@pytest.mark.parametrize(
    ("queue", "holder", "ttl"),
    [
        ("", "h", 10.0),
        ("bad name", "h", 10.0),
        ("q", "h" * 257, 10.0),
        ("q", "h", 0.5),
        ("q", "h", 3601.0),
    ],
)
def test_bad_requests_are_refused(engine: Engine, queue: str, holder: str, ttl: float) -> None:
    with pytest.raises(InvalidArgument):
        engine.request_slot(queue, holder, ttl, 0, 0.0)
    assert engine.list_queues() == []


def test_slots_and_jobs_share_the_width(
    engine: Engine, submit: Submit, connect: Connect, pump: Pump, log: SlotLog
) -> None:
    engine.update_queue("q", width=3, create=True)
    connect(credits=10)
    submit(n=2)
    leases = pump(0.0)
    assert len(leases) == 2
    first, second, third = ask(engine), ask(engine), ask(engine)
    pump(0.0)
    assert log.granted_ids() == [first]  # one unit of width was left
    submit(n=1)
    assert pump(0.0) == []  # and a job cannot pass the slot holders either
    assert engine.get_queue("q").underway_count == 3
    ok(engine, leases[0], 1.0)
    pump(1.0)
    assert log.granted_ids() == [first, second]  # waiting acquirers go before jobs
    engine.release_slot(first)
    pump(1.0)
    assert log.granted_ids() == [first, second, third]
    engine.release_slot(second)
    [lease] = pump(2.0)
    assert lease.job.queue == "q"
    assert engine.get_queue("q").underway_count == 3


def test_higher_priority_requests_first_then_fifo(engine: Engine, pump: Pump, log: SlotLog) -> None:
    engine.update_queue("q", width=0, create=True)
    low = ask(engine, priority=0)
    high = ask(engine, priority=5)
    low2 = ask(engine, priority=0)
    engine.update_queue("q", width=3)
    pump(0.0)
    assert log.granted_ids() == [high, low, low2]


def test_rate_applies_to_grants_and_is_shared_with_jobs(
    engine: Engine, submit: Submit, connect: Connect, pump: Pump, log: SlotLog
) -> None:
    engine.update_queue("q", rate=Rate.of(1.0, 2), lease_seconds=600.0, create=True)
    a, b, c = ask(engine, ttl=600.0), ask(engine, ttl=600.0), ask(engine, ttl=600.0)
    submit(n=1)
    connect()
    assert pump(0.0) == []
    assert log.granted_ids() == [a, b]  # the burst
    assert engine.next_wakeup() == pytest.approx(1.0)
    assert pump(1.0) == []
    assert log.granted_ids() == [a, b, c]
    [lease] = pump(2.0)  # the job takes the next token
    assert lease.job.queue == "q"


def test_paused_queue_grants_nothing(engine: Engine, pump: Pump, log: SlotLog) -> None:
    engine.update_queue("q", paused=True, create=True)
    request = ask(engine)
    pump(0.0)
    assert log.granted == []
    engine.resume("q")
    pump(0.0)
    assert log.granted_ids() == [request]


def test_narrowed_width_holds_back_grants(engine: Engine, pump: Pump, log: SlotLog) -> None:
    held = [ask(engine) for _ in range(3)]
    pump(0.0)
    engine.update_queue("q", width=2)
    extra = ask(engine)
    engine.release_slot(held[0])
    pump(0.0)
    assert extra not in log.granted_ids()  # 2 held, width 2
    engine.release_slot(held[1])
    pump(0.0)
    assert log.granted_ids()[-1] == extra


# ---- renew, release, expire -------------------------------------------------------------


def test_renew_extends_the_deadline(engine: Engine, pump: Pump, log: SlotLog) -> None:
    slot_id = ask(engine, ttl=10.0)
    pump(0.0)
    slot = engine.renew_slot(slot_id, None, 8.0)
    assert slot.deadline == 18.0
    pump(15.0)
    assert log.expired == []
    slot = engine.renew_slot(slot_id, 30.0, 17.0)  # a new ttl from now on
    assert (slot.ttl, slot.deadline) == (30.0, 47.0)
    pump(46.9)
    assert log.expired == []
    pump(47.0)
    assert [s.slot_id for s in log.expired] == [slot_id]


def test_renew_with_a_shorter_ttl_is_honoured(engine: Engine, pump: Pump, log: SlotLog) -> None:
    slot_id = ask(engine, ttl=100.0)
    pump(0.0)
    assert engine.renew_slot(slot_id, 5.0, 1.0).deadline == 6.0
    assert engine.next_wakeup() == 6.0
    pump(6.0)
    assert [s.slot_id for s in log.expired] == [slot_id]


def test_renew_refusals(engine: Engine, pump: Pump) -> None:
    slot_id = ask(engine)
    pump(0.0)
    with pytest.raises(InvalidArgument):
        engine.renew_slot(slot_id, 0.1, 1.0)
    with pytest.raises(InvalidArgument):
        engine.renew_slot("", None, 1.0)
    with pytest.raises(NotFound):
        engine.renew_slot("slot-unknown", None, 1.0)
    assert engine.renew_slot(slot_id, None, 1.0).deadline == 11.0


def test_renew_of_a_waiting_request_is_not_found(engine: Engine) -> None:
    engine.update_queue("q", width=0, create=True)
    request = ask(engine)
    with pytest.raises(NotFound):
        engine.renew_slot(request, None, 1.0)


def test_release_frees_the_width(
    engine: Engine, submit: Submit, connect: Connect, pump: Pump, log: SlotLog
) -> None:
    engine.update_queue("q", width=1, create=True)
    slot_id = ask(engine)
    pump(0.0)
    submit()
    connect()
    assert pump(0.0) == []
    released = engine.release_slot(slot_id)
    assert released.slot_id == slot_id
    assert log.released == ["q"]
    assert engine.get_queue("q").slot_count == 0
    assert len(pump(0.0)) == 1
    with pytest.raises(NotFound):
        engine.release_slot(slot_id)
    with pytest.raises(InvalidArgument):
        engine.release_slot("")
    assert log.expired == []  # a released slot never expires later
    pump(100.0)
    assert log.expired == []


def test_expiry_frees_the_width_and_is_reported(
    engine: Engine, submit: Submit, connect: Connect, pump: Pump, log: SlotLog
) -> None:
    engine.update_queue("q", width=1, lease_seconds=600.0, create=True)
    slot_id = ask(engine, ttl=5.0)
    pump(0.0)
    submit()
    connect()
    assert pump(4.9) == []
    assert log.expired == []
    [lease] = pump(5.0)
    [expired] = log.expired
    assert (expired.slot_id, expired.holder, expired.deadline) == (slot_id, "cron-7", 5.0)
    assert engine.get_queue("q").slot_count == 0
    assert lease.job.state.name == "UNDERWAY"
    with pytest.raises(NotFound):
        engine.renew_slot(slot_id, None, 6.0)
    with pytest.raises(NotFound):
        engine.release_slot(slot_id)


# ---- cancel and drain ----------------------------------------------------------------


def test_cancelled_request_is_never_granted(engine: Engine, pump: Pump, log: SlotLog) -> None:
    engine.update_queue("q", width=1, create=True)
    holder = ask(engine)
    pump(0.0)
    gives_up = ask(engine, priority=9)
    behind = ask(engine)
    pump(0.0)
    assert log.granted_ids() == [holder]
    engine.cancel_slot_request(gives_up)
    engine.cancel_slot_request("slot-unknown")  # no-op
    engine.release_slot(holder)
    pump(1.0)
    assert log.granted_ids() == [holder, behind]


def test_cancel_after_the_grant_changes_nothing(engine: Engine, pump: Pump, log: SlotLog) -> None:
    request = ask(engine)
    pump(0.0)
    engine.cancel_slot_request(request)
    assert engine.get_queue("q").slot_count == 1
    engine.release_slot(request)


def test_draining_refuses_requests_and_grants_nothing(
    engine: Engine, pump: Pump, log: SlotLog
) -> None:
    engine.update_queue("q", width=1, create=True)
    held = ask(engine)
    waiting = ask(engine)
    pump(0.0)
    engine.begin_drain()
    with pytest.raises(Unavailable):
        ask(engine)
    engine.release_slot(held)
    pump(1.0)
    assert log.granted_ids() == [held]
    assert waiting not in log.granted_ids()


def test_underway_total_counts_slots_and_leases(
    engine: Engine, submit: Submit, connect: Connect, pump: Pump
) -> None:
    submit(n=2)
    connect()
    ask(engine)
    ask(engine)
    assert len(pump(0.0)) == 2
    assert engine.underway_total() == 4
    assert engine.get_queue("q").underway_count == 4
