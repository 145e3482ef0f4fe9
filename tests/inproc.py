"""In-process servers for the integration and backend suites: the config both start
from and the start/stop around a test, so the two suites run servers the same way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol, TypeVar

from dispatchd.config import Config


class _Server(Protocol):
    """What both backends' servers have: DispatchdServer and RedisDispatchdServer."""

    stopped: asyncio.Event

    async def start(self) -> int: ...
    async def stop_now(self) -> None: ...


AnyServer = TypeVar("AnyServer", bound=_Server)


def base_config(tmp_path: Path) -> Config:
    # Metrics on a free port: every test also runs the metrics observers.
    return Config(
        listen="127.0.0.1:0",
        data_dir=tmp_path / "data",
        default_lease=5.0,
        metrics_listen="127.0.0.1:0",
        http_listen="0",  # dashboard tests turn it on; 8080 may be taken
    )


@asynccontextmanager
async def serving(srv: AnyServer) -> AsyncIterator[AnyServer]:
    """Starts ``srv``; afterwards stops it at once unless the test drained it."""
    await srv.start()
    try:
        yield srv
    finally:
        if not srv.stopped.is_set():
            await srv.stop_now()
