"""The integration suite: an in-process dispatchd on free ports, served by the real
grpc.aio server, on every backend (tests/conftest.py has the fixtures)."""

from __future__ import annotations

import pytest

from dispatchd.runtime import DispatchdServer
from tests.conftest import StartWorker

__all__ = ["StartWorker"]


@pytest.fixture
def port(server: DispatchdServer) -> int:
    """The dashboard's port, for tests whose server_config turns --http-listen on."""
    assert server.web is not None
    return server.web.port
