"""Shared fixtures for the unit tests.

Helpers are handed out as fixtures (not imported from this module) so the tests do
not depend on how pytest and mypy name this file.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from dispatchd.engine import (
    Engine,
    EngineLimits,
    JobRecord,
    LeaseRecord,
    NewJob,
    WorkerRecord,
)


@pytest.fixture
def limits() -> EngineLimits:
    """Override with ``@pytest.mark.parametrize("limits", [EngineLimits(...)])``."""
    return EngineLimits()


@pytest.fixture
def engine(limits: EngineLimits) -> Engine:
    """An engine with a seeded random source, so ids repeat from run to run."""
    return Engine(limits=limits, rng=random.Random(0))


@pytest.fixture
def connect(engine: Engine) -> Callable[..., WorkerRecord]:
    """``connect(queues="q", credits=10, worker_id="", now=0.0)`` -> a connected worker."""

    def _connect(
        queues: str | Sequence[str] = "q",
        credits: int = 10,
        worker_id: str = "",
        now: float = 0.0,
    ) -> WorkerRecord:
        names = [queues] if isinstance(queues, str) else list(queues)
        return engine.connect(worker_id, names, credits, now)

    return _connect


@pytest.fixture
def submit(engine: Engine) -> Callable[..., list[JobRecord]]:
    """``submit(queue="q", n=1, priority=0, now=0.0, payload=b"")`` -> the admitted jobs,
    submitted one call each so every job gets its own seq in call order."""

    def _submit(
        queue: str = "q",
        n: int = 1,
        priority: int = 0,
        now: float = 0.0,
        payload: bytes = b"",
    ) -> list[JobRecord]:
        out: list[JobRecord] = []
        for _ in range(n):
            for job in engine.submit([NewJob(queue, payload=payload, priority=priority)], now):
                assert isinstance(job, JobRecord)
                out.append(job)
        return out

    return _submit


@pytest.fixture
def dispatch(engine: Engine) -> Callable[[float], list[LeaseRecord]]:
    """``dispatch(now)`` -> every lease handed out by one ``Engine.dispatch`` call."""

    def _dispatch(now: float) -> list[LeaseRecord]:
        return [lease for _, batch in engine.dispatch(now) for lease in batch]

    return _dispatch


@pytest.fixture
def pump(engine: Engine) -> Callable[[float], list[LeaseRecord]]:
    """``pump(now)`` -> the leases of one service pump pass: ``tick(now)`` (timers, expiry,
    leases, slots), then ``dispatch(now)``."""

    def _pump(now: float) -> list[LeaseRecord]:
        engine.tick(now)
        return [lease for _, batch in engine.dispatch(now) for lease in batch]

    return _pump


@pytest.fixture
def add(engine: Engine) -> Callable[..., JobRecord]:
    """``add(queue="q", now=0.0, **fields)`` -> one job submitted with any NewJob fields
    (ordering_key, not_before, retry_policy, ...); asserts it was newly created."""

    def _add(queue: str = "q", now: float = 0.0, **fields: Any) -> JobRecord:
        [(job, repeated)] = engine.submit_many([NewJob(queue, **fields)], now)
        assert isinstance(job, JobRecord)
        assert not repeated
        return job

    return _add
