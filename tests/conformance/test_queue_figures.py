"""Backend.queue_figures(): what /metrics shows of each queue, the same on both backends
with a controlled clock: when the head job could first run (priorities, delays, backoff),
jobs chained behind their ordering key, DEAD and FAILED jobs held, the rate, free credits."""

from __future__ import annotations

from dispatchd.engine import KeyLimits, NewJob, QueueFigures, Rate, RetryPolicy
from tests.conformance.harness import Driver

ONE_TRY = RetryPolicy(max_attempts=1, min_backoff=1.0, max_backoff=1.0)
TWO_TRIES = RetryPolicy(max_attempts=2, min_backoff=10.0, max_backoff=10.0, jitter=0.0)


async def figures(driver: Driver, name: str = "q") -> QueueFigures:
    (f,) = [f for f in await driver.backend.queue_figures() if f.view.name == name]
    return f


async def test_the_head_is_the_next_job_to_dispatch_and_its_age_starts_when_it_could_run(
    driver: Driver,
) -> None:
    await driver.update(width=10, paused=True)
    assert (await figures(driver)).head_ready is None
    await driver.add()
    await driver.advance_to(2.0)
    await driver.add(priority=5)  # goes first
    await driver.add(priority=9, not_before=driver.at(30.0))  # not ready yet
    f = await figures(driver)
    assert f.head_ready == driver.at(2.0)
    assert (f.view.pending_count, f.view.scheduled_count) == (2, 1)
    await driver.advance_to(31.0)
    assert (await figures(driver)).head_ready == driver.at(30.0)  # from the end of its delay


async def test_a_retried_job_waits_from_the_end_of_its_backoff(driver: Driver) -> None:
    await driver.update(width=10, retry_policy=TWO_TRIES)
    job = await driver.add()
    w = await driver.connect(credits=1)
    [lease] = w.take()
    await w.set_credit(0)
    await w.fail(lease)
    await driver.advance_to(20.0)
    f = await figures(driver)
    assert f.view.pending_count == 1
    assert f.head_ready == driver.at(10.0)
    assert (await driver.job(job.id)).attempt == 1


async def test_jobs_behind_their_ordering_key_are_counted_apart(driver: Driver) -> None:
    await driver.update(width=10, paused=True)
    await driver.submit(*[NewJob("q", ordering_key="k") for _ in range(3)])
    f = await figures(driver)
    assert (f.view.pending_count, f.blocked, f.head_ready) == (3, 2, driver.at(0))


async def test_dead_and_failed_jobs_held_and_a_rate_without_a_token(driver: Driver) -> None:
    await driver.update("d", width=10, retry_policy=ONE_TRY)
    await driver.update("f", width=10, rate=Rate(1.0, 1))
    w = await driver.connect(["d", "f"], credits=10)
    await driver.add("d")
    await driver.add_n(2, "f")
    for lease in w.take():
        await w.fail(lease)
    d, f = await figures(driver, "d"), await figures(driver, "f")
    assert (d.dead, d.failed, f.dead, f.failed) == (1, 0, 0, 1)
    assert f.rate_limited  # its one token went
    assert not d.rate_limited
    await driver.advance(1.0)  # the next token: the second job goes and takes it
    assert len(w.take()) == 1
    assert (await figures(driver, "f")).rate_limited
    await driver.advance(1.0)  # nothing waits to take the one after
    assert not (await figures(driver, "f")).rate_limited


async def test_credit_free_follows_the_workers_of_the_queue(driver: Driver) -> None:
    await driver.update(width=10)
    assert not (await figures(driver)).credit_free  # no worker
    w = await driver.connect(credits=1)
    assert (await figures(driver)).credit_free
    await driver.add_n(2)
    assert len(w.take()) == 1
    f = await figures(driver)
    assert not f.credit_free
    assert f.view.pending_count == 1


async def test_jobs_held_by_their_key_limits(driver: Driver) -> None:
    await driver.update(width=10, key_limits=KeyLimits.of(2, 0.0, 0))
    await driver.submit(*[NewJob("q", fairness_key="a")] * 5)
    await driver.submit(NewJob("q", fairness_key="b"))
    w = await driver.connect(credits=10)
    assert len(w.take()) == 3  # a twice, b once
    f = await figures(driver)
    assert (f.view.pending_count, f.key_held) == (3, 3)  # a's three, at its bound
    await w.finish_all()
    f = await figures(driver)
    assert (f.view.pending_count, f.key_held) == (1, 1)  # a's last, behind its next two


async def test_jobs_held_by_a_per_key_rate(driver: Driver) -> None:
    await driver.update(width=10, key_limits=KeyLimits.of(0, 1.0, 1))
    await driver.submit(*[NewJob("q", fairness_key="a")] * 3)
    w = await driver.connect(credits=10)
    assert len(w.take()) == 1
    assert (await figures(driver)).key_held == 2
    await driver.advance(1.0)  # one token: one more goes, and takes it
    assert len(w.take()) == 1
    assert (await figures(driver)).key_held == 1
