"""A queue's rate, a token bucket: at most burst + per_second * t dispatches in any window
of t seconds, on the fake clock; changes apply live."""

from __future__ import annotations

import random

from dispatchd.engine import NewJob, Rate
from tests.conformance.harness import Driver, Worker


async def dispatched_at(driver: Driver, worker: Worker, offset: float) -> int:
    """How many jobs the worker got once the clock reads ``offset`` (each answered)."""
    await driver.advance_to(offset)
    got = worker.take()
    for lease in got:
        await worker.ok(lease)
    return len(got)


async def test_a_burst_then_the_steady_rate(driver: Driver) -> None:
    await driver.update(rate=Rate.of(2.0, 3), lease_seconds=3600.0)
    await driver.add_n(10)
    w = await driver.connect(credits=100)
    assert len(w.take()) == 3  # the burst
    assert [await dispatched_at(driver, w, t) for t in (0.1, 0.49, 0.5, 0.6, 1.0, 2.0)] == [
        0,
        0,
        1,
        0,
        1,
        2,  # two tokens earned meanwhile
    ]
    assert (await driver.queue()).pending_count == 3


async def test_no_rate_is_no_bound(driver: Driver) -> None:
    await driver.update(width=1000, lease_seconds=3600.0)
    w = await driver.connect(credits=1000)
    await driver.submit(*[_job() for _ in range(300)])
    assert len(w.take()) == 300


async def test_the_rate_is_shared_by_every_worker_of_the_queue(driver: Driver) -> None:
    await driver.update(rate=Rate.of(1.0, 2), lease_seconds=3600.0)
    await driver.add_n(20)
    workers = [await driver.connect(credits=10) for _ in range(3)]
    assert sum(len(w.take()) for w in workers) == 2
    await driver.advance(1.0)
    assert sum(len(w.take()) for w in workers) == 1


async def test_one_queues_rate_does_not_hold_back_another(driver: Driver) -> None:
    await driver.update("slow", rate=Rate.of(1.0, 1))
    await driver.add_n(5, queue="slow")
    await driver.add_n(5, queue="fast")
    w = await driver.connect(["slow", "fast"], credits=100)
    got = sorted(lease.job.queue for lease in w.take())
    assert got == ["fast"] * 5 + ["slow"]


async def test_tokens_are_not_spent_while_no_worker_takes_the_jobs(driver: Driver) -> None:
    await driver.update(rate=Rate.of(1.0, 2), lease_seconds=3600.0)
    await driver.add_n(5)
    await driver.advance(5.0)
    w = await driver.connect(credits=10)
    assert len(w.take()) == 2  # the full burst is still there, and no more


async def test_width_and_rate_both_bound_dispatch(driver: Driver) -> None:
    await driver.update(rate=Rate.of(10.0, 10), width=2, lease_seconds=3600.0)
    await driver.add_n(20)
    w = await driver.connect(credits=100)
    first = w.take()
    assert len(first) == 2  # the width, though 10 tokens are there
    for lease in first:
        await w.ok(lease)
    assert len(w.take()) == 2


# ---- live changes ------------------------------------------------------------------------


async def test_a_faster_rate_applies_at_once_keeping_what_was_earned(driver: Driver) -> None:
    await driver.update(rate=Rate.of(1.0, 1), width=1000, lease_seconds=3600.0)
    await driver.add_n(50)
    w = await driver.connect(credits=100)
    assert len(w.take()) == 1
    await driver.advance_to(0.5)  # half a token earned at 1/s
    await driver.update(rate=Rate.of(10.0, 1))
    assert w.take() == []
    await driver.advance_to(0.54)  # 0.5 + 0.04 * 10 = 0.9: not yet
    assert w.take() == []
    await driver.advance_to(0.55)  # 0.5 + 0.05 * 10 = 1.0
    assert len(w.take()) == 1
    await driver.update(rate=None)  # cleared: everything goes at once
    assert len(w.take()) == 48


async def test_a_smaller_burst_caps_the_tokens_saved_up(driver: Driver) -> None:
    await driver.update(rate=Rate.of(100.0, 100), lease_seconds=3600.0, width=1000)
    await driver.add_n(200)
    await driver.advance(10.0)
    await driver.update(rate=Rate.of(1.0, 4))  # 100 tokens saved up, capped to 4
    w = await driver.connect(credits=1000)
    assert len(w.take()) == 4
    await driver.advance(0.5)
    assert w.take() == []
    await driver.advance(0.5)
    assert len(w.take()) == 1


async def test_a_new_rate_starts_with_a_full_bucket(driver: Driver) -> None:
    await driver.update(lease_seconds=3600.0, width=1000)
    await driver.add_n(20)
    await driver.advance(3.0)
    await driver.update(rate=Rate.of(2.0, 5))
    w = await driver.connect(credits=1000)
    assert len(w.take()) == 5
    await driver.advance(0.5)
    assert len(w.take()) == 1


async def test_a_pause_saves_at_most_a_burst(driver: Driver) -> None:
    await driver.update(rate=Rate.of(5.0, 3), lease_seconds=3600.0)
    await driver.add_n(30)
    w = await driver.connect(credits=1000)
    assert len(w.take()) == 3
    await driver.update(paused=True)
    await driver.advance(60.0)
    assert w.take() == []
    await driver.update(paused=False)
    assert len(w.take()) == 3
    await driver.advance(0.2)
    assert len(w.take()) == 1


async def test_any_window_holds_at_most_burst_plus_rate_times_its_length(driver: Driver) -> None:
    """A random schedule of submits, results and clock steps: however the dispatches fall,
    no window of t seconds holds more than burst + per_second * t of them, and the bucket
    is not stingy either (the whole backlog goes as fast as the rate allows)."""
    rate = Rate.of(4.0, 3)
    await driver.update(rate=rate, width=1000, lease_seconds=3600.0)
    w = await driver.connect(credits=1000)
    rng = random.Random(11)
    times: list[float] = []
    submitted = 0
    for _ in range(60):
        if rng.random() < 0.5:
            n = rng.randint(1, 6)
            await driver.submit(*[_job() for _ in range(n)])
            submitted += n
        for lease in w.take():
            times.append(lease.deadline - 3600.0)  # its dispatch time
            if rng.random() < 0.7:
                await w.ok(lease)
        await driver.advance(rng.choice((0.0, 0.05, 0.125, 0.25, 0.5, 1.0)))
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            window = times[j] - start
            assert j - i + 1 <= rate.burst + rate.per_second * window + 1e-6, (i, j)
    backlog = submitted - len(times)
    for _ in range(int(backlog / rate.per_second / 0.25) + 2):  # a token every 0.25 s
        await driver.advance(0.25)
    assert len(times) + len(w.take()) == submitted


def _job() -> NewJob:
    return NewJob("q")
