"""The dashboard with --auth-tokens in Chromium: log in with the admin token, then pages,
the live refresh and an action work on the HttpOnly cookie alone."""

from __future__ import annotations

from selenium.webdriver.common.by import By

from dispatchd_client import Client

from .conftest import ADMIN_TOKEN
from .harness import Browser, DashboardServer


def test_login_then_pause_with_auth_on(
    auth_browser: Browser, auth_dashboard: DashboardServer
) -> None:
    with Client(auth_dashboard.target, token=ADMIN_TOKEN, timeout=10) as admin:
        admin.update_queue("b-auth", width=2, create=True)
        b = auth_browser
        b.open("/login")
        b.driver.find_element(By.NAME, "token").send_keys(ADMIN_TOKEN)
        b.submit("Log in", then="Done")
        assert "logged in" in b.text()
        assert b.driver.execute_script("return document.cookie") == ""  # HttpOnly
        b.driver.find_element(By.LINK_TEXT, "Back").click()
        b.wait(lambda d: b.heading() == "Overview", "the overview")
        assert b.cell("queues", "b-auth", 5).text == "2"
        # The live refresh reads /api/queues with the cookie too.
        admin.submit("b-auth", b"x")
        admin.pause("b-auth")
        b.wait(lambda d: b.cell("queues", "b-auth", 7).text == "yes", "paused, live")
        b.driver.find_element(By.LINK_TEXT, "b-auth").click()
        b.wait(lambda d: b.heading() == "Queue b-auth", "the queue page")
        b.submit("Resume", then="Confirm")
        b.submit("Confirm", then="Done")
        assert not admin.get_queue("b-auth").paused
