"""Queue rate (token bucket): the window bound, live changes, and wake-ups without spin."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatchd.engine import (
    Engine,
    EngineObserver,
    InvalidArgument,
    LeaseRecord,
    NewJob,
    Rate,
    SlotRecord,
)

from .engine_helpers import Connect, Pump, Submit


def finish(engine: Engine, lease: LeaseRecord, now: float) -> None:
    assert engine.complete(lease.worker, lease.job.id, lease.lease_id, b"ok", now) is None


def set_rate(engine: Engine, rate: Rate | None, now: float = 0.0, queue: str = "q") -> None:
    engine.update_queue(queue, rate=rate, now=now, create=True)


def no_timer_before(engine: Engine, t: float) -> bool:
    due = engine.next_wakeup()
    return due is None or due >= t


# ---- values ---------------------------------------------------------------------


def test_rate_of_defaults_burst_to_one_second_of_tokens() -> None:
    assert Rate.of(5.0) == Rate(5.0, 5)
    assert Rate.of(2.5) == Rate(2.5, 3)
    assert Rate.of(0.25) == Rate(0.25, 1)
    assert Rate.of(5.0, 2) == Rate(5.0, 2)


@pytest.mark.parametrize(
    ("per_second", "burst"),
    [(0.0, 1), (-1.0, 1), (math.inf, 1), (math.nan, 1), (2e6, 1), (1.0, -1), (1.0, 2_000_000)],
)
def test_rate_of_rejects_bad_values(per_second: float, burst: int) -> None:
    with pytest.raises(InvalidArgument):
        Rate.of(per_second, burst)


def test_bad_rate_setting_changes_nothing(engine: Engine) -> None:
    set_rate(engine, Rate.of(2.0))
    with pytest.raises(InvalidArgument):
        engine.update_queue("q", rate=2.0, width=3)  # not a Rate
    settings_ = engine.get_queue("q").settings
    assert settings_.rate == Rate.of(2.0)
    assert settings_.width == 10


def test_get_queue_shows_the_rate(engine: Engine) -> None:
    set_rate(engine, Rate.of(3.0, 7))
    assert engine.get_queue("q").settings.rate == Rate(3.0, 7)
    set_rate(engine, None)
    assert engine.get_queue("q").settings.rate is None


# ---- dispatch under a rate ----------------------------------------------------------


def test_unset_rate_is_unlimited(
    engine: Engine, submit: Submit, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", width=1000, lease_seconds=600.0, create=True)
    connect(credits=1000)
    submit(n=700)
    assert len(pump(0.0)) == 700
    assert engine.next_wakeup() == 600.0  # only the lease deadline: no rate timer


def test_burst_then_steady_rate(
    engine: Engine, submit: Submit, connect: Connect, pump: Pump
) -> None:
    set_rate(engine, Rate.of(2.0, 3))
    connect(credits=100)
    submit(n=10)
    assert len(pump(0.0)) == 3  # the burst
    assert pump(0.1) == []
    assert pump(0.49) == []
    assert len(pump(0.5)) == 1
    assert pump(0.6) == []
    assert len(pump(1.0)) == 1
    assert len(pump(2.0)) == 2  # two tokens earned meanwhile
    assert engine.get_queue("q").pending_count == 3


def test_rate_is_shared_by_all_workers_of_the_queue(
    engine: Engine, submit: Submit, connect: Connect, pump: Pump
) -> None:
    set_rate(engine, Rate.of(1.0, 2))
    workers = [connect(credits=10) for _ in range(3)]
    submit(n=20)
    assert len(pump(0.0)) == 2
    assert len(pump(1.0)) == 1
    assert sum(len(w.leases) for w in workers) == 3


def test_rate_of_one_queue_does_not_hold_back_another(
    engine: Engine, submit: Submit, connect: Connect, pump: Pump
) -> None:
    set_rate(engine, Rate.of(1.0, 1), queue="slow")
    connect(queues=["slow", "fast"], credits=100)
    submit(queue="slow", n=5)
    submit(queue="fast", n=5)
    got = pump(0.0)
    assert sorted(lease.job.queue for lease in got) == ["fast"] * 5 + ["slow"]


def test_next_wakeup_is_the_next_token_and_each_wakeup_dispatches(
    engine: Engine, submit: Submit, connect: Connect, pump: Pump
) -> None:
    """The pump sleeps until the next token: one wake-up, one dispatch, no spin."""
    engine.update_queue("q", rate=Rate.of(4.0, 2), width=100, lease_seconds=3600.0, create=True)
    connect(credits=100)
    submit(n=12)
    now = 0.0
    assert len(pump(now)) == 2
    wakes = 0
    while engine.get_queue("q").pending_count:
        due = engine.next_wakeup()
        assert due is not None
        assert due > now
        assert due == pytest.approx(now + 0.25)
        now = due
        wakes += 1
        assert len(pump(now)) == 1
    assert wakes == 10
    assert now == pytest.approx(2.5)
    assert engine.next_wakeup() == 3600.0  # only leases are left to time


def test_no_rate_timer_when_width_or_workers_hold_the_queue_back(
    engine: Engine, submit: Submit, connect: Connect, pump: Pump
) -> None:
    """A full, paused or workerless queue needs no timer: a freed slot, a resume or a
    credit kicks the pump anyway, and a timer would spin."""
    engine.update_queue("q", rate=Rate.of(1.0, 1), width=1, lease_seconds=100.0, create=True)
    submit(n=3)
    assert pump(0.0) == []  # no worker
    assert engine.next_wakeup() is None
    w = connect(credits=5)
    [lease] = pump(0.0)
    assert engine.next_wakeup() == 100.0  # full: only the lease deadline
    finish(engine, lease, 0.5)
    engine.pause("q")
    assert pump(0.5) == []
    assert no_timer_before(engine, 100.0)  # (the finished lease may leave an early entry)
    engine.resume("q")
    assert pump(0.5) == []  # no token yet: now the token is the wake-up
    assert engine.next_wakeup() == pytest.approx(1.0)
    engine.set_credit(w, 0)
    assert pump(0.6) == []
    assert no_timer_before(engine, 100.0)


def test_rate_change_takes_effect_at_once(
    engine: Engine, submit: Submit, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", rate=Rate.of(1.0, 1), width=1000, lease_seconds=3600.0, create=True)
    connect(credits=100)
    submit(n=50)
    assert len(pump(0.0)) == 1
    assert engine.next_wakeup() == pytest.approx(1.0)
    # Faster: 0.05 tokens earned at the old rate, the rest comes at 10/s.
    set_rate(engine, Rate.of(10.0, 1), now=0.05)
    assert pump(0.05) == []
    due = engine.next_wakeup()
    assert due == pytest.approx(0.05 + 0.95 / 10.0)
    assert due is not None
    assert len(pump(due)) == 1
    # Cleared: everything goes at once.
    set_rate(engine, None, now=0.2)
    assert len(pump(0.2)) == 48


def test_rate_change_caps_earned_tokens_to_the_new_burst(
    engine: Engine, submit: Submit, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", rate=Rate.of(100.0, 100), lease_seconds=3600.0, create=True)
    connect(credits=1000)
    submit(n=200)
    set_rate(engine, Rate.of(1.0, 4), now=10.0)  # 100 tokens saved up, capped to 4
    assert len(pump(10.0)) == 4
    assert pump(10.5) == []
    assert len(pump(11.0)) == 1


def test_new_rate_starts_with_a_full_bucket(
    engine: Engine, submit: Submit, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", lease_seconds=3600.0, create=True)
    connect(credits=1000)
    submit(n=20)
    set_rate(engine, Rate.of(2.0, 5), now=3.0)
    assert len(pump(3.0)) == 5
    assert len(pump(3.5)) == 1


def test_pause_saves_at_most_a_burst(
    engine: Engine, submit: Submit, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", rate=Rate.of(5.0, 3), lease_seconds=3600.0, create=True)
    connect(credits=1000)
    submit(n=100)
    assert len(pump(0.0)) == 3
    engine.pause("q")
    assert pump(60.0) == []
    engine.resume("q")
    assert len(pump(60.0)) == 3
    assert len(pump(60.2)) == 1


def test_width_and_rate_both_apply(
    engine: Engine, submit: Submit, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", rate=Rate.of(10.0, 10), width=2, lease_seconds=3600.0, create=True)
    connect(credits=100)
    submit(n=20)
    first = pump(0.0)
    assert len(first) == 2  # width, though 10 tokens are there
    for lease in first:
        finish(engine, lease, 0.0)
    assert len(pump(0.0)) == 2
    assert engine.get_queue("q").underway_count == 2


def test_tokens_are_not_spent_when_no_worker_takes_the_job(
    engine: Engine, submit: Submit, connect: Connect, pump: Pump
) -> None:
    set_rate(engine, Rate.of(1.0, 2))
    submit(n=5)
    assert pump(0.0) == []
    assert pump(5.0) == []
    connect(credits=10)
    assert len(pump(5.0)) == 2  # the full burst is still there


# ---- the window bound, over random schedules ---------------------------------------

RATES = (
    Rate.of(0.5),
    Rate.of(1.0, 3),
    Rate.of(2.5, 1),
    Rate.of(10.0),
    Rate.of(10.0, 25),
    Rate.of(100.0, 5),
    Rate.of(250.0),
)
STEPS = (0.0, 0.001, 0.03, 0.05, 0.1, 0.25, 0.37, 0.5, 0.9, 1.0, 2.5)
Op = tuple[str, int]


class GrantLog(EngineObserver):
    def __init__(self) -> None:
        self.granted: list[str] = []
        self.slots: dict[str, SlotRecord] = {}  # held now

    def slot_granted(self, request_id: str, slot: SlotRecord) -> None:
        self.granted.append(slot.slot_id)
        self.slots[slot.slot_id] = slot

    def slot_expired(self, slot: SlotRecord) -> None:
        del self.slots[slot.slot_id]


def max_over_window(times: list[float], per_second: float) -> float:
    """max over i <= j of (j - i + 1) - per_second * (times[j] - times[i]): the most any
    window of dispatch times holds beyond its earned tokens (compare with the burst)."""
    worst = -math.inf
    lowest = math.inf  # min over i <= j of i - per_second * times[i]
    for j, t in enumerate(times):
        lowest = min(lowest, j - per_second * t)
        worst = max(worst, (j + 1 - per_second * t) - lowest)
    return worst


def test_max_over_window_helper() -> None:
    assert max_over_window([0.0, 0.0, 0.0], 1.0) == 3
    assert max_over_window([0.0, 1.0, 2.0], 1.0) == pytest.approx(1.0)
    assert max_over_window([0.0, 10.0, 10.0], 1.0) == pytest.approx(2.0)


class RateRun:
    """Drives one queue through a schedule the way the service's pump would, checking
    that the pump never spins and that a wake-up while only the rate holds jobs back
    dispatches something."""

    def __init__(self, rate: Rate | None) -> None:
        self.log = GrantLog()
        self.engine = Engine(observer=self.log, rng=random.Random(0))
        self.engine.update_queue("q", rate=rate, width=50, lease_seconds=5.0, create=True)
        self.workers = [self.engine.connect(f"w{i}", ["q"], 25, 0.0) for i in range(2)]
        self.now = 0.0
        self.rate = rate
        self.segments: list[tuple[Rate | None, list[float]]] = [(rate, [])]
        self.waiting_slots: list[str] = []

    def held(self) -> list[LeaseRecord]:
        return [lease for w in self.workers for lease in w.leases.values()]

    def only_rate_holds_back(self) -> bool:
        view = self.engine.get_queue("q")
        s = view.settings
        if s.rate is None or s.paused or view.underway_count >= s.width:
            return False
        jobs_wait = view.pending_count > 0 and any(w.free_credits > 0 for w in self.workers)
        return jobs_wait or bool(self.waiting_slots)

    def pump(self) -> int:
        engine, now = self.engine, self.now
        engine.tick(now)
        before = len(self.log.granted)
        leases = [lease for _, batch in engine.dispatch(now) for lease in batch]
        granted = self.log.granted[before:]
        self.waiting_slots = [r for r in self.waiting_slots if r not in granted]
        n = len(leases) + len(granted)
        self.segments[-1][1].extend([now] * n)
        due = engine.next_wakeup()
        assert due is None or due > now, "the pump would spin"
        if self.only_rate_holds_back():
            assert self.rate is not None
            assert due is not None, "jobs wait for a token but no timer is armed"
            assert due <= now + 1.0 / self.rate.per_second + 1e-9, "the timer is late"
        return n

    def sleep(self) -> None:
        """Sleeps until the armed wake-up, as the pump's one timer does. A wake-up may come
        early (a finished lease leaves its heap entry behind), never late: when only the
        rate held jobs back, one comes by the next token and dispatches."""
        waiting = self.only_rate_holds_back()
        start = self.now
        for _ in range(50):
            due = self.engine.next_wakeup()
            if due is None:
                assert not waiting, "jobs wait for a token but no timer is armed"
                return
            self.now = due
            if self.pump() or not waiting:
                return
            # What happened at this wake-up may have freed the rate of the blame: a lease
            # that ended silenced its worker, and no worker is left with a free credit.
            if not self.only_rate_holds_back():
                return
            assert self.rate is not None
            assert self.now <= start + 1.0 / self.rate.per_second + 1e-9, "late wake-up"
        raise AssertionError("fifty wake-ups without a dispatch")

    def apply(self, op: Op) -> None:
        name, arg = op
        if name == "sleep":
            self.sleep()
            return
        getattr(self, f"do_{name}")(arg)
        self.pump()

    def do_wait(self, step: int) -> None:
        self.now += STEPS[step]

    def do_submit(self, n: int) -> None:
        if n:
            self.engine.submit([NewJob("q")] * n, self.now)

    def do_complete(self, n: int) -> None:
        for lease in self.held()[:n]:
            finish(self.engine, lease, self.now)

    def do_pause(self, paused: int) -> None:
        self.engine.update_queue("q", paused=bool(paused), now=self.now)

    def do_width(self, width: int) -> None:
        self.engine.update_queue("q", width=width, now=self.now)

    def do_credit(self, arg: int) -> None:
        self.engine.set_credit(self.workers[arg % 2], arg // 2)

    def do_slot(self, _: int) -> None:
        request = self.engine.request_slot("q", "holder", 2.0, 0, self.now)
        self.waiting_slots.append(request.request_id)

    def do_release(self, i: int) -> None:
        held = list(self.log.slots)
        if held:
            self.engine.release_slot(self.log.slots.pop(held[i % len(held)]).slot_id)

    def do_rate(self, i: int) -> None:
        self.rate = RATES[i] if i < len(RATES) else None
        self.engine.update_queue("q", rate=self.rate, now=self.now)
        self.segments.append((self.rate, []))

    def check_bound(self) -> None:
        for rate, times in self.segments:
            if rate is None or not times:
                continue
            assert times == sorted(times)
            excess = max_over_window(times, rate.per_second)
            assert excess <= rate.burst + 1e-6, (
                f"{excess:.6f} dispatches beyond the earned tokens, burst {rate.burst}"
            )


COMMON_OPS = (
    st.tuples(st.just("wait"), st.integers(0, len(STEPS) - 1))
    | st.tuples(st.just("sleep"), st.just(0))
    | st.tuples(st.just("submit"), st.integers(1, 30))
    | st.tuples(st.just("complete"), st.integers(1, 30))
    | st.tuples(st.just("pause"), st.integers(0, 1))
    | st.tuples(st.just("width"), st.integers(0, 60))
    | st.tuples(st.just("credit"), st.integers(0, 100))
    | st.tuples(st.just("slot"), st.just(0))
    | st.tuples(st.just("release"), st.integers(0, 10))
)
RATE_INDEX = st.integers(0, len(RATES) - 1)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(
    rate=RATE_INDEX, backlog=st.integers(0, 40), ops=st.lists(COMMON_OPS, min_size=5, max_size=80)
)
def test_dispatches_in_any_window_stay_under_burst_plus_rate(
    rate: int, backlog: int, ops: list[Op]
) -> None:
    run = RateRun(RATES[rate])
    run.apply(("submit", backlog))
    for op in ops:
        run.apply(op)
    run.check_bound()


@FAST
@given(
    rate=st.integers(0, len(RATES)),
    ops=st.lists(COMMON_OPS | st.tuples(st.just("rate"), st.integers(0, len(RATES))), max_size=80),
)
def test_window_bound_holds_per_rate_segment_across_rate_changes(rate: int, ops: list[Op]) -> None:
    """After a change only the new burst may go at once: earned tokens are capped."""
    run = RateRun(RATES[rate] if rate < len(RATES) else None)
    run.pump()
    for op in ops:
        run.apply(op)
    run.check_bound()
