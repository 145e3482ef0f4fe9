"""Fixtures every test directory may use: one real redis-server per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redisproc import RedisProcess


@pytest.fixture(scope="session")
def redis_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path_factory.mktemp("redis"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def redis_url(redis_process: RedisProcess) -> str:
    """An empty Redis for each test."""
    redis_process.flush()
    return redis_process.url
