"""A minimal HTTP/1.1 endpoint on the event loop serving ``GET /metrics``.

prometheus_client's own server runs in a thread, and its scrape would then read the engine
while the loop changes it. Serving from the loop instead makes every scrape a consistent
picture and needs no lock anywhere. The page is always the text format 0.0.4, which
every Prometheus accepts, rendered by :mod:`dispatchd.observability.exposition` in a few
milliseconds of loop time even for hundreds of queues; Prometheus asks every 15 s or so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from dispatchd.loop_http import READ_TIMEOUT, LoopHttpServer
from dispatchd.observability.exposition import CONTENT_TYPE

log = logging.getLogger("dispatchd.metrics")


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


def _parse_head(raw: bytes) -> tuple[str, str] | None:
    """(method, path) of a request head, or None for a malformed one. Headers are not
    needed: the answer never depends on them."""
    parts = raw.decode("latin-1").split("\r\n", 1)[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    return parts[0], parts[1].split("?", 1)[0]


class MetricsServer(LoopHttpServer):
    """Serves what ``page()`` renders at ``http://host:port/metrics``; one request per
    connection."""

    def __init__(self, page: Callable[[], Awaitable[bytes]], host: str, port: int) -> None:
        self._page = page
        super().__init__(host, port)

    async def answer(self, path: str, method: str) -> bytes:
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _response(405, b"only GET\n", "text/plain", head_only)
        if path == "/metrics":
            return _response(200, await self._page(), CONTENT_TYPE, head_only)
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
                writer.write(await self.answer(request[1], request[0]))
            await writer.drain()
        except ConnectionError as e:
            log.debug("metrics client went away: %s", e)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError as e:
                log.debug("metrics connection close failed: %s", e)
