"""The HTTP side of a push: one httpx client per target, and one call made and timed.

Each target gets its own connection pool, bounded (the same bound is the credit of the
target's worker, so every leased job has a connection to go out on), kept alive
between calls, and speaking HTTP/2 where the server offers it through TLS ALPN. TLS
certificates are always verified: against the system's CA bundle (certifi's) or the
one given with --http-ca-bundle.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import certifi
import httpx

from dispatchd.engine import HttpTarget
from dispatchd.push.errors import PushConfigError
from dispatchd.push.outcomes import (
    CONNECTION,
    TIMEOUT,
    CallResult,
    classify_response,
    connection_failure,
    status_kind,
    timeout_failure,
)
from dispatchd.push.requests import PushRequest

KEEPALIVE_SECONDS = 60.0


def ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """One context shared by every target's client (building one reads the whole bundle)."""
    cafile = str(ca_bundle) if ca_bundle is not None else certifi.where()
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as e:
        raise PushConfigError(f"cannot load the CA bundle {cafile}: {e}") from None


def new_client(max_connections: int, context: ssl.SSLContext) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        http2=True,
        verify=context,
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=KEEPALIVE_SECONDS,
        ),
        follow_redirects=False,
        # Proxy variables of the server's environment are not for job deliveries.
        trust_env=False,
    )


async def _read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """At most ``cap`` bytes of the body; a longer one is cut (and the connection dropped
    rather than draining the rest)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        room = cap - size
        if len(chunk) > room:
            chunks.append(chunk[:room])
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
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
    try:
        async with asyncio.timeout(target.timeout):
            async with client.stream(
                request.method,
                request.url,
                headers=request.headers,
                content=request.body or None,
                timeout=target.timeout,
            ) as response:
                body, truncated = await _read_capped(response, cap)
    except (TimeoutError, httpx.TimeoutException):
        latency = time.perf_counter() - started
        return CallResult(timeout_failure(target.timeout), 0, latency, TIMEOUT)
    except (httpx.HTTPError, OSError) as e:
        latency = time.perf_counter() - started
        return CallResult(connection_failure(e), 0, latency, CONNECTION)
    latency = time.perf_counter() - started
    status = response.status_code
    outcome = classify_response(target, status, body, response.headers.get("retry-after"), clock())
    return CallResult(outcome, status, latency, status_kind(status), truncated)
