"""One behavioural suite, two backends (dramatiq's model): every test here runs against
an in-process embedded server and an in-process replica on a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from dispatchd.config import Config
from dispatchd.redis.server import RedisDispatchdServer
from dispatchd.runtime import DispatchdServer
from dispatchd_client import Worker
from tests.inproc import base_config, serving

AnyServer = DispatchdServer | RedisDispatchdServer


@pytest.fixture(params=["embedded", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server_config(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Config:
    config = base_config(tmp_path)
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
        return replace(config, backend="redis", redis_url=url, data_dir=None)
    return config


async def start_server(config: Config) -> AnyServer:
    srv = _new_server(config)
    await srv.start()
    return srv


def _new_server(config: Config) -> AnyServer:
    if config.backend == "redis":
        return RedisDispatchdServer(config)
    return DispatchdServer(config)


@pytest.fixture
async def server(server_config: Config) -> AsyncIterator[AnyServer]:
    async with serving(_new_server(server_config)) as srv:
        yield srv


@pytest.fixture
def target(server: AnyServer) -> str:
    return f"127.0.0.1:{server.port}"


StartWorker = Callable[..., Worker]


@pytest.fixture
async def workers() -> AsyncIterator[Callable[..., Worker]]:
    """Starts Workers on a given target as tasks; cancels them afterwards."""
    running: list[asyncio.Task[None]] = []

    def start(target: str, *, configure: Callable[[Worker], None], **kw: object) -> Worker:
        worker = Worker(target, **kw)  # type: ignore[arg-type]
        configure(worker)
        running.append(asyncio.create_task(worker.run_async()))
        return worker

    yield start
    for task in running:
        if not task.done():
            task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


@pytest.fixture
def start_worker(target: str, workers: Callable[..., Worker]) -> StartWorker:
    """Workers on this test's server (the integration suite's fixture of that name)."""

    def start(*, configure: Callable[[Worker], None], **kw: object) -> Worker:
        return workers(target, configure=configure, **kw)

    return start
