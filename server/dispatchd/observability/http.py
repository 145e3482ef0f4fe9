"""A minimal HTTP/1.1 endpoint on the event loop serving ``GET /metrics``.

prometheus_client's own server runs in a thread, and its scrape would then read the engine
while the loop changes it. Serving from the loop instead makes every scrape a consistent
picture and needs no lock anywhere. The page is always the text format 0.0.4, which
every Prometheus accepts, rendered by :mod:`dispatchd.observability.exposition` in a few
milliseconds of loop time even for hundreds of queues; Prometheus asks every 15 s or so.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable

from dispatchd.loop_http import READ_TIMEOUT, LoopHttpServer, bearer_token
from dispatchd.observability import turnaround
from dispatchd.observability.exposition import CONTENT_TYPE

log = logging.getLogger("dispatchd.metrics")


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
}
_INDEX = b"dispatchd: Prometheus metrics are at /metrics\n"


def _response(status: int, body: bytes, content_type: str, head_only: bool) -> bytes:
    challenge = 'WWW-Authenticate: Bearer realm="dispatchd metrics"\r\n' if status == 401 else ""
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"{challenge}"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + body


def _parse_head(raw: bytes) -> tuple[str, str, bytes] | None:
    """(method, path, bearer token or b"") of a request head, or None for a malformed
    one. The Authorization header is the only one the answer depends on."""
    lines = raw.split(b"\r\n")
    parts = lines[0].decode("latin-1").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    token = b""
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"authorization":
            token = bearer_token(value.decode("latin-1")).encode("latin-1")
    return parts[0], parts[1].split("?", 1)[0], token


class MetricsServer(LoopHttpServer):
    """Serves what ``page()`` renders at ``http://host:port/metrics``; one request per
    connection."""

    def __init__(
        self,
        page: Callable[[], Awaitable[bytes]],
        host: str,
        port: int,
        token: bytes | None = None,
    ) -> None:
        self._page = page
        self._token = token
        """The bearer token every request must carry (--metrics-token-file); None: open."""
        super().__init__(host, port)

    async def answer(self, path: str, method: str, token: bytes = b"") -> bytes:
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _response(405, b"only GET\n", "text/plain", head_only)
        if self._token is not None and not hmac.compare_digest(token, self._token):
            body = b"send the token of --metrics-token-file as 'Authorization: Bearer'\n"
            return _response(401, body, "text/plain", head_only)
        if path == "/metrics":
            return _response(200, await self._page(), CONTENT_TYPE, head_only)
        if path == "/":
            return _response(200, _INDEX, "text/plain", head_only)
        probe = turnaround.PROBE
        if path == turnaround.PATH and probe is not None:  # the bench's probe, when on
            return _response(200, probe.take(), "application/json", head_only)
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
                method, path, token = request
                writer.write(await self.answer(path, method, token))
            await writer.drain()
        except ConnectionError as e:
            log.debug("metrics client went away: %s", e)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError as e:
                log.debug("metrics connection close failed: %s", e)
