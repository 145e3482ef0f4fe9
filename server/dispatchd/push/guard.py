"""The network layer of HTTP push, with the address rule (engine.addresses) on every
connection: resolve, check every address, then connect to a checked address itself, so a
name that resolves to an internal address (at once, or later: DNS rebinding) is never
connected to, and no second lookup can answer differently from the one checked.

httpx has no switch for this; httpcore has: a connection pool takes a network backend,
whose ``connect_tcp`` is called once per new connection (TLS and HTTP/2 then run on the
stream it returns, with the URL's host name for SNI and certificate checks). GuardedTransport
is the small httpx transport around such a pool (httpx's own transport builds its pool
itself); it maps httpcore's errors to httpx's, as httpx's does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import typing
from collections.abc import AsyncIterator, Iterable, Iterator

import httpcore
import httpx

from dispatchd.engine.addresses import AddressPolicy, IPAddress, forbidden_message
from dispatchd.push.errors import TargetForbidden

#: A setsockopt() argument tuple, as httpcore's backends take them.
SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in the resolver's order, without repeats."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise httpcore.ConnectError(f"cannot resolve {host}: {e}") from None
    out: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]))
        if ip not in out:
            out.append(ip)
    return out


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses ``policy`` allows; raises TargetForbidden when a host has
    none (naming the first refused address and why)."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve(host, port)
        allowed = [ip for ip in addresses if self._policy.refusal(ip) is None]
        if not allowed:
            first = addresses[0]
            kind = self._policy.refusal(first) or "refused"
            raise TargetForbidden(forbidden_message(host, first, kind))
        error: Exception | None = None
        for ip in allowed:
            try:
                return await self._inner.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e  # the next address may answer (as happy eyeballs would try it)
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise TargetForbidden("HTTP targets are reached over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """httpcore's exceptions as the httpx ones of the same name (what callers catch)."""
    try:
        yield
    except httpcore.TimeoutException as e:
        raise _httpx_class(e, httpx.TimeoutException)(str(e)) from e
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as e:
        raise _httpx_class(e, httpx.TransportError)(str(e)) from e


def _httpx_class(error: Exception, fallback: type[httpx.TransportError]) -> type[Exception]:
    for cls in type(error).__mro__:
        twin = getattr(httpx, cls.__name__, None)
        if isinstance(twin, type) and issubclass(twin, httpx.TransportError):
            return twin
    return fallback


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: typing.AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class GuardedTransport(httpx.AsyncBaseTransport):
    """What httpx.AsyncHTTPTransport(http2=True, verify=context, limits=limits) is, over a
    pool whose every connection goes through GuardedBackend."""

    def __init__(self, context: ssl.SSLContext, limits: httpx.Limits, policy: AddressPolicy):
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=True,
            network_backend=GuardedBackend(policy),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self._pool.handle_async_request(core)
        stream = response.stream
        assert isinstance(stream, typing.AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
