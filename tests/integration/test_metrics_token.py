"""/metrics behind a bearer token (--metrics-token-file, issue 24 item 9): without it the
page names every queue to whoever reaches the port."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd_client import AsyncClient

from .scrape import fetch

TOKEN = "scrape-7f3a9c"


@pytest.fixture
def server_config(server_config: Config, tmp_path: Path) -> Config:
    token_file = tmp_path / "metrics-token"
    token_file.write_text(f"{TOKEN}\n")
    return dataclasses.replace(server_config, metrics_token_file=token_file)


async def test_metrics_need_the_token_and_name_no_queue_without_it(
    server: DispatchdServer, client: AsyncClient
) -> None:
    await client.update_queue("secret-queue-name", width=1, create=True)
    port = server.observability.metrics_port
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        refused = await fetch(port, headers=headers)
        assert refused.status == 401
        assert "secret-queue-name" not in refused.body
    ok = await fetch(port, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status == 200
    assert "secret-queue-name" in ok.body
