"""Throttle signals (engine/throttling.py, includes/throttle.lua): a result saying "the
provider throttles me" puts the job back at its old place without counting the delivery,
and holds the whole queue, or only the job's fairness key, for the delay."""

from __future__ import annotations

import pytest

from dispatchd.engine import (
    AdaptiveRate,
    InvalidArgument,
    JobState,
    JobThrottle,
    KeyLimits,
    LeaseRecord,
    Rate,
    RetryPolicy,
    ThrottleScope,
)
from tests.conformance.harness import Driver

KEY = ThrottleScope.FAIRNESS_KEY


async def test_a_throttle_holds_the_queue_and_the_job_keeps_its_place(driver: Driver) -> None:
    await driver.update(lease_seconds=3600.0)
    first = await driver.add(priority=5)
    second = await driver.add(priority=1)
    w = await driver.connect(credits=1)
    lease = w.lease(first.id)
    await w.answer(lease, JobThrottle(30.0, reason="429 from the gateway"))
    job = await driver.job(first.id)
    assert job.state is JobState.PENDING
    assert (job.attempt, job.throttle_count) == (0, 1)  # the delivery was not an attempt
    view = await driver.queue()
    assert view.throttled_until == pytest.approx(driver.at(30.0))
    assert view.throttle_reason == "429 from the gateway"
    await driver.advance_to(29.9)
    assert w.take() == []  # nothing of the queue goes while it is held
    await driver.advance_to(30.0)
    got = w.take()
    assert [ls.job.id for ls in got] == [first.id]  # its old place: before `second`
    assert got[0].job.attempt == 1
    assert (await driver.queue()).throttled_until is None
    await w.ok(got[0])
    assert w.taken_ids() == [second.id]


async def test_a_key_throttle_holds_that_key_only(driver: Driver) -> None:
    await driver.update(lease_seconds=3600.0)
    a = [await driver.add(fairness_key="a") for _ in range(3)]
    b = [await driver.add(fairness_key="b") for _ in range(3)]
    w = await driver.connect(credits=1)
    lease = w.oldest()
    assert lease.job.id == a[0].id
    await w.answer(lease, JobThrottle(10.0, KEY))
    view = await driver.queue()
    assert view.throttled_until is None
    assert view.throttled_key_count == 1
    ran = []
    for _ in range(3):  # key b goes on at once; nothing of key a
        got = w.take()
        assert len(got) == 1
        ran.append(got[0].job.id)
        await w.ok(got[0])
    assert ran == [j.id for j in b]
    assert w.take() == []
    await driver.advance_to(10.0)
    assert w.taken_ids() == [a[0].id]
    assert (await driver.queue()).throttled_key_count == 0


async def test_a_key_throttle_leaves_the_other_keys_throughput_as_it_was(driver: Driver) -> None:
    """Per-key rate 10/s: over 5.1 s key b gets as many dispatches with key a held as it
    would without; key a gets none until its hold ends."""
    await driver.update(key_limits=KeyLimits.of(0, 10.0, 1), lease_seconds=3600.0, width=1000)
    for key in ("a", "b"):
        await driver.add_n(100, fairness_key=key)
    w = await driver.connect(credits=1000)
    got = {"a": 0, "b": 0}
    for lease in w.take():
        got[lease.job.fairness_key] += 1
    assert got == {"a": 1, "b": 1}
    throttled = next(ls for ls in w.held.values() if ls.job.fairness_key == "a")
    await w.answer(throttled, JobThrottle(5.0, KEY))
    got = {"a": 0, "b": 0}
    for step in range(1, 52):
        await driver.advance_to(step * 0.1)
        for lease in w.take():
            got[lease.job.fairness_key] += 1
    # b: 10/s all along; a: nothing held, then its first token a tenth after the hold's end
    assert got == {"a": 1, "b": 51}


async def test_a_held_queue_resumes_at_its_rate_not_in_a_burst(driver: Driver) -> None:
    await driver.update(rate=Rate.of(10.0, 10), lease_seconds=3600.0, width=1000)
    await driver.add_n(50)
    w = await driver.connect(credits=1000)
    first = w.take()
    assert len(first) == 10
    await w.answer(first[0], JobThrottle(2.0))
    await driver.advance_to(2.0)
    assert w.take() == []  # the bucket saved nothing up during the hold
    await driver.advance_to(2.1)
    assert len(w.take()) == 1


