"""The HTTP side of a push: one httpx client per target, and one call made and timed.

Each target gets its own connection pool, bounded (the same bound is the credit of the
target's worker, so every leased job has a connection to go out on), kept alive
between calls, and speaking HTTP/2 where the server offers it through TLS ALPN. TLS
certificates are always verified: against certifi's CA bundle or the one given with
--http-ca-bundle. Every new connection resolves the host and checks each address against
the address rule first (guard.py): an internal address is never connected to unless
--http-allow-cidr lists it.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import certifi
import httpx

from dispatchd.engine import HttpTarget
from dispatchd.engine.addresses import AddressPolicy
from dispatchd.push.errors import PushConfigError, TargetForbidden
from dispatchd.push.guard import GuardedTransport
from dispatchd.push.outcomes import (
    CONNECTION,
    EXCERPT_CHARS,
    FORBIDDEN,
    TIMEOUT,
    CallResult,
    classify_response,
    connection_failure,
    forbidden_failure,
    status_kind,
    timeout_failure,
)
from dispatchd.push.requests import PushRequest

KEEPALIVE_SECONDS = 60.0
SHARD_CONNECTIONS = 4


def ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """One context shared by every target's client (building one reads the whole bundle)."""
    cafile = str(ca_bundle) if ca_bundle is not None else certifi.where()
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as e:
        raise PushConfigError(f"cannot load the CA bundle {cafile}: {e}") from None


def new_client(
    max_connections: int, context: ssl.SSLContext, policy: AddressPolicy
) -> httpx.AsyncClient:
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=KEEPALIVE_SECONDS,
    )
    return httpx.AsyncClient(
        transport=GuardedTransport(context, limits, policy),
        follow_redirects=False,
        # Proxy variables of the server's environment are not for job deliveries.
        trust_env=False,
    )


async def _read_capped(response: httpx.Response, cap: int, keep: int) -> tuple[bytes, bool]:
    """The first ``keep`` bytes of a body of at most ``cap`` (read to its end so that the
    connection can serve the next call); a longer body is cut (and the connection dropped
    rather than draining the rest). True when it was cut."""
    chunks: list[bytes] = []
    kept = size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if kept < keep:
            part = chunk[: keep - kept]
            chunks.append(part)
            kept += len(part)
        if size > cap:
            return b"".join(chunks), True
    return b"".join(chunks), False


async def send(
    client: httpx.AsyncClient,
    target: HttpTarget,
    request: PushRequest,
    cap: int,
    clock: Callable[[], float],
) -> CallResult:
    """Makes the call within the target's timeout (connect, send, wait and read, all
    counted) and classifies what came back; never raises for a failed call."""
    started = time.perf_counter()
    # The body becomes the result only when the queue asks; otherwise only an error
    # response's excerpt is kept.
    keep = cap if target.keep_response_body else EXCERPT_CHARS
    try:
        async with asyncio.timeout(target.timeout):
            async with client.stream(
                request.method,
                request.url,
                headers=request.headers,
                content=request.body or None,
                timeout=target.timeout,
            ) as response:
                body, truncated = await _read_capped(response, cap, keep)
    except TargetForbidden as e:
        latency = time.perf_counter() - started
        return CallResult(forbidden_failure(e), 0, latency, FORBIDDEN)
    except (TimeoutError, httpx.TimeoutException):
        latency = time.perf_counter() - started
        return CallResult(timeout_failure(target.timeout), 0, latency, TIMEOUT)
    except (httpx.HTTPError, OSError) as e:
        latency = time.perf_counter() - started
        return CallResult(connection_failure(e), 0, latency, CONNECTION)
    latency = time.perf_counter() - started
    status = response.status_code
    outcome = classify_response(target, status, body, response.headers.get("retry-after"), clock())
    kept = truncated and target.keep_response_body
    return CallResult(outcome, status, latency, status_kind(status), kept)


class ClientPool:
    """One target's connections, as several httpx clients of at most SHARD_CONNECTIONS
    each. httpcore's pool rescans (and polls) every connection on each request event and
    retries requests that lose a race for a connection, so its cost per call grows with
    the calls it holds. Measured at 100 calls in flight on 2 busy cores: one pool of 100
    fell to about 15 calls/s; with pools of 16 dispatchd spent 1.9 ms of CPU per pushed
    job, of 4 0.96 ms, of 1 0.85 ms. Pools of 4 keep most of the gain and still
    multiplex HTTP/2 streams."""

    def __init__(
        self, max_connections: int, context: ssl.SSLContext, policy: AddressPolicy
    ) -> None:
        shards = math.ceil(max_connections / SHARD_CONNECTIONS)
        base, extra = divmod(max_connections, shards)
        self._room = [base + (1 if i < extra else 0) for i in range(shards)]
        self._clients = [new_client(n, context, policy) for n in self._room]

    async def send(
        self, target: HttpTarget, request: PushRequest, cap: int, clock: Callable[[], float]
    ) -> CallResult:
        """On the client with the most free connections: with as many calls in flight as
        connections in all (the target worker's credit), one is always free."""
        i = max(range(len(self._room)), key=self._room.__getitem__)
        self._room[i] -= 1
        try:
            return await send(self._clients[i], target, request, cap, clock)
        finally:
            self._room[i] += 1

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
