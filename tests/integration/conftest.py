"""In-process dispatchd on a free port, served by the real grpc.aio server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd_client import Worker


@pytest.fixture
def server_config(tmp_path: Path) -> Config:
    # Metrics on a free port: every integration test also runs the metrics observers.
    return Config(
        listen="127.0.0.1:0",
        data_dir=tmp_path / "data",
        default_lease=5.0,
        metrics_listen="127.0.0.1:0",
        http_listen="0",  # dashboard tests turn it on; 8080 may be taken
    )


@pytest.fixture
async def server(server_config: Config) -> AsyncIterator[DispatchdServer]:
    srv = DispatchdServer(server_config)
    await srv.start()
    try:
        yield srv
    finally:
        if not srv.stopped.is_set():
            await srv.stop_now()


@pytest.fixture
def target(server: DispatchdServer) -> str:
    return f"127.0.0.1:{server.port}"


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