async def test_a_held_key_stays_held_when_its_lane_empties_and_fills(driver: Driver) -> None:
    await driver.update(lease_seconds=3600.0)
    job = await driver.add(fairness_key="a")
    w = await driver.connect(credits=1)
    await w.answer(w.oldest(), JobThrottle(10.0, KEY))
    await driver.cancel(job)
    fresh = await driver.add(fairness_key="a")
    other = await driver.add(fairness_key="b")
    assert w.taken_ids() == [other.id]
    await w.finish_all()
    await driver.advance_to(10.0)
    assert w.taken_ids() == [fresh.id]


async def test_a_job_bouncing_too_often_counts_a_failed_attempt(driver: Driver) -> None:
    await driver.update(lease_seconds=3600.0, max_throttle_bounces=2)
    job = await driver.add()
    w = await driver.connect(credits=1)
    for n in (1, 2):
        await w.answer(w.oldest(), JobThrottle(0.0, reason="busy"))
        assert (await driver.job(job.id)).throttle_count == n
    await w.answer(w.oldest(), JobThrottle(0.0, reason="busy"))
    done = await driver.job(job.id)
    assert done.state is JobState.FAILED  # no retry policy: the attempt failed for good
    assert done.error is not None
    assert done.error.code == "Throttled"
    assert done.error.message == "throttled more often than the queue's max_throttle_bounces: busy"
    assert done.attempt == 1
    assert done.throttle_count == 3


async def test_a_throttle_spends_none_of_the_retry_budget(driver: Driver) -> None:
    policy = RetryPolicy.of(1, 1.0, 1.0, 2.0, 0.0)
    await driver.update(lease_seconds=3600.0, retry_policy=policy)
    job = await driver.add()
    w = await driver.connect(credits=1)
    await w.answer(w.oldest(), JobThrottle(1.0))
    await driver.advance(1.0)
    await w.ok(w.oldest())
    done = await driver.job(job.id)
    assert done.state is JobState.SUCCEEDED
    assert done.attempt == 1


async def test_a_shorter_signal_does_not_shorten_a_hold(driver: Driver) -> None:
    await driver.update(lease_seconds=3600.0)
    await driver.add_n(3)
    w = await driver.connect(credits=2)
    first, second = w.take()
    await w.answer(first, JobThrottle(20.0))
    await w.answer(second, JobThrottle(5.0))
    assert (await driver.queue()).throttled_until == pytest.approx(driver.at(20.0))
    await driver.advance_to(19.0)
    assert w.take() == []
    await driver.advance_to(20.0)
    assert len(w.take()) == 2


async def test_a_zero_delay_puts_the_job_back_without_a_hold(driver: Driver) -> None:
    await driver.update(lease_seconds=3600.0)
    job = await driver.add()
    w = await driver.connect(credits=1)
    await w.answer(w.oldest(), JobThrottle(0.0))
    assert (await driver.queue()).throttled_until is None
    assert w.taken_ids() == [job.id]


async def test_the_bound_is_a_setting_checked_on_every_backend(driver: Driver) -> None:
    view = await driver.update(max_throttle_bounces=7)
    assert view.settings.max_throttle_bounces == 7
    assert (await driver.queue()).settings.max_throttle_bounces == 7
    with pytest.raises(InvalidArgument):
        await driver.update(max_throttle_bounces=0)


# ---- adaptive rate (AIMD) --------------------------------------------------------------------


async def test_each_signal_halves_the_rate_down_to_the_floor_and_quiet_raises_it(
    driver: Driver,
) -> None:
    aimd = AdaptiveRate.of(2.0, 0.5, 1.0, 1.0)
    await driver.update(rate=Rate.of(10.0, 10), adaptive=aimd, lease_seconds=3600.0)
    assert (await driver.queue()).effective_rate == 10.0
    await driver.add_n(3)
    w = await driver.connect(credits=3)
    rates = []
    for lease in w.take():
        await w.answer(lease, JobThrottle(0.0))
        rates.append((await driver.queue()).effective_rate)
    assert rates == pytest.approx([5.0, 2.5, 2.0])  # not below the floor
    await driver.advance_to(0.5)
    assert (await driver.queue()).effective_rate == pytest.approx(2.0)
    await driver.advance_to(1.0)  # one quiet interval: one step
    assert (await driver.queue()).effective_rate == pytest.approx(3.0)
    await driver.advance_to(4.0)
    assert (await driver.queue()).effective_rate == pytest.approx(6.0)
    await driver.advance_to(100.0)  # never above the configured rate
    assert (await driver.queue()).effective_rate == pytest.approx(10.0)


