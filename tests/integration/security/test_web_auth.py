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
    stolen = await post(port, "/actions/pause", form, {"Cookie": "dispatchd_session=x"})
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


async def test_the_cookie_names_a_session_not_the_token(start_server: StartServer) -> None:
    _, port = await _started(start_server)
    ok = await post(port, "/login", {"token": token("admin")})
    cookie = ok.headers["set-cookie"]
    assert token("admin") not in cookie
    assert "Max-Age=" in cookie
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    behind_tls = await post(
        port, "/login", {"token": token("admin")}, {"X-Forwarded-Proto": "https"}
    )
    assert "; Secure" in behind_tls.headers["set-cookie"]


async def test_logout_ends_the_session(start_server: StartServer) -> None:
    _, port = await _started(start_server)
    ok = await post(port, "/login", {"token": token("admin")})
    session = {"Cookie": ok.headers["set-cookie"].split(";", 1)[0]}
    page = await get(port, "/logout", session)
    assert page.status == 200
    done = await post(port, "/logout", {"csrf": page.csrf()}, session)
    assert done.status == 200
    assert "Max-Age=0" in done.headers["set-cookie"]
    after = await get(port, "/", session)
    assert after.status == 401
    assert "log in again" in after.body


async def test_the_event_stream_needs_the_admin_token_too(start_server: StartServer) -> None:
    srv, port = await _started(start_server)
    await srv.backend.update_queue("q", width=3, create=True)
    assert (await get(port, "/api/events?queue=q")).status == 401
    assert (await get(port, "/api/events?queue=q", bearer("submit"))).status == 403
    # refused before the lookup: an unknown queue is not told from a known one
    assert (await get(port, "/api/events?queue=nosuch", bearer("work"))).status == 403
    assert (await get(port, "/api/events?queue=nosuch", bearer("admin"))).status == 404
