"""The conformance suite's fixtures: each test runs once per backend (tests/conftest.py
parametrizes ``backend``), on a backend built directly, with a fake clock and no gRPC.

``limits`` may be overridden per test with
``@pytest.mark.parametrize("limits", [EngineLimits(...)])``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from dispatchd.backend import Backend
from dispatchd.engine import EngineLimits
from tests.conformance.harness import Driver, FakeClock, open_embedded, open_redis


@pytest.fixture
def limits() -> EngineLimits:
    return EngineLimits()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def driver(
    backend: str, limits: EngineLimits, clock: FakeClock, request: pytest.FixtureRequest
) -> AsyncIterator[Driver]:
    built: Backend
    open_peer: Callable[[], Awaitable[Backend]] | None = None
    if backend in ("redis", "redis-cluster"):
        url = request.getfixturevalue("redis_url" if backend == "redis" else "redis_cluster_url")
        built = await open_redis(url, limits, clock)

        async def open_peer() -> Backend:
            return await open_redis(url, limits, clock)
    else:
        built = await open_embedded(limits, clock)
    driver = Driver(backend, built, clock, open_peer)
    try:
        yield driver
    finally:
        await driver.stop_acquirers()
        for peer in driver.peers:
            await peer.close()
        await built.close()
