"""One Chromium for the whole session, one dashboard server for it (and one with auth on
for the auth tests); after every test the browser console must be free of errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver import Chrome

from dispatchd_client import Client

from .harness import Browser, DashboardServer, new_chromium, serve_dashboard

ADMIN_TOKEN = "admin-3c9e1f7a5b2d8c40"
#: Short sparkline buckets, so finished jobs show in the browser within a second.
BUCKET_FLAGS = ("--dashboard-bucket", "0.2")


@pytest.fixture(scope="session")
def chromium() -> Iterator[Chrome]:
    driver = new_chromium()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardServer]:
    yield from serve_dashboard(tmp_path_factory.mktemp("dashboard"), *BUCKET_FLAGS)


@pytest.fixture(scope="session")
def auth_dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardServer]:
    tmp = tmp_path_factory.mktemp("auth-dashboard")
    tokens = tmp / "tokens"
    tokens.write_text(f"admin {ADMIN_TOKEN} operator\n")
    yield from serve_dashboard(tmp / "data", *BUCKET_FLAGS, "--auth-tokens", str(tokens))


def _checked(driver: Chrome, base: str) -> Iterator[Browser]:
    browser = Browser(driver, base)
    browser.problems()  # what earlier tests left behind is theirs
    try:
        yield browser
    finally:
        open_alert = browser.alert_open()
        if open_alert:
            driver.switch_to.alert.dismiss()
        problems = browser.problems()
        driver.delete_all_cookies()
    assert not open_alert, "a JavaScript dialog fired"
    assert not problems, f"browser console: {problems}"


@pytest.fixture
def browser(chromium: Chrome, dashboard: DashboardServer) -> Iterator[Browser]:
    yield from _checked(chromium, dashboard.url)


@pytest.fixture
def auth_browser(chromium: Chrome, auth_dashboard: DashboardServer) -> Iterator[Browser]:
    yield from _checked(chromium, auth_dashboard.url)


@pytest.fixture
def client(dashboard: DashboardServer) -> Iterator[Client]:
    with Client(dashboard.target, timeout=10) as c:
        yield c
