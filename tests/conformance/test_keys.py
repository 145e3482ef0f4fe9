"""Ordering keys (one job of a key at a time, in submit order, across retries, lease loss
and cancels), fairness keys (weighted round-robin among keys) and key limits
(max_in_flight_per_key, per_key_rate)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from dispatchd.engine import JobState, KeyLimits, NewJob, RetryPolicy
from tests.conformance.harness import Driver, Worker


async def run_one_by_one(driver: Driver, worker: Worker, steps: int) -> list[str]:
    """``steps`` times: the worker answers success for everything it holds; returns the
    ids of the jobs it got, in dispatch order."""
    got: list[str] = []
    for _ in range(steps):
        leases = worker.take()
        got += [lease.job.id for lease in leases]
        for lease in leases:
            await worker.ok(lease)
    return got + worker.taken_ids()


# ---- ordering keys --------------------------------------------------------------------------


async def test_a_key_runs_one_job_at_a_time_in_submit_order(driver: Driver) -> None:
    """Later jobs of a key wait even with a higher priority; other keys go meanwhile."""
    chain = [await driver.add(ordering_key="k", priority=p) for p in (0, 5, 9, 1)]
    x = await driver.add(ordering_key="x", priority=2)
    free = await driver.add(priority=-5)
    workers = [await driver.connect(credits=1) for _ in range(3)]
    order: list[str] = []
    for round_ in range(4):
        got = [(w, lease) for w in workers for lease in w.take()]
        if round_ == 0:
            assert {lease.job.id for _, lease in got} == {chain[0].id, x.id, free.id}
        keyed = [lease.job.id for _, lease in got if lease.job.ordering_key == "k"]
        assert len(keyed) == 1
        order += keyed
        for w, lease in got:
            await w.ok(lease)
    assert order == [j.id for j in chain]


@pytest.mark.parametrize("seed", range(2))
async def test_random_completions_keep_each_key_in_order(driver: Driver, seed: int) -> None:
    rng = random.Random(seed)
    submitted: dict[str, list[str]] = defaultdict(list)
    for _ in range(30):
        key = rng.choice("abcd")
        job = await driver.add(ordering_key=key, priority=rng.randint(-3, 3))
        submitted[key].append(job.id)
    workers = [await driver.connect(credits=2) for _ in range(2)]
    ran: dict[str, list[str]] = defaultdict(list)
    for _ in range(80):
        for w in workers:
            for lease in w.take():
                key = lease.job.ordering_key
                holding = [
                    ls for v in workers for ls in v.held.values() if ls.job.ordering_key == key
                ]
                assert len(holding) == 1, f"key {key} has two jobs underway"
                ran[key].append(lease.job.id)
        w = rng.choice(workers)
        if w.held:
            await w.ok(w.held[rng.choice(sorted(w.held))])
    assert ran == submitted


async def test_priority_orders_the_heads_of_different_keys(driver: Driver) -> None:
    await driver.update(width=1)
    k1 = await driver.add(ordering_key="k1", priority=1)
    k2 = await driver.add(ordering_key="k2", priority=5)
    k3 = await driver.add(ordering_key="k3", priority=3)
    k1b = await driver.add(ordering_key="k1", priority=100)
    w = await driver.connect()
    assert await run_one_by_one(driver, w, 4) == [k2.id, k3.id, k1.id, k1b.id]


async def test_different_keys_run_side_by_side(driver: Driver) -> None:
    heads = [await driver.add(ordering_key=f"k{i}") for i in range(5)]
    blocked = [await driver.add(ordering_key=f"k{i}") for i in range(5)]
    w = await driver.connect()
    assert sorted(w.taken_ids()) == sorted(j.id for j in heads)
    assert await driver.counts() == (5, 5, 0)
    assert await driver.states(blocked) == [JobState.PENDING] * 5


async def test_ordering_keys_are_per_queue(driver: Driver) -> None:
    a, b = await driver.add("a", ordering_key="k"), await driver.add("b", ordering_key="k")
    w = await driver.connect(["a", "b"])
    assert sorted(w.taken_ids()) == sorted([a.id, b.id])


async def test_a_failed_head_in_backoff_holds_its_key(driver: Driver) -> None:
    head = await driver.add(ordering_key="k", retry_policy=RetryPolicy.of(3, 10.0, 10.0, 1.0, 0.0))
    second = await driver.add(ordering_key="k", priority=9)
    other = await driver.add(ordering_key="o")
    w = await driver.connect()
    assert sorted(w.taken_ids()) == sorted([head.id, other.id])
    await w.fail(w.held[head.id])
    for t in range(1, 10):
        await driver.advance_to(float(t))
        assert w.take() == []
    assert await driver.state(second) is JobState.PENDING
    await driver.advance_to(10.0)
    [again] = w.take()
    assert again.job.id == head.id
    assert (await driver.job(head.id)).attempt == 2
    await w.ok(again)
    assert w.taken_ids() == [second.id]


async def test_a_dead_or_failed_head_lets_the_next_job_go(driver: Driver) -> None:
    dead = await driver.add(ordering_key="d", retry_policy=RetryPolicy.of(1, 1.0, 1.0, 1.0, 0.0))
    dead_next = await driver.add(ordering_key="d")
    failed = await driver.add(ordering_key="f")
    failed_next = await driver.add(ordering_key="f")
    w = await driver.connect()
    for lease in w.take():
        await w.fail(lease)
    assert await driver.states([dead, failed]) == [JobState.DEAD, JobState.FAILED]
    assert sorted(w.taken_ids()) == sorted([dead_next.id, failed_next.id])


async def test_a_head_whose_lease_expired_still_holds_its_key(driver: Driver) -> None:
    await driver.update(lease_seconds=5.0)
    head, second = await driver.add(ordering_key="k"), await driver.add(ordering_key="k")
    w = await driver.connect()
    w.take()
    await driver.advance(5.0)
    assert w.take() == []
    await w.let_go()
    [again] = w.take()
    assert again.job.id == head.id
    assert await driver.state(second) is JobState.PENDING
    await w.ok(again)
    assert w.taken_ids() == [second.id]


async def test_a_head_lost_with_its_worker_still_holds_its_key(driver: Driver) -> None:
    head, second = await driver.add(ordering_key="k"), await driver.add(ordering_key="k")
    w = await driver.connect()
    w.take()
    await w.disconnect()
    other = await driver.connect()
    assert other.taken_ids() == [head.id]
    await other.finish_all()
    assert other.taken_ids() == [second.id]


async def test_a_cancelled_waiting_job_leaves_the_rest_in_order(driver: Driver) -> None:
    a, b, c = [await driver.add(ordering_key="k") for _ in range(3)]
    await driver.cancel(b)
    w = await driver.connect()
    assert await run_one_by_one(driver, w, 3) == [a.id, c.id]


async def test_a_cancelled_pending_head_hands_on_the_key(driver: Driver) -> None:
    await driver.update(width=0)
    a, b = await driver.add(ordering_key="k"), await driver.add(ordering_key="k")
    w = await driver.connect()
    await driver.cancel(a)
    await driver.update(width=5)
    assert w.taken_ids() == [b.id]


@pytest.mark.parametrize("answer", ["result", "lease_expiry", "disconnect"])
async def test_a_cancelled_underway_head_holds_its_key_until_its_worker_lets_go(
    driver: Driver, answer: str
) -> None:
    await driver.update(lease_seconds=10.0)
    a, b = await driver.add(ordering_key="k"), await driver.add(ordering_key="k")
    w = await driver.connect()
    [lease] = w.take()
    await driver.advance_to(1.0)
    await driver.cancel(a)
    assert w.outbox.cancelled == [a.id]
    assert await driver.state(a) is JobState.CANCELLED
    await driver.advance_to(2.0)
    assert w.take() == []  # the worker may still be running it
    assert await driver.state(b) is JobState.PENDING
    if answer == "result":
        await w.ok(lease)
    elif answer == "disconnect":
        await w.disconnect()
        w = await driver.connect()
    else:
        await driver.advance_to(10.0)
        assert w.take() == []  # b waits for the silent worker to show life
        await w.let_go()
    assert w.taken_ids() == [b.id]
    assert await driver.state(a) is JobState.CANCELLED


async def test_a_scheduled_head_holds_the_later_jobs_of_its_key(driver: Driver) -> None:
    a = await driver.add(ordering_key="k", not_before=driver.at(10.0))
    b = await driver.add(ordering_key="k")
    w = await driver.connect()
    await driver.advance_to(5.0)
    assert w.take() == []
    assert await driver.states([a, b]) == [JobState.SCHEDULED, JobState.PENDING]
    await driver.advance_to(10.0)
    [lease] = w.take()
    assert lease.job.id == a.id
    await w.ok(lease)
    assert w.taken_ids() == [b.id]


async def test_a_delayed_later_job_waits_for_its_turn_and_its_time(driver: Driver) -> None:
    a = await driver.add(ordering_key="k")
    b = await driver.add(ordering_key="k", not_before=driver.at(50.0))
    w = await driver.connect()
    assert w.taken_ids() == [a.id]
    await driver.advance_to(1.0)
    await w.finish_all()
    assert w.take() == []
    assert await driver.state(b) is JobState.SCHEDULED
    await driver.advance_to(50.0)
    assert w.taken_ids() == [b.id]


async def test_jobs_expiring_inside_a_chain_leave_the_rest_in_order(driver: Driver) -> None:
    await driver.update(width=0)
    a = await driver.add(ordering_key="k", expire_at=driver.at(5.0))  # the head
    b = await driver.add(ordering_key="k")
    c = await driver.add(ordering_key="k", expire_at=driver.at(6.0))  # behind b
    d = await driver.add(ordering_key="k")
    w = await driver.connect()
    await driver.advance_to(7.0)
    assert await driver.states([a, c]) == [JobState.EXPIRED, JobState.EXPIRED]
    await driver.update(width=5)
    assert await run_one_by_one(driver, w, 3) == [b.id, d.id]


async def test_reprioritizing_does_not_reorder_a_key(driver: Driver) -> None:
    a, b, c = [await driver.add(ordering_key="k") for _ in range(3)]
    await driver.reprioritize(c, 50)
    await driver.reprioritize(a, -50)
    w = await driver.connect()
    assert await run_one_by_one(driver, w, 3) == [a.id, b.id, c.id]


async def test_a_retried_dead_job_rejoins_its_key_at_the_back(driver: Driver) -> None:
    a = await driver.add(ordering_key="k", retry_policy=RetryPolicy.of(1, 1.0, 1.0, 1.0, 0.0))
    b = await driver.add(ordering_key="k")
    w = await driver.connect()
    await w.fail(w.held[a.id] if a.id in w.held else w.lease(a.id))
    [lease_b] = w.take()
    assert lease_b.job.id == b.id
    await driver.retry(a)
    assert w.take() == []  # b holds the key
    await w.ok(lease_b)
    [again] = w.take()
    assert again.job.id == a.id
    assert (await driver.job(a.id)).attempt == 2


# ---- fairness keys ------------------------------------------------------------------------


async def keys_in_run_order(driver: Driver, steps: int) -> list[str]:
    """With width 1: the fairness keys of the next ``steps`` jobs run, in order."""
    await driver.update(width=1)
    w = await driver.connect(credits=1)
    keys = []
    for _ in range(steps):
        [lease] = w.take()
        keys.append(lease.job.fairness_key)
        await w.ok(lease)
    return keys


async def test_keys_take_turns_whatever_their_backlogs(driver: Driver) -> None:
    await driver.submit(*[NewJob("q", fairness_key="big")] * 50)
    await driver.submit(*[NewJob("q", fairness_key="small")] * 3)
    await driver.submit(*[NewJob("q", fairness_key="mid")] * 10)
    order = await keys_in_run_order(driver, 12)
    assert order == ["big", "small", "mid"] * 3 + ["big", "mid", "big"]


async def test_leases_that_end_together_rejoin_their_lanes_in_dispatch_order(
    driver: Driver,
) -> None:
    await driver.update(lease_seconds=3.0)
    plain = await driver.add()
    tenant = await driver.add(fairness_key="x")
    w = await driver.connect(credits=1)
    assert w.taken_ids() == [plain.id]
    await w.disconnect()  # plain waits again, after x's job in the lanes' ring
    w = await driver.connect(credits=2)
    assert w.taken_ids() == [tenant.id, plain.id]
    await driver.advance(3.0)  # both leases end at once: x's lane first, as dispatched
    await w.let_go()
    assert w.taken_ids() == [tenant.id, plain.id]


async def test_jobs_without_a_fairness_key_share_one_lane(driver: Driver) -> None:
    await driver.submit(*[NewJob("q")] * 20)
    await driver.submit(*[NewJob("q", fairness_key="t")] * 20)
    order = await keys_in_run_order(driver, 20)
    assert Counter(order) == {"": 10, "t": 10}


async def test_priority_still_orders_the_jobs_of_one_key(driver: Driver) -> None:
    await driver.update(width=1)
    low = await driver.add(fairness_key="a", priority=0)
    high = await driver.add(fairness_key="a", priority=9)
    w = await driver.connect()
    assert await run_one_by_one(driver, w, 2) == [high.id, low.id]


@pytest.mark.parametrize("weights", [(3, 1), (1, 2, 5)])
async def test_fairness_weights_give_proportional_turns(
    driver: Driver, weights: tuple[int, ...]
) -> None:
    for i, weight in enumerate(weights):
        await driver.submit(*[NewJob("q", fairness_key=f"k{i}", fairness_weight=weight)] * 40)
    rounds = 3
    order = await keys_in_run_order(driver, rounds * sum(weights))
    assert [order.count(f"k{i}") for i in range(len(weights))] == [rounds * w for w in weights]
    first_round = order[: sum(weights)]
    assert [first_round.count(f"k{i}") for i in range(len(weights))] == list(weights)


# ---- key limits ------------------------------------------------------------------------------


async def test_max_in_flight_per_key(driver: Driver) -> None:
    await driver.update(key_limits=KeyLimits.of(2, 0.0, 0))
    await driver.submit(*[NewJob("q", fairness_key="a")] * 20)
    await driver.submit(*[NewJob("q", fairness_key="b")] * 20)
    await driver.submit(NewJob("q", fairness_key="c"))
    w = await driver.connect(credits=10)
    got = w.take()
    assert Counter(lease.job.fairness_key for lease in got) == {"a": 2, "b": 2, "c": 1}
    await driver.advance(1.0)
    assert w.take() == []  # width 10, but a and b are at their bound
    await w.ok(next(lease for lease in got if lease.job.fairness_key == "a"))
    [more] = w.take()
    assert more.job.fairness_key == "a"
    assert len(w.record.leases) == 5


async def test_a_cancelled_underway_job_counts_in_flight_until_answered(driver: Driver) -> None:
    await driver.update(key_limits=KeyLimits.of(1, 0.0, 0))
    await driver.submit(*[NewJob("q", fairness_key="a")] * 3)
    w = await driver.connect()
    [lease] = w.take()
    await driver.cancel(lease.job)
    assert w.take() == []
    await w.ok(lease)
    assert len(w.take()) == 1


async def test_per_key_rate(driver: Driver) -> None:
    await driver.update(key_limits=KeyLimits.of(0, 2.0, 1), lease_seconds=600.0, width=100)
    await driver.submit(*[NewJob("q", fairness_key="a")] * 10)
    await driver.submit(*[NewJob("q", fairness_key="b")] * 10)
    w = await driver.connect(credits=100)
    assert Counter(lease.job.fairness_key for lease in w.take()) == {"a": 1, "b": 1}
    await driver.advance_to(0.25)
    assert w.take() == []
    await driver.submit(*[NewJob("q", fairness_key="c")] * 3)
    assert [lease.job.fairness_key for lease in w.take()] == ["c"]  # its own bucket
    await driver.advance_to(0.5)
    assert Counter(lease.job.fairness_key for lease in w.take()) == {"a": 1, "b": 1}
    await driver.advance_to(0.75)
    assert [lease.job.fairness_key for lease in w.take()] == ["c"]


async def test_a_blocked_key_does_not_hold_back_the_others(driver: Driver) -> None:
    await driver.update(key_limits=KeyLimits.of(1, 1.0, 1), width=100)
    await driver.submit(*[NewJob("q", fairness_key="hog", priority=9)] * 100)
    others = await driver.submit(*[NewJob("q", fairness_key=f"t{i}") for i in range(20)])
    w = await driver.connect(credits=100)
    got = {lease.job.id for lease in w.take()}
    assert len(got) == 21
    assert got >= {j.id for j in others}


async def test_key_limit_changes_apply_at_once(driver: Driver) -> None:
    await driver.update(key_limits=KeyLimits.of(1, 0.0, 0))
    await driver.submit(*[NewJob("q", fairness_key="a")] * 20)
    w = await driver.connect(credits=20)
    assert len(w.take()) == 1
    await driver.update(key_limits=KeyLimits.of(3, 0.0, 0))
    assert len(w.take()) == 2
    await driver.update(key_limits=KeyLimits.of(1, 0.0, 0))
    assert w.take() == []  # narrowing never takes anything back
    assert (await driver.queue()).underway_count == 3
    await driver.update(key_limits=None)
    assert len(w.take()) == 7  # the width of 10 is the only bound left


async def test_a_per_key_rate_change_caps_the_tokens_saved_up(driver: Driver) -> None:
    await driver.update(key_limits=KeyLimits.of(0, 1.0, 50), width=100, lease_seconds=600.0)
    await driver.submit(*[NewJob("q", fairness_key="a")] * 100)
    w = await driver.connect(credits=100)
    assert len(w.take()) == 50
    driver.clock.advance(100.0)  # 50 tokens earned meanwhile, and then...
    await driver.update(key_limits=KeyLimits.of(0, 1.0, 2))  # ...capped to the new burst
    assert len(w.take()) == 2
