"""A minimal HTTP/1.1 endpoint on the event loop serving ``GET /metrics``.

prometheus_client's own server runs in a thread, and its scrape would then read the engine
while the loop changes it. Serving from the loop instead makes every scrape a consistent
picture and needs no lock anywhere. A scrape of a few hundred series takes about a
millisecond of loop time, and Prometheus asks every 15 s or so.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger("dispatchd.metrics")

#: A slow or idle client gets this long to send its request head.
READ_TIMEOUT = 10.0
#: Largest request head accepted (request line and headers).
MAX_HEAD_BYTES = 16 * 1024

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_INDEX = b"dispatchd: Prometheus metrics are at /metrics\n"


def _response(status: int, body: bytes, content_type: str, head_only: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + body


def _parse_head(raw: bytes) -> tuple[str, str, dict[str, str]] | None:
    """(method, path, lower-cased headers), or None for a malformed head."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1].split("?", 1)[0], headers


class MetricsServer:
    """Serves ``registry`` at ``http://host:port/metrics``; one request per connection."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._registry = registry
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

    def render(self, path: str, method: str, headers: dict[str, str]) -> bytes:
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _response(405, b"only GET\n", "text/plain", head_only)
        if path == "/metrics":
            encoder, content_type = choose_encoder(headers.get("accept", ""))
            return _response(200, encoder(self._registry), content_type, head_only)
        if path == "/":
            return _response(200, _INDEX, "text/plain", head_only)
        return _response(404, b"not found; try /metrics\n", "text/plain", head_only)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return  # idle, truncated or oversized: nothing worth answering
            request = _parse_head(raw)
            if request is None:
                writer.write(_response(400, b"bad request\n", "text/plain", False))
            else:
                writer.write(self.render(request[1], request[0], request[2]))
            await writer.drain()
        except ConnectionError as e:
            log.debug("metrics client went away: %s", e)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError as e:
                log.debug("metrics connection close failed: %s", e)
