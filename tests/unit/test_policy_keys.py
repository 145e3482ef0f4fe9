"""Ordering keys (one at a time, in submit order), fairness keys (round-robin, weights)
and per-key limits (in-flight bound, per-key rate)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence

import pytest

from dispatchd.engine import (
    Engine,
    InvalidArgument,
    JobFailure,
    JobState,
    KeyLimits,
    LeaseRecord,
    NewJob,
    RetryPolicy,
)
from tests.unit.engine_helpers import let_go

from .engine_helpers import Add, Connect, Pump, ok, state


def fail(engine: Engine, lease: LeaseRecord, now: float, retryable: bool = True) -> None:
    failure = JobFailure("boom", retryable)
    assert engine.complete(lease.worker, lease.job.id, lease.lease_id, failure, now) is None


def jain(counts: Sequence[int]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one takes everything."""
    total = sum(counts)
    return total * total / (len(counts) * sum(c * c for c in counts))


def test_jain_helper() -> None:
    assert jain([5, 5, 5]) == 1.0
    assert jain([9, 0, 0]) == pytest.approx(1 / 3)


def drain(
    engine: Engine, pump: Pump, steps: int, now: float = 0.0, finish: bool = True
) -> list[LeaseRecord]:
    """``steps`` pump passes; every job dispatched is completed before the next pass."""
    out: list[LeaseRecord] = []
    for _ in range(steps):
        leases = pump(now)
        out.extend(leases)
        if finish:
            for lease in leases:
                ok(engine, lease, now)
    return out


# ---- ordering keys ----------------------------------------------------------------------