async def test_the_quiet_interval_counts_from_the_end_of_the_hold(driver: Driver) -> None:
    aimd = AdaptiveRate.of(1.0, 0.5, 1.0, 1.0)
    await driver.update(rate=Rate.of(10.0, 10), adaptive=aimd, lease_seconds=3600.0)
    await driver.add()
    w = await driver.connect(credits=1)
    await w.answer(w.oldest(), JobThrottle(3.0))
    await driver.advance_to(3.9)  # held 3 s, then less than one quiet interval
    assert (await driver.queue()).effective_rate == pytest.approx(5.0)
    await driver.advance_to(4.0)
    assert (await driver.queue()).effective_rate == pytest.approx(6.0)


async def test_calls_sent_before_a_cut_do_not_cut_again(driver: Driver) -> None:
    """The calls in flight when the provider starts refusing come back throttled one after
    another: they cut the rate once, not once each."""
    aimd = AdaptiveRate.of(1.0, 0.5, 1.0, 3600.0)
    await driver.update(rate=Rate.of(10.0, 10), adaptive=aimd, lease_seconds=3600.0)
    await driver.add_n(4)
    w = await driver.connect(credits=4)
    flight = w.take()
    await driver.advance_to(0.1)
    for lease in flight[:3]:
        await w.answer(lease, JobThrottle(0.0))
    assert (await driver.queue()).effective_rate == pytest.approx(5.0)
    await driver.advance_to(0.5)
    later = w.take()  # dispatched after the cut: its signal cuts again
    await driver.advance_to(0.6)
    await w.answer(later[0], JobThrottle(0.0))
    assert (await driver.queue()).effective_rate == pytest.approx(2.5)


async def test_dispatches_follow_the_effective_rate(driver: Driver) -> None:
    aimd = AdaptiveRate.of(1.0, 0.5, 1.0, 3600.0)  # no increase within the test
    await driver.update(rate=Rate.of(10.0, 10), adaptive=aimd, lease_seconds=3600.0, width=100)
    await driver.add_n(40)
    w = await driver.connect(credits=100)
    first = w.take()
    assert len(first) == 10  # the configured burst
    await w.answer(first[0], JobThrottle(0.0))  # 5/s from now, burst 5
    assert w.take() == []
    counts = []
    for t in (1.0, 2.0, 3.0):
        await driver.advance_to(t)
        counts.append(len(w.take()))
    assert counts == [5, 5, 5]
    await driver.update(adaptive=None)  # the configured rate again
    assert (await driver.queue()).effective_rate == 10.0
    await driver.advance_to(4.0)
    assert len(w.take()) == 10


async def test_a_key_signal_leaves_the_queue_rate_alone(driver: Driver) -> None:
    aimd = AdaptiveRate.of(1.0, 0.5, 1.0, 3600.0)
    await driver.update(rate=Rate.of(10.0, 10), adaptive=aimd, lease_seconds=3600.0)
    await driver.add(fairness_key="a")
    w = await driver.connect(credits=1)
    await w.answer(w.oldest(), JobThrottle(0.0, KEY))
    assert (await driver.queue()).effective_rate == 10.0


async def test_a_key_signal_adapts_that_keys_rate_only(driver: Driver) -> None:
    aimd = AdaptiveRate.of(1.0, 0.5, 1.0, 3600.0)
    limits = KeyLimits.of(0, 10.0, 10)
    await driver.update(adaptive=aimd, key_limits=limits, lease_seconds=3600.0, width=1000)
    for key in ("a", "b"):
        await driver.add_n(40, fairness_key=key)
    w = await driver.connect(credits=1000)

    def by_key(leases: list[LeaseRecord]) -> dict[str, int]:
        return {k: sum(1 for ls in leases if ls.job.fairness_key == k) for k in ("a", "b")}

    first = w.take()
    assert by_key(first) == {"a": 10, "b": 10}
    throttled = next(ls for ls in first if ls.job.fairness_key == "a")
    await w.answer(throttled, JobThrottle(0.0, KEY))  # key a: 5/s from now, burst 5
    for t in (1.0, 2.0):
        await driver.advance_to(t)
        assert by_key(w.take()) == {"a": 5, "b": 10}


@pytest.mark.parametrize(
    ("floor", "decrease", "increase", "quiet"),
    [(0.0, 0.5, 1.0, 1.0), (1.0, 1.0, 1.0, 1.0), (1.0, 0.5, -1.0, 1.0), (1.0, 0.5, 1.0, 0.01)],
)
def test_adaptive_settings_are_checked(
    floor: float, decrease: float, increase: float, quiet: float
) -> None:
    with pytest.raises(InvalidArgument):
        AdaptiveRate.of(floor, decrease, increase, quiet)
