"""With --auth-tokens, the dashboard needs the admin token: as a Bearer header or as the
HttpOnly cookie /login sets."""

from __future__ import annotations

from dispatchd.runtime import DispatchdServer

from ..web import act, get, post
from .conftest import WRONG_TOKEN, StartServer, token


async def _started(start_server: StartServer) -> tuple[DispatchdServer, int]:
    srv = await start_server(tls=False, http_listen="127.0.0.1:0")
    assert srv.web is not None
    return srv, srv.web.port


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(name)}"}


async def test_pages_and_actions_need_the_admin_token(start_server: StartServer) -> None:
    srv, port = await _started(start_server)
    await srv.backend.update_queue("q", width=3, create=True)
    assert (await get(port, "/")).status == 401
    assert (await get(port, "/", {"Authorization": f"Bearer {WRONG_TOKEN}"})).status == 401
    assert (await get(port, "/", bearer("submit"))).status == 403
    assert (await get(port, "/api/queues", bearer("work"))).status == 403
    assert (await get(port, "/static/dashboard.js")).status == 200  # no secrets in it
    assert (await get(port, "/", bearer("admin"))).status == 200
    done = await act(port, "width", {"queue": "q", "width": "5"}, bearer("admin"))
    assert done.status == 200
    assert (await srv.backend.get_queue("q")).settings.width == 5


async def test_a_csrf_token_without_the_credential_is_refused(start_server: StartServer) -> None:
    srv, port = await _started(start_server)
    await srv.backend.update_queue("q", width=3, create=True)
    page = await get(port, "/", bearer("admin"))
    form = {"queue": "q", "csrf": page.csrf(), "confirm": "yes"}
    stolen = await post(port, "/actions/pause", form, {"Cookie": "dispatchd_token=x"})
    assert stolen.status == 401
    assert not (await srv.backend.get_queue("q")).settings.paused
    assert (await post(port, "/actions/pause", form, bearer("admin"))).status == 200
    assert (await srv.backend.get_queue("q")).settings.paused


async def test_login_sets_an_http_only_cookie(start_server: StartServer) -> None:
    _, port = await _started(start_server)
    assert "Admin token" in (await get(port, "/login")).body
    refused = await post(port, "/login", {"token": token("submit")})
    assert refused.status == 403
    assert "set-cookie" not in refused.headers
    ok = await post(port, "/login", {"token": token("admin")})
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    value = cookie.split(";", 1)[0]
    assert (await get(port, "/", {"Cookie": value})).status == 200
