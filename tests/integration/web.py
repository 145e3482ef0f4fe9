"""A small HTTP client for dashboard tests: http.client in a thread, because the server
runs on this test's own event loop."""

from __future__ import annotations

import asyncio
import html
import http.client
import re
from dataclasses import dataclass
from urllib.parse import urlencode

CSRF = re.compile(r"name=csrf value='([^']+)'")


@dataclass(frozen=True)
class Page:
    status: int
    body: str
    headers: dict[str, str]

    def csrf(self) -> str:
        match = CSRF.search(self.body)
        assert match, self.body
        return html.unescape(match.group(1))


def _call(port: int, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> Page:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        return Page(r.status, r.read().decode(), {k.lower(): v for k, v in r.getheaders()})
    finally:
        conn.close()


async def get(port: int, path: str, headers: dict[str, str] | None = None) -> Page:
    return await asyncio.to_thread(_call, port, "GET", path, None, headers or {})


async def post(
    port: int, path: str, form: dict[str, str], headers: dict[str, str] | None = None
) -> Page:
    h = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    return await asyncio.to_thread(_call, port, "POST", path, urlencode(form).encode(), h)


async def act(
    port: int, action: str, form: dict[str, str], headers: dict[str, str] | None = None
) -> Page:
    """Submits an action the way a browser does: the form, then its confirmation."""
    page = await get(port, "/", headers)
    first = await post(port, f"/actions/{action}", {**form, "csrf": page.csrf()}, headers)
    assert first.status == 200, first.body
    assert "Confirm" in first.body, first.body
    confirm = {**form, "csrf": first.csrf(), "confirm": "yes"}
    return await post(port, f"/actions/{action}", confirm, headers)
