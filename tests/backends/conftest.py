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

AnyServer = DispatchdServer | RedisDispatchdServer


def base_config(tmp_path: Path) -> Config:
    return Config(
        listen="127.0.0.1:0",
        data_dir=tmp_path / "data",
        default_lease=5.0,
        metrics_listen="127.0.0.1:0",
        http_listen="0",
    )


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
    srv: AnyServer = (
        RedisDispatchdServer(config) if config.backend == "redis" else DispatchdServer(config)
    )
    await srv.start()
    return srv


@pytest.fixture
async def server(server_config: Config) -> AsyncIterator[AnyServer]:
    srv = await start_server(server_config)
    try:
        yield srv
    finally:
        if not srv.stopped.is_set():
            await srv.stop_now()


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
