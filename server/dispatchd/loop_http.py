"""A minimal HTTP/1.1 listener on the server's event loop, shared by /metrics and the
dashboard: binding, the bound port, closing, and the limits both apply to a request."""

from __future__ import annotations

import abc
import asyncio

READ_TIMEOUT = 10.0
"""Seconds a client gets to send its request head (and body)."""
MAX_HEAD_BYTES = 16 * 1024
"""Largest request head read; a longer one is refused."""


def bearer_token(authorization: str) -> str:
    """The credential of an ``Authorization: Bearer <token>`` header value; '' for any
    other scheme or none. /metrics and the dashboard read it the same way."""
    scheme, _, credential = authorization.strip().partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else ""


class LoopHttpServer(abc.ABC):
    """Subclasses answer one connection in ``_handle``."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        """Binds and starts serving; returns the bound port. Raises OSError."""
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, limit=MAX_HEAD_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @abc.abstractmethod
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Reads one request from ``reader`` and answers it on ``writer``."""
