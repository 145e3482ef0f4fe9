"""In-process servers for the integration and backend suites: the config both start
from and the start/stop around a test, so the two suites run servers the same way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol, TypeVar

from dispatchd.config import Config
from dispatchd.embedded import EmbeddedBackend
from dispatchd.engine import JobView
from dispatchd.redis import connect, records
from dispatchd.redis.leasing import RedisLeasing
from dispatchd.runtime import DispatchdServer


class _Server(Protocol):
    """What a server a test starts has (DispatchdServer, or one in a subprocess)."""

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


async def stored_job(server: DispatchdServer, job_id: str) -> JobView:
    """A job as the stopped ``server`` left it: the embedded engine still holds it in
    memory; on Redis it is read back with a bare client (no replica, so nothing is
    dispatched meanwhile)."""
    backend = server.backend
    if isinstance(backend, EmbeddedBackend):
        return backend.engine.get_job(job_id)
    config = server.config
    ops = RedisLeasing(connect.client(config.redis_url), backend.limits, config.finished_retention)
    try:
        return records.view_of(await ops.get_job(job_id))
    finally:
        await ops.close()
