"""Quotas over several windows (engine/policies.py WindowCounts, includes/windows.lua): a
queue takes several (limit, period) windows at once, fixed and aligned to the epoch, all
enforced; their counts survive a restart (embedded: journal and snapshot; Redis: its keys),
so a day's quota is not granted twice."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

import pytest

from dispatchd.backend import Backend, WorkResult
from dispatchd.embedded.backend import EmbeddedBackend
from dispatchd.embedded.storage import StorageConfig
from dispatchd.engine import (
    EngineLimits,
    InvalidArgument,
    KeyLimits,
    LeaseRecord,
    NewJob,
    Rate,
    RateWindow,
)
from tests.conformance.harness import Driver, FakeClock, Worker, open_redis

MINUTE, HOUR, DAY = 60.0, 3600.0, 86_400.0


def start_of(period: float, t: float) -> float:
    return math.floor(t / period) * period


async def test_every_window_is_enforced_and_resets_at_its_end(driver: Driver) -> None:
    windows = (RateWindow.of(3, 10.0), RateWindow.of(5, MINUTE))
    view = await driver.update(windows=windows, lease_seconds=3600.0, width=100)
    assert view.settings.windows == windows
    await driver.add_n(20)
    w = await driver.connect(credits=100)
    # START (1,000,000) is 40 s into its minute (999,960) and at the start of its 10 s.
    assert len(w.take()) == 3  # the 10 s window
    usage = {p: n for p, _, n in (await driver.queue()).window_usage}
    assert usage == {10.0: 3, MINUTE: 3}
    await driver.advance_to(9.9)
    assert w.take() == []
    await driver.advance_to(10.0)
    assert len(w.take()) == 2  # the minute has 2 left
    await driver.advance_to(19.99)
    assert w.take() == []
    await driver.advance_to(20.0)  # the next minute (1,000,020)
    assert len(w.take()) == 3
    (_, start, n), _ = (await driver.queue()).window_usage
    assert (start, n) == (driver.at(20.0), 3)


async def test_windows_and_the_rate_hold_together(driver: Driver) -> None:
    await driver.update(
        rate=Rate.of(1.0, 1), windows=(RateWindow.of(2, MINUTE),), lease_seconds=3600.0
    )
    await driver.add_n(10)
    w = await driver.connect(credits=100)
    got = [len(w.take())]
    for t in (1.0, 2.0, 3.0):
        await driver.advance_to(t)
        got.append(len(w.take()))
    assert got == [1, 1, 0, 0]  # the rate spaces them, the window stops them


async def test_changing_a_limit_keeps_the_count_of_its_period(driver: Driver) -> None:
    await driver.update(windows=(RateWindow.of(2, MINUTE),), lease_seconds=3600.0)
    await driver.add_n(10)
    w = await driver.connect(credits=100)
    assert len(w.take()) == 2
    await driver.update(windows=(RateWindow.of(5, MINUTE), RateWindow.of(100, DAY)))
    assert len(w.take()) == 3  # 2 of the new 5 were used already
    await driver.update(windows=())
    assert len(w.take()) == 5  # no quota at all


def test_windows_are_checked() -> None:
    with pytest.raises(InvalidArgument):
        RateWindow.of(0, MINUTE)
    with pytest.raises(InvalidArgument):
        RateWindow.of(5, 0.5)
    with pytest.raises(InvalidArgument):
        RateWindow.several([RateWindow.of(1, MINUTE), RateWindow.of(2, MINUTE)])


# ---- a simulated day, with a restart in the middle -----------------------------------------


async def run(worker: Worker, dispatched: list[float], clock: FakeClock) -> None:
    """The worker runs what it was handed; the times of those dispatches are noted."""
    got = worker.take()
    dispatched += [clock.now] * len(got)
    if got:  # one results message for them all, as a real worker sends
        results = [WorkResult(ls.job.id, ls.lease_id, b"ok") for ls in got]
        assert await worker.driver.backend.results(worker.record, results) == []
        worker.held.clear()
        await worker.driver.settle()


async def open_backend(
    backend: str, clock: FakeClock, data_dir: Path, request: pytest.FixtureRequest
) -> Backend:
    if backend == "redis":
        return await open_redis(request.getfixturevalue("redis_url"), EngineLimits(), clock)
    embedded = EmbeddedBackend(
        EngineLimits(), clock, StorageConfig(data_dir=data_dir), rng=random.Random(7), timers=False
    )
    await embedded.start()
    return embedded


async def restart(driver: Driver, how: str, data_dir: Path, request: pytest.FixtureRequest) -> None:
    """Stops the server (a drain that writes the snapshot, or a plain stop: the journal) and
    starts another on the same data (the same Redis), as a restart does."""
    old = driver.backend
    if how == "drain":
        await old.begin_drain(1.0)
        await old.finish_drain()  # (the embedded one closes its journal here)
    if how != "drain" or driver.name == "redis":
        await old.close()
    driver.backend = await open_backend(driver.name, driver.clock, data_dir, request)


@pytest.mark.parametrize(("seed", "how"), [(1, "drain"), (2, "stop")])
async def test_a_simulated_day_never_exceeds_a_window_even_across_a_restart(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, seed: int, how: str
) -> None:
    """Property: random submits and clock steps over a day (the clock injected), every
    window's count per aligned window at most its limit; a restart at noon (the day's quota
    half used) grants nothing twice."""
    rng = random.Random(seed)
    midnight = start_of(DAY, 1_000_000.0) + DAY
    clock = FakeClock(start=midnight)
    limits = {MINUTE: 20, HOUR: 300, DAY: 2000}
    windows = tuple(RateWindow.of(n, p) for p, n in limits.items())
    driver = Driver(backend, await open_backend(backend, clock, tmp_path, request), clock)
    try:
        await driver.update(windows=windows, lease_seconds=3600.0, width=1000)
        await driver.submit(*[NewJob("q") for _ in range(600)])
        worker = await driver.connect(credits=1000)
        dispatched: list[float] = []
        restarted = False
        while clock.now < midnight + DAY:
            await driver.advance(rng.choice([1.0, 7.0, 60.0, 300.0, 900.0]))
            if not restarted and clock.now >= midnight + DAY / 2:
                await run(worker, dispatched, clock)  # (what this step dispatched)
                await restart(driver, how, tmp_path, request)
                restarted = True
                worker = await driver.connect(credits=1000)
            await run(worker, dispatched, clock)
            if (await driver.queue()).pending_count < 200:
                await driver.submit(*[NewJob("q") for _ in range(400)])
        for period, limit in limits.items():
            per_window = Counter(start_of(period, t) for t in dispatched)
            assert max(per_window.values()) <= limit, (period, per_window.most_common(3))
        assert Counter(start_of(DAY, t) for t in dispatched)[midnight] == limits[DAY]
    finally:
        await driver.backend.close()


# ---- quotas per fairness key ------------------------------------------------------------------


def by_key(leases: list[LeaseRecord]) -> dict[str, int]:
    return dict(Counter(ls.job.fairness_key for ls in leases))


async def test_each_key_has_its_own_quota(driver: Driver) -> None:
    limits = KeyLimits.of(0, 0.0, 0, (RateWindow.of(2, MINUTE), RateWindow.of(3, HOUR)))
    view = await driver.update(key_limits=limits, lease_seconds=3600.0, width=100)
    assert view.settings.key_limits == limits
    for key in ("a", "b"):
        await driver.add_n(5, fairness_key=key)
    w = await driver.connect(credits=100)
    assert by_key(w.take()) == {"a": 2, "b": 2}
    await driver.advance_to(19.0)  # still START's minute (it ends at +20 s)
    assert w.take() == []
    await driver.advance_to(20.0)
    assert by_key(w.take()) == {"a": 1, "b": 1}  # the hour's 3 are used


@pytest.mark.parametrize("how", ["drain", "stop"])
async def test_a_restart_keeps_each_keys_count(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, how: str
) -> None:
    clock = FakeClock()
    driver = Driver(backend, await open_backend(backend, clock, tmp_path, request), clock)
    try:
        limits = KeyLimits.of(0, 0.0, 0, (RateWindow.of(2, HOUR),))
        await driver.update(key_limits=limits, lease_seconds=3600.0, width=100)
        await driver.submit(*[NewJob("q", fairness_key="a") for _ in range(4)])
        w = await driver.connect(credits=100)
        await run(w, [], clock)  # key a used its 2
        await restart(driver, how, tmp_path, request)
        await driver.submit(*[NewJob("q", fairness_key=k) for k in ("a", "b", "b", "b")])
        w = await driver.connect(credits=100)
        assert by_key(w.take()) == {"b": 2}  # key a's hour is used up, b's is not
    finally:
        await driver.backend.close()
