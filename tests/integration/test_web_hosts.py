"""DNS rebinding and cross-site forms with auth off: the dashboard answers only for host
names it knows and takes forms only from its own origin (issue 24, item 11)."""

from __future__ import annotations

import dataclasses

import pytest

from dispatchd.config import Config
from dispatchd_client import AsyncClient

from .web import get, post

REBIND = "rebind.attacker.example"


@pytest.fixture
def server_config(server_config: Config) -> Config:
    return dataclasses.replace(
        server_config, http_listen="127.0.0.1:0", dashboard_allowed_hosts="ops.example.com"
    )


async def test_a_rebound_host_name_reads_nothing_and_changes_nothing(
    port: int, client: AsyncClient
) -> None:
    await client.update_queue("q", width=2, create=True)
    rebound = {"Host": f"{REBIND}:{port}"}
    page = await get(port, "/", rebound)
    assert page.status == 421
    assert "--dashboard-allowed-hosts" in page.body
    assert "csrf" not in page.body
    # Even with a token read some other way, the rebound page's form is refused.
    token = (await get(port, "/")).csrf()
    origin = {**rebound, "Origin": f"http://{REBIND}:{port}"}
    form = {"queue": "q", "csrf": token, "confirm": "yes"}
    assert (await post(port, "/actions/pause", form, origin)).status == 421
    assert not (await client.get_queue("q")).paused


async def test_a_form_from_another_origin_is_refused(port: int, client: AsyncClient) -> None:
    await client.update_queue("q", width=2, create=True)
    token = (await get(port, "/")).csrf()
    form = {"queue": "q", "csrf": token, "confirm": "yes"}
    refused = await post(port, "/actions/pause", form, {"Origin": "http://evil.example"})
    assert refused.status == 403
    assert "origin" in refused.body
    assert not (await client.get_queue("q")).paused
    same = await post(port, "/actions/pause", form, {"Origin": f"http://127.0.0.1:{port}"})
    assert same.status == 200, same.body
    assert (await client.get_queue("q")).paused


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "ops.example.com"])
async def test_ip_literals_localhost_and_listed_names_are_served(port: int, host: str) -> None:
    page = await get(port, "/", {"Host": f"{host}:{port}"})
    assert page.status == 200, page.body
