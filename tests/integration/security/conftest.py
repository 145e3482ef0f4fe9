"""Servers with TLS, mTLS and tokens, on a throwaway PKI made per test."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd_client import TLS
from tests.conftest import config_for
from tests.pki import Pki, make_pki

#: name -> (role, token). "other" is a second submitter, to test job ownership.
TOKENS = {
    "admin": ("admin", "admin-7f3c9a1e5b2d8c4f"),
    "submit": ("submit", "submit-2b8e4d6a0c1f9e3b"),
    "other": ("submit", "other-9d1b7e3f5a2c4e8b"),
    "work": ("work", "work-5c3a9e1d7b4f2a6c"),
}
WRONG_TOKEN = "wrong-0000000000000000"

StartServer = Callable[..., Awaitable[DispatchdServer]]


def token(name: str) -> str:
    return TOKENS[name][1]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    lines = ["# role token name"]
    lines += [f"{role} {tok} {name}" for name, (role, tok) in TOKENS.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def client_tls(pki: Pki) -> TLS:
    """Trusts the test CA and carries the client certificate (works with and without mTLS)."""
    return TLS(pki.ca.cert, pki.client.cert, pki.client.key)


@pytest.fixture
async def start_server(
    tmp_path: Path, pki: Pki, tokens_file: Path, backend: str, request: pytest.FixtureRequest
) -> AsyncIterator[StartServer]:
    """``await start_server(tls=True, mtls=False, auth=True, **config_fields)``, on each
    backend in turn."""
    started: list[DispatchdServer] = []

    async def start(
        *, tls: bool = True, mtls: bool = False, auth: bool = True, **fields: Any
    ) -> DispatchdServer:
        config = config_for(
            backend,
            Config(
                listen="127.0.0.1:0",
                data_dir=tmp_path / f"data{len(started)}",
                metrics_listen="0",
                http_listen="0",
            ),
            request,
        )
        if tls:
            fields |= {"tls_cert": pki.server.cert_path, "tls_key": pki.server.key_path}
        if mtls:
            fields["tls_client_ca"] = pki.ca.cert_path
        if auth:
            fields["auth_tokens"] = tokens_file
        srv = DispatchdServer(dataclasses.replace(config, **fields))
        await srv.start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        if not srv.stopped.is_set():
            await srv.stop_now()