def test_same_key_runs_one_at_a_time_in_submit_order_with_three_workers(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    """Later jobs of a key wait even with a higher priority; other keys go meanwhile."""
    chain = [add(ordering_key="k", priority=p) for p in (0, 5, 9, 1)]
    x = add(ordering_key="x", priority=2)
    free = add(priority=-5)
    workers = [connect(worker_id=f"w{i}", credits=1) for i in range(3)]
    first = pump(0.0)
    assert {lease.job.id for lease in first} == {chain[0].id, x.id, free.id}
    assert {lease.worker.key for lease in first} == {w.key for w in workers}
    order = [chain[0].id]
    now = 0.0
    for _ in range(3):
        now += 1.0
        for w in workers:
            for lease in list(w.leases.values()):
                ok(engine, lease, now)
        got = pump(now)
        keyed = [lease.job.id for lease in got if lease.job.ordering_key == "k"]
        assert len(keyed) == 1
        order.extend(keyed)
    assert order == [j.id for j in chain]


def random_run(
    engine: Engine, pump: Pump, rng: random.Random, steps: int
) -> list[tuple[str, str, int]]:
    """Completes a random subset of the held leases between passes; returns the dispatches
    as (ordering key, job id, lease count of that key at the time)."""
    seen: list[tuple[str, str, int]] = []
    now = 0.0
    for _ in range(steps):
        for lease in pump(now):
            held = [
                ls
                for w in engine.workers()
                for ls in w.leases.values()
                if ls.job.ordering_key == lease.job.ordering_key
            ]
            seen.append((lease.job.ordering_key, lease.job.id, len(held)))
        now += 1.0
        for w in engine.workers():
            for lease in list(w.leases.values()):
                if rng.random() < 0.5:
                    ok(engine, lease, now)
    return seen


@pytest.mark.parametrize("seed", range(5))
def test_random_completion_keeps_each_key_in_order(
    engine: Engine, connect: Connect, pump: Pump, seed: int
) -> None:
    rng = random.Random(seed)
    submitted: dict[str, list[str]] = defaultdict(list)
    for _ in range(60):
        key = rng.choice("abcde")
        [job] = engine.submit([NewJob("q", ordering_key=key, priority=rng.randint(-3, 3))], 0.0)
        submitted[key].append(job.id)
    for i in range(3):
        connect(worker_id=f"w{i}", credits=2)
    seen = random_run(engine, pump, rng, 400)
    by_key: dict[str, list[str]] = defaultdict(list)
    for key, job_id, held in seen:
        assert held == 1, f"key {key} has two jobs underway"
        by_key[key].append(job_id)
    assert by_key == submitted


def test_priority_applies_across_keys(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", width=1, create=True)
    k1 = add(ordering_key="k1", priority=1)
    k2 = add(ordering_key="k2", priority=5)
    k3 = add(ordering_key="k3", priority=3)
    k1b = add(ordering_key="k1", priority=100)
    connect()
    got = [lease.job for lease in drain(engine, pump, 4)]
    assert got == [k2, k3, k1, k1b]


def test_different_keys_run_in_parallel(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    jobs = [add(ordering_key=f"k{i}") for i in range(5)]
    blocked = [add(ordering_key=f"k{i}") for i in range(5)]
    connect()
    assert {lease.job.id for lease in pump(0.0)} == {j.id for j in jobs}
    view = engine.get_queue("q")
    assert (view.underway_count, view.pending_count) == (5, 5)
    assert all(j.state is JobState.PENDING for j in blocked)


def test_ordering_keys_are_per_queue(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    a = add(queue="a", ordering_key="k")
    b = add(queue="b", ordering_key="k")
    connect(queues=["a", "b"])
    assert {lease.job.id for lease in pump(0.0)} == {a.id, b.id}


def test_failed_head_in_backoff_blocks_its_key(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    head = add(ordering_key="k", retry_policy=RetryPolicy.of(3, 10.0, 10.0, 1.0, 0.0))
    second = add(ordering_key="k", priority=9)
    other = add(ordering_key="o")
    connect()
    first = {lease.job.id: lease for lease in pump(0.0)}
    assert set(first) == {head.id, other.id}
    fail(engine, first[head.id], 0.0)
    assert head.state is JobState.SCHEDULED
    for t in range(1, 10):
        assert pump(float(t)) == []
    assert state(engine, second) is JobState.PENDING
    [again] = pump(10.0)
    assert again.job is head
    assert head.attempt == 2
    ok(engine, again, 11.0)
    [then] = pump(11.0)
    assert then.job is second


def test_dead_head_lets_the_next_job_go(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    head = add(ordering_key="k", retry_policy=RetryPolicy.of(1, 1.0, 1.0, 1.0, 0.0))
    second = add(ordering_key="k")
    connect()
    [lease] = pump(0.0)
    fail(engine, lease, 1.0)
    assert state(engine, head) is JobState.DEAD
    assert pump(1.0)[0].job is second


def test_head_requeued_after_lease_expiry_still_holds_the_key(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", lease_seconds=5.0, create=True)
    head = add(ordering_key="k")
    second = add(ordering_key="k")
    connect()
    pump(0.0)
    connect()  # takes the job the first worker's expired lease gives back
    [again] = pump(5.0)
    assert again.job is head
    assert state(engine, second) is JobState.PENDING
    ok(engine, again, 6.0)
    assert pump(6.0)[0].job is second


def test_failed_head_without_policy_releases_the_key(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    head = add(ordering_key="k")
    second = add(ordering_key="k")
    connect()
    [lease] = pump(0.0)
    fail(engine, lease, 1.0)
    assert state(engine, head) is JobState.FAILED
    assert pump(1.0)[0].job is second


def test_cancel_of_a_waiting_job_keeps_the_rest_in_order(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    a, b, c = (add(ordering_key="k") for _ in range(3))
    engine.cancel(b.id, 0.0)
    connect()
    got = [lease.job for lease in drain(engine, pump, 3)]
    assert got == [a, c]


def test_cancel_of_a_pending_head_advances_the_key(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", width=0, create=True)
    a, b = add(ordering_key="k"), add(ordering_key="k")
    connect()
    engine.cancel(a.id, 0.0)
    engine.update_queue("q", width=5)
    [lease] = pump(0.0)
    assert lease.job is b


@pytest.mark.parametrize("answer", ["result", "lease_expiry", "disconnect"])
def test_cancelled_underway_head_keeps_the_key_until_the_worker_lets_go(
    engine: Engine, add: Add, connect: Connect, pump: Pump, answer: str
) -> None:
    engine.update_queue("q", lease_seconds=10.0, create=True)
    a, b = add(ordering_key="k"), add(ordering_key="k")
    w = connect()
    [lease] = pump(0.0)
    _, holder = engine.cancel(a.id, 1.0)
    assert holder is w
    assert state(engine, a) is JobState.CANCELLED
    assert pump(2.0) == []  # the worker may still be running it
    assert state(engine, b) is JobState.PENDING
    if answer == "result":
        ok(engine, lease, 3.0)
    elif answer == "disconnect":
        engine.disconnect(w, 3.0)
        connect()
    now = 10.0 if answer == "lease_expiry" else 3.0
    if answer == "lease_expiry":
        engine.tick(now)
        let_go(engine, w, now)
    [nxt] = pump(now)
    assert nxt.job is b
    assert state(engine, a) is JobState.CANCELLED


def test_scheduled_head_blocks_later_jobs_of_its_key(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    a = add(ordering_key="k", not_before=10.0)
    b = add(ordering_key="k")
    connect()
    assert pump(5.0) == []
    assert (a.state, state(engine, b)) == (JobState.SCHEDULED, JobState.PENDING)
    [lease] = pump(10.0)
    assert lease.job is a
    ok(engine, lease, 11.0)
    assert pump(11.0)[0].job is b


def test_delayed_later_job_waits_for_its_turn_and_its_time(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    a = add(ordering_key="k")
    b = add(ordering_key="k", not_before=50.0)
    connect()
    [lease] = pump(0.0)
    assert lease.job is a
    ok(engine, lease, 1.0)
    assert pump(1.0) == []
    assert state(engine, b) is JobState.SCHEDULED
    assert pump(50.0)[0].job is b


def test_expiry_inside_a_chain(engine: Engine, add: Add, connect: Connect, pump: Pump) -> None:
    engine.update_queue("q", width=0, create=True)
    a = add(ordering_key="k", expire_at=5.0)  # the head
    b = add(ordering_key="k")
    c = add(ordering_key="k", expire_at=6.0)  # blocked behind b
    d = add(ordering_key="k")
    connect()
    pump(7.0)
    assert (state(engine, a), state(engine, c)) == (JobState.EXPIRED, JobState.EXPIRED)
    engine.update_queue("q", width=5)
    got = [lease.job for lease in drain(engine, pump, 3, now=7.0)]
    assert got == [b, d]


def test_reprioritize_does_not_break_key_order(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    a, b, c = (add(ordering_key="k") for _ in range(3))
    engine.reprioritize(c.id, 50)
    engine.reprioritize(a.id, -50)
    connect()
    got = [lease.job for lease in drain(engine, pump, 3)]
    assert got == [a, b, c]


def test_retried_dead_job_rejoins_its_key_at_the_back(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    a = add(ordering_key="k", retry_policy=RetryPolicy.of(1, 1.0, 1.0, 1.0, 0.0))
    b = add(ordering_key="k")
    connect()
    [lease] = pump(0.0)
    fail(engine, lease, 1.0)
    [lease_b] = pump(1.0)
    assert lease_b.job is b
    engine.retry(a.id, 2.0)
    assert pump(2.0) == []  # b holds the key
    ok(engine, lease_b, 3.0)
    [again] = pump(3.0)
    assert again.job.id == a.id
    assert again.job.attempt == 2


# ---- fairness keys ---------------------------------------------------------------------


def test_big_backlog_cannot_starve_a_small_key(
    engine: Engine, connect: Connect, pump: Pump
) -> None:
    engine.submit([NewJob("q", fairness_key="big")] * 10_000, 0.0)
    small = engine.submit([NewJob("q", fairness_key="small")] * 10, 0.0)
    engine.update_queue("q", width=2)
    connect(credits=2)
    got = drain(engine, pump, 10)
    assert Counter(lease.job.fairness_key for lease in got) == {"big": 10, "small": 10}
    assert {lease.job.id for lease in got} >= {j.id for j in small}


def test_round_robin_among_keys_with_skewed_backlogs_is_fair(
    engine: Engine, connect: Connect, pump: Pump
) -> None:
    """100 keys, backlogs from 10 to 600 jobs: while every key has work, each gets the same
    share (Jain's index 1), however the backlogs are skewed."""
    keys = [f"tenant-{i}" for i in range(100)]
    backlogs = {k: 10 + (i * 37) % 600 for i, k in enumerate(keys)}
    rng = random.Random(7)
    specs = [NewJob("q", fairness_key=k) for k in keys for _ in range(backlogs[k])]
    rng.shuffle(specs)
    for i in range(0, len(specs), 5000):
        engine.submit(specs[i : i + 5000], 0.0)
    engine.update_queue("q", width=50)
    connect(credits=50)
    window = min(backlogs.values()) * len(keys)  # every key still has work throughout
    got = drain(engine, pump, window // 50)
    assert len(got) == window
    counts = Counter(lease.job.fairness_key for lease in got)
    assert jain([counts[k] for k in keys]) >= 0.999
    assert set(counts.values()) == {10}


def test_jobs_without_a_fairness_key_share_one_lane(
    engine: Engine, connect: Connect, pump: Pump
) -> None:
    engine.submit([NewJob("q")] * 100, 0.0)
    engine.submit([NewJob("q", fairness_key="t")] * 100, 0.0)
    engine.update_queue("q", width=1)
    connect()
    got = drain(engine, pump, 20)
    assert Counter(lease.job.fairness_key for lease in got) == {"": 10, "t": 10}


def test_priority_still_orders_jobs_within_a_key(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", width=1, create=True)
    low = add(fairness_key="a", priority=0)
    high = add(fairness_key="a", priority=9)
    connect()
    got = [lease.job for lease in drain(engine, pump, 2)]
    assert got == [high, low]


@pytest.mark.parametrize("weights", [(3, 1), (1, 2, 5), (4, 4, 1)])
def test_fairness_weight_gives_proportional_shares(
    engine: Engine, connect: Connect, pump: Pump, weights: tuple[int, ...]
) -> None:
    for i, w in enumerate(weights):
        engine.submit([NewJob("q", fairness_key=f"k{i}", fairness_weight=w)] * 500, 0.0)
    engine.update_queue("q", width=1)
    connect()
    rounds = 10
    got = drain(engine, pump, rounds * sum(weights))
    counts = Counter(lease.job.fairness_key for lease in got)
    assert [counts[f"k{i}"] for i in range(len(weights))] == [rounds * w for w in weights]


def test_invalid_fairness_weight(engine: Engine) -> None:
    with pytest.raises(InvalidArgument, match="fairness_weight"):
        engine.submit([NewJob("q", fairness_weight=1001)], 0.0)
    with pytest.raises(InvalidArgument, match="fairness_key"):
        engine.submit([NewJob("q", fairness_key="x" * 257)], 0.0)


def test_draining_a_lane_does_not_cost_a_worker_its_turn(
    engine: Engine, connect: Connect, pump: Pump
) -> None:
    """One job per pass still alternates between the queue's workers."""
    a = connect(worker_id="a", credits=5)
    b = connect(worker_id="b", credits=5)
    who = []
    for t in range(6):
        engine.submit([NewJob("q")], float(t))
        [lease] = pump(float(t))
        who.append(lease.worker.worker_id)
        ok(engine, lease, float(t))
    assert who == ["a", "b"] * 3
    assert a.leases == b.leases == {}


# ---- key limits ------------------------------------------------------------------------


def test_key_limits_values() -> None:
    assert KeyLimits.of(0, 0.0, 0) == KeyLimits()
    limits = KeyLimits.of(3, 2.0, 0)
    assert limits.max_in_flight_per_key == 3
    assert limits.per_key_rate is not None
    assert (limits.per_key_rate.per_second, limits.per_key_rate.burst) == (2.0, 2)
    for bad in [(-1, 0.0, 0), (0, -1.0, 0), (0, 1.0, -1), (2_000_000, 0.0, 0), (0, 2e6, 0)]:
        with pytest.raises(InvalidArgument):
            KeyLimits.of(*bad)


def test_bad_key_limits_setting_changes_nothing(engine: Engine) -> None:
    engine.update_queue("q", key_limits=KeyLimits.of(2, 0.0, 0), create=True)
    with pytest.raises(InvalidArgument):
        engine.update_queue("q", key_limits=2, width=1)
    s = engine.get_queue("q").settings
    assert (s.key_limits, s.width) == (KeyLimits.of(2, 0.0, 0), 10)


def test_max_in_flight_per_key(engine: Engine, connect: Connect, pump: Pump) -> None:
    engine.update_queue("q", key_limits=KeyLimits.of(2, 0.0, 0), create=True)
    engine.submit([NewJob("q", fairness_key="a")] * 50, 0.0)
    engine.submit([NewJob("q", fairness_key="b")] * 50, 0.0)
    engine.submit([NewJob("q", fairness_key="c")] * 1, 0.0)
    w = connect(credits=10)
    got = pump(0.0)
    assert Counter(lease.job.fairness_key for lease in got) == {"a": 2, "b": 2, "c": 1}
    assert pump(0.0) == []  # width 10, but a and b are at their bound
    a_lease = next(lease for lease in got if lease.job.fairness_key == "a")
    ok(engine, a_lease, 1.0)
    [more] = pump(1.0)
    assert more.job.fairness_key == "a"
    assert len(w.leases) == 5


def test_cancelled_underway_job_counts_in_flight_until_the_worker_answers(
    engine: Engine, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", key_limits=KeyLimits.of(1, 0.0, 0), create=True)
    engine.submit([NewJob("q", fairness_key="a")] * 3, 0.0)
    connect()
    [lease] = pump(0.0)
    engine.cancel(lease.job.id, 1.0)
    assert pump(1.0) == []
    ok(engine, lease, 2.0)
    assert len(pump(2.0)) == 1


def test_per_key_rate(engine: Engine, connect: Connect, pump: Pump) -> None:
    engine.update_queue(
        "q", key_limits=KeyLimits.of(0, 2.0, 1), lease_seconds=600.0, width=100, create=True
    )
    engine.submit([NewJob("q", fairness_key="a")] * 10, 0.0)
    engine.submit([NewJob("q", fairness_key="b")] * 10, 0.0)
    connect(credits=100)
    assert Counter(lease.job.fairness_key for lease in pump(0.0)) == {"a": 1, "b": 1}
    assert pump(0.25) == []
    assert engine.next_wakeup() == pytest.approx(0.5)
    engine.submit([NewJob("q", fairness_key="c")] * 3, 0.3)
    assert [lease.job.fairness_key for lease in pump(0.3)] == ["c"]  # its own bucket
    assert Counter(lease.job.fairness_key for lease in pump(0.5)) == {"a": 1, "b": 1}
    due = engine.next_wakeup()
    assert due is not None
    assert 0.5 < due <= 0.8


def test_key_rate_wakeups_each_dispatch(engine: Engine, connect: Connect, pump: Pump) -> None:
    engine.update_queue(
        "q", key_limits=KeyLimits.of(0, 4.0, 1), lease_seconds=600.0, width=100, create=True
    )
    engine.submit([NewJob("q", fairness_key="a")] * 9, 0.0)
    connect(credits=100)
    now = 0.0
    assert len(pump(now)) == 1
    for _ in range(8):
        due = engine.next_wakeup()
        assert due is not None
        assert due == pytest.approx(now + 0.25)
        now = due
        assert len(pump(now)) == 1
    assert engine.get_queue("q").pending_count == 0


def test_blocked_key_does_not_block_others(engine: Engine, connect: Connect, pump: Pump) -> None:
    engine.update_queue("q", key_limits=KeyLimits.of(1, 1.0, 1), width=100, create=True)
    engine.submit([NewJob("q", fairness_key="hog", priority=9)] * 1000, 0.0)
    others = engine.submit([NewJob("q", fairness_key=f"t{i}") for i in range(20)], 0.0)
    connect(credits=100)
    got = pump(0.0)
    assert len(got) == 21
    assert {lease.job.id for lease in got} >= {j.id for j in others}


def test_key_limits_change_takes_effect_at_once(
    engine: Engine, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", key_limits=KeyLimits.of(1, 0.0, 0), create=True)
    engine.submit([NewJob("q", fairness_key="a")] * 20, 0.0)
    connect(credits=20)
    assert len(pump(0.0)) == 1
    engine.update_queue("q", key_limits=KeyLimits.of(3, 0.0, 0))
    assert len(pump(0.0)) == 2
    engine.update_queue("q", key_limits=KeyLimits.of(1, 0.0, 0))
    assert pump(0.0) == []  # narrowing never takes anything back
    assert engine.get_queue("q").underway_count == 3
    engine.update_queue("q", key_limits=None)
    assert len(pump(0.0)) == 7  # the width of 10 is the only bound left


def test_per_key_rate_change_caps_saved_tokens(
    engine: Engine, connect: Connect, pump: Pump
) -> None:
    engine.update_queue(
        "q", key_limits=KeyLimits.of(0, 1.0, 50), width=100, lease_seconds=600.0, create=True
    )
    engine.submit([NewJob("q", fairness_key="a")] * 100, 0.0)
    connect(credits=100)
    assert len(pump(0.0)) == 50
    engine.update_queue("q", key_limits=KeyLimits.of(0, 1.0, 2), now=100.0)
    assert len(pump(100.0)) == 2


def test_many_distinct_keys(engine: Engine, connect: Connect, pump: Pump) -> None:
    engine.update_queue(
        "q", key_limits=KeyLimits.of(1, 10.0, 1), width=3000, lease_seconds=600.0, create=True
    )
    engine.submit([NewJob("q", fairness_key=f"k{i}") for i in range(3000)], 0.0)
    connect(credits=3000)
    got = pump(0.0)
    assert len(got) == 3000
    for lease in got:
        ok(engine, lease, 1.0)
    engine.submit([NewJob("q", fairness_key=f"k{i}") for i in range(3000)], 1.0)
    assert len(pump(1.0)) == 3000
