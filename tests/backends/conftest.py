"""Tests of what is particular to each backend, and of several replicas sharing Redis
(the fixtures are tests/conftest.py's)."""

from __future__ import annotations

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from tests.conftest import StartWorker

AnyServer = DispatchdServer

__all__ = ["AnyServer", "StartWorker", "start_server"]


async def start_server(config: Config) -> DispatchdServer:
    srv = DispatchdServer(config)
    await srv.start()
    return srv
