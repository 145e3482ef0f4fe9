"""HTTP/1.1 plumbing for the dashboard, on the event loop like /metrics.

Pages read the backend; serving them from the loop (not a thread) means no lock is
needed anywhere. One request per connection, bounded head and body,
so a slow or hostile client costs a socket and a timeout, never memory or loop time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from dispatchd.loop_http import READ_TIMEOUT, LoopHttpServer
from dispatchd.web.errors import WebError

log = logging.getLogger("dispatchd.web")

#: Forms are a few fields; anything bigger is not ours.
MAX_BODY_BYTES = 64 * 1024

REASONS = {
    200: "OK",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    421: "Misdirected Request",
    500: "Internal Server Error",
}
#: Inline scripts and styles are refused: an escaping slip cannot run code.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: under no-referrer Chromium posts forms with
    # "Origin: null", which the Origin check (web/origin.py) cannot tell from a sandboxed
    # cross-site frame. Other sites still get no Referer.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-cased names; a repeated header keeps its last value."""
    form: dict[str, str] = field(default_factory=dict)

    def cookie(self, name: str) -> str | None:
        for part in self.headers.get("cookie", "").split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value
        return None


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, head_only: bool) -> bytes:
        lines = [
            f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Error')}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
            *(f"{k}: {v}" for k, v in {**SECURITY_HEADERS, **self.headers}.items()),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


def _single(values: dict[str, list[str]]) -> dict[str, str]:
    return {k: v[-1] for k, v in values.items()}


def parse_head(raw: bytes) -> tuple[str, str, dict[str, str], dict[str, str]]:
    """(method, path, query, headers) of a request head. Raises WebError(400)."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/") or not parts[1].startswith("/"):
        raise WebError(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise WebError(400, "malformed header line")
        headers[name.strip().lower()] = value.strip()
    url = urlsplit(parts[1])
    query = _single(parse_qs(url.query, keep_blank_values=True))
    return parts[0], unquote(url.path), query, headers


def parse_form(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise WebError(400, "form body must be application/x-www-form-urlencoded") from None
    return _single(parse_qs(text, keep_blank_values=True, errors="strict"))


class WebServer(LoopHttpServer):
    """Serves ``handler(request)`` on host:port; the handler raises WebError to refuse."""

    def __init__(
        self, handler: Callable[[Request], Awaitable[Response]], host: str, port: int
    ) -> None:
        self._handler = handler
        super().__init__(host, port)

    async def _read(self, reader: asyncio.StreamReader) -> Request:
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        method, path, query, headers = parse_head(raw)
        form: dict[str, str] = {}
        if method == "POST":
            length_text = headers.get("content-length", "0")
            if not length_text.isdigit():
                raise WebError(400, "bad Content-Length")
            length = int(length_text)
            if length > MAX_BODY_BYTES:
                raise WebError(413, f"form bodies are at most {MAX_BODY_BYTES} bytes")
            body = await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT)
            form = parse_form(body)
        return Request(method, path, query, headers, form)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head_only = False
        try:
            try:
                request = await self._read(reader)
                head_only = request.method == "HEAD"
                response = await self._handler(request)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return  # idle, truncated or oversized head: nothing worth answering
            except WebError as e:
                response = Response(e.status, f"{e}\n".encode(), "text/plain; charset=utf-8")
            writer.write(response.encode(head_only))
            await writer.drain()
        except ConnectionError as e:
            log.debug("dashboard client went away: %s", e)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError as e:
                log.debug("dashboard connection close failed: %s", e)
