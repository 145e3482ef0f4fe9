"""HTTP for the dashboard: aiohttp.web on the server's own event loop.

aiohttp parses the request line, headers, query, cookies and forms; this module keeps the
limits the dashboard always had, so a slow or hostile client costs a socket and a timeout,
never memory or loop time:

- a request head must arrive within ``read_timeout`` seconds of connecting (aiohttp has no
  such timer of its own: an unfinished head would hold the socket for ever);
- the request line and each header at most MAX_FIELD_BYTES, at most MAX_HEADERS headers
  (aiohttp answers 400 past them);
- a form body at most MAX_BODY_BYTES (413, refused from its Content-Length before it is
  read), read within ``read_timeout``;
- one request per connection (``Connection: close``), as before.

Pages read the backend from the loop (not a thread), so no lock is needed anywhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from dispatchd.web.errors import WebError

log = logging.getLogger("dispatchd.web")

#: Seconds a client gets to send its request head, and then its body.
READ_TIMEOUT = 10.0
#: Forms are a few fields; anything bigger is not ours.
MAX_BODY_BYTES = 64 * 1024
#: Longest request line, and longest header line.
MAX_FIELD_BYTES = 8 * 1024
#: Most headers in one request (a browser sends about 15).
MAX_HEADERS = 48

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
    """What a dashboard route reads of a request (aiohttp parsed it)."""

    method: str
    path: str
    """Percent-decoded."""
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-cased names; a repeated header keeps its last value."""
    form: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)

    def cookie(self, name: str) -> str | None:
        return self.cookies.get(name)


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    stream: Callable[[StreamSink], Awaitable[None]] | None = None
    """A streamed answer (Server-Sent Events, web/live.py): it writes the body itself,
    then ``body`` is unused."""


class StreamSink:
    """The response a streamed answer writes to, and whether its client is still there."""

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self._request = request
        self._response = response

    async def open(self) -> None:
        await self._response.prepare(self._request)

    async def write(self, data: bytes) -> None:
        try:
            await self._response.write(data)  # waits for the socket to drain
        except RuntimeError as e:  # aiohttp: "Cannot write to closing transport"
            raise ConnectionResetError(str(e)) from None

    def gone(self) -> bool:
        transport = self._request.transport
        return transport is None or transport.is_closing()


def _last(pairs: object) -> dict[str, str]:
    """A multi-dict as a dict whose repeated keys keep their last string value (file
    fields of a multipart body are not ours and are dropped)."""
    out: dict[str, str] = {}
    for key, value in pairs.items():  # type: ignore[attr-defined]
        if isinstance(value, str):
            out[str(key)] = value
    return out


class WebServer:
    """Serves ``handler(request)`` on host:port; the handler raises WebError to refuse."""

    def __init__(
        self,
        handler: Callable[[Request], Awaitable[Response]],
        host: str,
        port: int,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self._read_timeout = read_timeout
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None
        #: Connections whose head has not arrived yet, and their deadline timers.
        self._waiting: dict[int, asyncio.TimerHandle] = {}
        #: The handlers writing a streamed answer: cancelled on close (they never end
        #: on their own, and aiohttp would wait for them).
        self._streams: set[asyncio.Task[object]] = set()
        self.port = 0

    async def start(self) -> int:
        """Binds and starts serving; returns the bound port. Raises OSError."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._serve)
        runner = web.AppRunner(
            app,
            access_log=None,
            max_line_size=MAX_FIELD_BYTES,
            max_field_size=MAX_FIELD_BYTES,
            max_headers=MAX_HEADERS,
            # A refused body is not read to its end: the connection closes after the answer.
            lingering_time=0,
            handle_signals=False,
        )
        await runner.setup()
        protocols = runner.server
        assert protocols is not None
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: self._guarded(protocols()), self._host, self._port
            )
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def _guarded(self, protocol: RequestHandler) -> RequestHandler:
        """A new connection's protocol, closed if no request head arrives in time."""
        key = id(protocol)
        loop = asyncio.get_running_loop()
        self._waiting[key] = loop.call_later(self._read_timeout, self._expire, key, protocol)
        return protocol

    def _expire(self, key: int, protocol: RequestHandler) -> None:
        if self._waiting.pop(key, None) is not None:
            protocol.force_close()  # idle or unfinished head: nothing worth answering

    def _begun(self, request: web.Request) -> None:
        timer = self._waiting.pop(id(request.protocol), None)
        if timer is not None:
            timer.cancel()

    async def close(self) -> None:
        for timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()
        for task in self._streams:
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _form(self, request: web.Request) -> dict[str, str]:
        if request.method != "POST":
            return {}
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            raise WebError(413, f"form bodies are at most {MAX_BODY_BYTES} bytes")
        try:
            async with asyncio.timeout(self._read_timeout):
                return _last(await request.post())
        except web.HTTPRequestEntityTooLarge:
            raise WebError(413, f"form bodies are at most {MAX_BODY_BYTES} bytes") from None
        except (ValueError, UnicodeDecodeError):
            raise WebError(400, "form body must be application/x-www-form-urlencoded") from None

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self._begun(request)
        try:
            ours = Request(
                request.method,
                request.path,
                _last(request.query),
                {k.lower(): v for k, v in request.headers.items()},
                await self._form(request),
                dict(request.cookies),
            )
            answer = await self._handler(ours)
        except TimeoutError:
            request.protocol.force_close()  # the body never came
            raise web.HTTPRequestTimeout() from None
        except WebError as e:
            answer = Response(e.status, f"{e}\n".encode(), "text/plain; charset=utf-8")
        headers = {
            "Content-Type": answer.content_type,
            "Server": "dispatchd",  # not aiohttp's name and version
            **SECURITY_HEADERS,
            **answer.headers,
        }
        if answer.stream is not None:
            return await self._stream(request, answer.stream, headers)
        response = web.Response(status=answer.status, body=answer.body, headers=headers)
        response.force_close()  # one request per connection, as the limits assume
        return response

    async def _stream(
        self,
        request: web.Request,
        run: Callable[[StreamSink], Awaitable[None]],
        headers: dict[str, str],
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers=headers)
        response.force_close()
        task = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        try:
            await run(StreamSink(request, response))
        finally:
            self._streams.discard(task)
        return response
