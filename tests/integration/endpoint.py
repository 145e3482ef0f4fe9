"""A real HTTP endpoint for the push tests: an aiohttp server on 127.0.0.1, port 0, that
records every request with its own arrival and finish times and answers through a
handler the test sets."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Call:
    """One request as the endpoint saw it; times are time.monotonic() of this process."""

    number: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    arrived: float
    finished: float = 0.0


Respond = Callable[[Call], Awaitable[web.StreamResponse]]


async def ok(call: Call) -> web.StreamResponse:
    return web.Response(body=b"ok:" + call.body)


def verify_signature(secret: str, header: str, body: bytes, tolerance: float = 300.0) -> bool:
    """The receiving side of X-Dispatchd-Signature, as docs/http-push.md shows it."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    timestamp, received = parts["t"], parts["v1"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False  # an old call replayed
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), received)


@dataclass
class Endpoint:
    respond: Respond = ok
    calls: list[Call] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at stop: handlers that wait on it give up, so the server stops at once."""
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        call = Call(
            number=len(self.calls) + 1,
            method=request.method,
            path=request.path_qs,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.read(),
            arrived=time.monotonic(),
        )
        self.calls.append(call)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self.respond(call)
        finally:
            self.in_flight -= 1
            call.finished = time.monotonic()

    async def start(self, context: ssl.SSLContext | None = None) -> Endpoint:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        scheme = "https" if context is not None else "http"
        self.url = f"{scheme}://{host}:{port}"
        return self

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def hold(self, limit: float = 30.0) -> None:
        """For a handler: wait until the test releases the endpoint (at most ``limit``)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.release.wait(), limit)
