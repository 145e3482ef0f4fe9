"""A dispatch pass costs what can move now, not what is stored: queues that are paused,
full, out of tokens or served by no worker with a free credit cost it nothing, however many
jobs they hold (engine/ready.py). Cost is counted, not timed: the function calls one pass
makes, which a scan of every queue with pending jobs would grow by one or more per queue."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from dispatchd.engine import Engine, EngineLimits, NewJob, Rate

from .engine_helpers import Connect, Pump, ok

IDLE_QUEUES = 20_000
BIG_QUEUE = 20_000


def calls_of(run: Callable[[], object]) -> int:
    """How many Python and C functions ``run`` calls (sys.setprofile events)."""
    count = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return count


def round_trip_calls(engine: Engine, connect: Connect, pump: Pump) -> int:
    """One job of the healthy queue "h" submitted, dispatched and finished: the calls of
    the two passes this takes (after the submit, after the result)."""
    [job] = engine.submit([NewJob("h")], 10.0)
    leases = []
    first = calls_of(lambda: leases.extend(pump(10.0)))
    [lease] = leases
    assert lease.job.id == job.id
    ok(engine, lease, 10.5)
    return first + calls_of(lambda: pump(10.5))


@pytest.mark.parametrize("limits", [EngineLimits(max_queues=0)])
def test_queues_no_worker_serves_cost_a_pass_nothing(
    engine: Engine, connect: Connect, pump: Pump
) -> None:
    connect("h", credits=1)
    before = round_trip_calls(engine, connect, pump)
    for i in range(IDLE_QUEUES):
        engine.submit([NewJob(f"idle-{i}")], 1.0)
    assert len(engine.list_queues()) == IDLE_QUEUES + 1
    after = round_trip_calls(engine, connect, pump)
    assert after <= before + 10, (before, after)


@pytest.mark.parametrize(
    "hold",
    [
        pytest.param(lambda e: e.pause("big"), id="paused"),
        pytest.param(lambda e: e.update_queue("big", width=0), id="width 0"),
        pytest.param(
            lambda e: e.update_queue("big", rate=Rate.of(0.001, 1), now=1.0), id="out of tokens"
        ),
    ],
)
def test_a_held_back_queue_with_many_jobs_costs_a_pass_nothing(
    engine: Engine, connect: Connect, pump: Pump, hold: Callable[[Engine], object]
) -> None:
    """The held-back queue shares the healthy queue's worker, so the pass does look at it
    once (and files it away); from then on it costs nothing."""
    connect(["h", "big"], credits=1)
    before = round_trip_calls(engine, connect, pump)
    engine.update_queue("big", width=1_000_000, create=True)
    for _ in range(BIG_QUEUE // 10_000):
        engine.submit([NewJob("big") for _ in range(10_000)], 1.0)
    hold(engine)
    for lease in pump(1.0):  # a rated queue spends its one token here
        ok(engine, lease, 1.0)
    pump(1.0)  # ... and is filed away as out of tokens
    after = round_trip_calls(engine, connect, pump)
    assert after <= before + 10, (before, after)
    assert engine.get_queue("big").pending_count >= BIG_QUEUE - 1


def test_the_ready_set_keeps_round_robin_across_queues(
    engine: Engine, connect: Connect, pump: Pump
) -> None:
    """Queues that leave the set (full) and come back (a slot freed) take their turn in the
    rotation again: three queues of width 1 sharing a worker of one credit go a, b, c, a ..."""
    for name in ("a", "b", "c"):
        engine.update_queue(name, width=1, create=True)
        engine.submit([NewJob(name) for _ in range(3)], 0.0)
    connect(["a", "b", "c"], credits=1)
    order = []
    now = 0.0
    for _ in range(9):
        [lease] = pump(now)
        order.append(lease.job.queue)
        now += 1.0
        ok(engine, lease, now)
    assert sorted(order) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert all(order[i] != order[i + 1] for i in range(len(order) - 1)), order


def test_a_rated_queue_whose_worker_was_busy_elsewhere_still_gets_its_turn(
    engine: Engine, connect: Connect
) -> None:
    """Queue b waits for its next token while its worker is full with jobs of queue a, so no
    timer is kept for b then; when a job of a frees a credit, b's timer comes back and all
    of b runs at its rate (it once stayed pending for good)."""
    engine.update_queue("b", rate=Rate.of(1.0, 1), width=10, create=True)
    engine.submit([NewJob("b") for _ in range(3)], 0.0)
    engine.submit([NewJob("a") for _ in range(20)], 0.0)
    worker = connect(["a", "b"], credits=2)
    ran: list[str] = []
    now = 0.0

    def one_pass() -> None:
        ran.extend(lease.job.queue for _, batch in engine.dispatch(now) for lease in batch)

    for _ in range(40):  # a pass, then one job ends: the worker stays busy with a
        one_pass()
        engine.next_wakeup()  # what the pump asks after every pass
        now += 0.05
        for lease in list(worker.leases.values())[:1]:
            ok(engine, lease, now)
    while (due := engine.next_wakeup()) is not None and due < 10.0:  # then timers alone
        now = max(now, due)
        one_pass()
        for lease in list(worker.leases.values()):
            ok(engine, lease, now)
    assert ran.count("b") == 3, ran
    assert engine.get_queue("b").pending_count == 0
