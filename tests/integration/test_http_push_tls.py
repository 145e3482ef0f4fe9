"""HTTP push over TLS: certificates verified (against --http-ca-bundle), HTTP/2 when the
endpoint offers it through ALPN, and a target that survives a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer, StartError
from dispatchd_client import AsyncClient, HttpTarget, JobState

from .endpoint import Call, Endpoint, verify_signature

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def cert_file(ca: trustme.CA, tmp_path: Path) -> Path:
    """Key and certificate chain for 127.0.0.1 in one PEM file."""
    path = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(path))
    return path


@pytest.fixture
async def https_endpoint(cert_file: Path) -> AsyncIterator[Endpoint]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file)
    ep = await Endpoint().start(context)
    try:
        yield ep
    finally:
        await ep.stop()


async def _started(config: Config) -> DispatchdServer:
    srv = DispatchdServer(config)
    await srv.start()
    return srv


@pytest.fixture
def server_config(server_config: Config) -> Config:
    """The endpoints listen on 127.0.0.1, which the server calls only when told it may."""
    return dataclasses.replace(server_config, http_allow_cidr=("127.0.0.0/8",))


async def _push_one(srv: DispatchdServer, url: str, **target: Any) -> Any:
    async with AsyncClient(f"127.0.0.1:{srv.port}") as client:
        t = HttpTarget(url=url, keep_response_body=True, **target)
        await client.update_queue("tls", http_target=t, create=True)
        job = await client.submit("tls", b"secret payload")
        return await client.wait(job.id, timeout=10)


async def test_https_endpoint_verified_against_the_ca_bundle(
    server_config: Config, ca_file: Path, https_endpoint: Endpoint
) -> None:
    srv = await _started(dataclasses.replace(server_config, http_ca_bundle=ca_file))
    try:
        done = await _push_one(srv, https_endpoint.url)
    finally:
        await srv.stop_now()
    assert (done.state, done.result) == (JobState.SUCCEEDED, b"ok:secret payload")


async def test_https_endpoint_with_an_unknown_ca_is_refused(
    server_config: Config, https_endpoint: Endpoint
) -> None:
    srv = await _started(server_config)  # certifi's CAs: the test CA is not among them
    try:
        done = await _push_one(srv, https_endpoint.url)
    finally:
        await srv.stop_now()
    assert done.state is JobState.FAILED
    assert done.error is not None
    assert done.error.retryable
    assert "CERTIFICATE_VERIFY_FAILED" in done.error.message
    assert https_endpoint.calls == []


async def test_unreadable_ca_bundle_refuses_to_start(server_config: Config, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    srv = DispatchdServer(dataclasses.replace(server_config, http_ca_bundle=missing))
    with pytest.raises(StartError, match=r"nowhere\.pem"):
        await srv.start()


class H2App:
    """An ASGI app that answers with the HTTP version the request came in."""

    def __init__(self) -> None:
        self.versions: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.versions.append(scope["http_version"])
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["http_version"].encode()})


async def test_http2_is_spoken_when_the_endpoint_offers_it(
    server_config: Config, ca_file: Path, cert_file: Path
) -> None:
    app = H2App()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    config = HypercornConfig()
    config.bind = [f"fd://{listener.detach()}"]  # hypercorn owns (and closes) it now
    config.certfile = config.keyfile = str(cert_file)
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    srv = await _started(dataclasses.replace(server_config, http_ca_bundle=ca_file))
    try:
        done = await _push_one(srv, f"https://127.0.0.1:{port}/h2")
    finally:
        await srv.stop_now()
        stop.set()
        await serving
    assert (done.state, done.result) == (JobState.SUCCEEDED, b"2")
    assert app.versions == ["2"]


async def test_target_and_secret_survive_a_restart(server_config: Config) -> None:
    secret = "kept-across-restarts"
    ep = Endpoint()

    async def check(call: Call) -> web.StreamResponse:
        ok = verify_signature(
            secret, call.headers.get("x-dispatchd-signature", "t=0,v1="), call.body
        )
        return web.Response(status=200 if ok else 401, text="signed" if ok else "unsigned")

    ep.respond = check
    await ep.start()
    try:
        first = await _started(server_config)
        async with AsyncClient(f"127.0.0.1:{first.port}") as client:
            target = HttpTarget(
                url=ep.url, signing_secret=secret, timeout=7.5, keep_response_body=True
            )
            await client.update_queue("kept", width=2, http_target=target, create=True)
        await first.drain(grace=1.0)
        second = await _started(server_config)
        try:
            async with AsyncClient(f"127.0.0.1:{second.port}") as client:
                queue = await client.get_queue("kept")
                assert queue.http_target is not None
                assert (queue.http_target.timeout, queue.http_target.signing_enabled) == (7.5, True)
                job = await client.submit("kept", b"after restart")
                done = await client.wait(job.id, timeout=10)
        finally:
            await second.stop_now()
    finally:
        await ep.stop()
    assert (done.state, done.result) == (JobState.SUCCEEDED, b"signed")
