"""The dashboard's HTTP limits on aiohttp: a head must come in time, heads and form bodies
are bounded, one request per connection, and every answer carries the security headers.
Driven over raw sockets against a WebServer on this loop, with a short read timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dispatchd.web.server import MAX_BODY_BYTES, Request, Response, WebServer

TIMEOUT = 0.3  # the server's read timeout here
DEADLINE = 5.0  # how long a test waits for the server to act on it


class Seen:
    def __init__(self) -> None:
        self.requests: list[Request] = []

    async def __call__(self, request: Request) -> Response:
        self.requests.append(request)
        return Response(200, f"{request.method} {request.path} {request.form}".encode())


@pytest.fixture
async def served() -> AsyncIterator[tuple[WebServer, Seen]]:
    seen = Seen()
    server = WebServer(seen, "127.0.0.1", 0, read_timeout=TIMEOUT)
    await server.start()
    try:
        yield server, seen
    finally:
        await server.close()


async def _exchange(port: int, raw: bytes) -> bytes:
    """Sends ``raw`` and reads until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), DEADLINE)
    finally:
        writer.close()


async def test_an_unfinished_head_is_cut_off_after_the_timeout(
    served: tuple[WebServer, Seen],
) -> None:
    server, seen = served
    started = asyncio.get_running_loop().time()
    answer = await _exchange(server.port, b"GET / HTTP/1.1\r\nHost: a\r\n")
    assert answer == b""  # closed, nothing answered
    assert asyncio.get_running_loop().time() - started < DEADLINE
    assert await _exchange(server.port, b"") == b""  # a silent connection too
    assert seen.requests == []


async def test_an_oversized_header_is_refused_before_the_handler(
    served: tuple[WebServer, Seen],
) -> None:
    server, seen = served
    answer = await _exchange(
        server.port, b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n"
    )
    assert answer.split(b" ", 2)[1] in (b"400", b"431"), answer[:200]
    assert seen.requests == []


async def test_a_form_body_past_the_cap_is_refused_by_its_length(
    served: tuple[WebServer, Seen],
) -> None:
    server, seen = served
    head = (
        "POST /x HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n"
    ).encode()
    answer = await _exchange(server.port, head)  # the body is never sent: not waited for
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    chunked = (
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"4000\r\n" + b"a" * 0x4000 + b"\r\n" for _ in range(5))
        + b"0\r\n\r\n"
    )
    assert (await _exchange(server.port, chunked)).startswith(b"HTTP/1.1 413")
    assert seen.requests == []


async def test_a_body_that_never_comes_is_cut_off(served: tuple[WebServer, Seen]) -> None:
    server, seen = served
    head = (
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 100\r\n\r\nqueue=q"
    )
    answer = await _exchange(server.port, head)
    assert b" 200 " not in answer
    assert seen.requests == []


async def test_forms_headers_and_one_request_per_connection(
    served: tuple[WebServer, Seen],
) -> None:
    server, seen = served
    body = b"a=1&b=2&a=3"
    raw = (
        b"POST /p%20q HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Cookie: s=v; t=w\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    answer = await _exchange(server.port, raw + b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
    head, _, text = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    lower = head.lower()
    assert b"connection: close" in lower
    assert b"content-security-policy: default-src 'self'; script-src 'self'" in lower
    assert b"referrer-policy: same-origin" in lower
    assert b"x-frame-options: deny" in lower
    assert b"server: dispatchd\r\n" in lower
    assert text == b"POST /p q {'a': '3', 'b': '2'}"  # a repeated field keeps its last value
    (request,) = seen.requests  # the pipelined second request was not served
    assert request.cookie("t") == "w"
    assert request.headers["host"] == "a"


async def test_head_answers_without_a_body(served: tuple[WebServer, Seen]) -> None:
    server, _ = served
    answer = await _exchange(server.port, b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == b""
