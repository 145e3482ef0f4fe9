"""In-process dispatchd on a free port, served by the real grpc.aio server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer


@pytest.fixture
def server_config(tmp_path: Path) -> Config:
    return Config(listen="127.0.0.1:0", data_dir=tmp_path / "data", default_lease=5.0)


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
