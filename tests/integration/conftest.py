"""In-process dispatchd on a free port, served by the real grpc.aio server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd_client import AsyncClient, Worker
from tests.inproc import base_config, serving


@pytest.fixture
def server_config(tmp_path: Path) -> Config:
    return base_config(tmp_path)


@pytest.fixture
async def server(server_config: Config) -> AsyncIterator[DispatchdServer]:
    async with serving(DispatchdServer(server_config)) as srv:
        yield srv


@pytest.fixture
def target(server: DispatchdServer) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture
async def client(target: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(target) as c:
        yield c


@pytest.fixture
def port(server: DispatchdServer) -> int:
    """The dashboard's port, for tests whose server_config turns --http-listen on."""
    assert server.web is not None
    return server.web.port


StartWorker = Callable[..., Worker]


@pytest.fixture
async def start_worker(target: str) -> AsyncIterator[StartWorker]:
    """Starts Workers as tasks; stops them gracefully (or cancels them) afterwards."""
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    def start(*, configure: Callable[[Worker], None], **kwargs: object) -> Worker:
        worker = Worker(target, **kwargs)  # type: ignore[arg-type]
        configure(worker)
        running.append((worker, asyncio.create_task(worker.run_async())))
        return worker

    yield start
    for _worker, task in running:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
