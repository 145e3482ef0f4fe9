"""The dashboard's design and newer pages in Chromium: axe-core finds no serious or critical
violation on any page (light and dark), actions are reachable by keyboard, search, bulk
retry through its preview count, the workers page updating itself, the dark theme and a
phone-width viewport."""

from __future__ import annotations

import threading

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from dispatchd_client import Client, JobState, ReceivedJob, RetryPolicy

from .harness import Browser, DashboardServer, WorkerThread

ONCE = RetryPolicy(max_attempts=1, min_backoff=0.01, max_backoff=0.01)


def _fail(job: ReceivedJob) -> str:
    raise RuntimeError("downstream down")


def _dead(client: Client, dashboard: DashboardServer, queue: str, n: int) -> list[str]:
    """``n`` DEAD jobs in ``queue``, which is then paused (retried jobs stay visible)."""
    jobs = [client.submit(queue, b"x", retry_policy=ONCE) for _ in range(n)]
    with WorkerThread(dashboard.target, {queue: _fail}, concurrency=n):
        for job in jobs:
            assert client.wait(job.id, timeout=10).state is JobState.DEAD
    client.pause(queue)
    return [j.id for j in jobs]


def _pages(client: Client, dashboard: DashboardServer, queue: str) -> list[str]:
    """One of every page, with data in it."""
    (dead,) = _dead(client, dashboard, queue, 1)
    job = client.submit(queue, b'{"a": 1}', content_type="application/json", ordering_key="k1")
    return [
        "/",
        f"/queues/{queue}",
        f"/queues/{queue}?state=DEAD",
        f"/jobs/{dead}",
        f"/jobs/{job.id}",
        "/workers",
        "/schedules",
        "/search?q=k1",
        "/login",
    ]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_serious_violation_on_any_page(
    browser: Browser, client: Client, dashboard: DashboardServer, scheme: str
) -> None:
    browser.dark(scheme == "dark")
    queue = f"b-a11y-{scheme}"
    try:
        for path in _pages(client, dashboard, queue):
            browser.open(path)
            if path == f"/queues/{queue}":
                # A throttle hold's note, as the page shows one (its colours are checked).
                browser.driver.execute_script(
                    "const p = document.createElement('p'); p.className = 'throttled';"
                    "p.textContent = 'Throttled until 2026-01-01 00:00:00.000Z: 429.';"
                    "document.querySelector('main').appendChild(p);"
                )
            assert browser.accessibility() == [], path
        # The confirmation page too.
        browser.open(f"/queues/{queue}")
        browser.submit("Retry all dead", then="Confirm")
        assert browser.accessibility() == [], "confirm"
        browser.submit("Confirm", then="Done")
        assert browser.accessibility() == [], "done"
        browser.open("/logout")
        assert browser.accessibility() == [], "logout"
    finally:
        browser.dark(False)


def test_search_finds_a_job_by_its_key(browser: Browser, client: Client) -> None:
    job = client.submit("b-search", b"x", idempotency_key="invoice-42")
    client.submit("b-search", b"y", idempotency_key="invoice-43")
    browser.open("/")
    box = browser.driver.find_element(By.ID, "find")
    box.send_keys("invoice-42", Keys.ENTER)  # the header's search, by keyboard
    browser.wait(lambda d: browser.heading() == "Find a job", "the search page")
    results = browser.driver.find_element(By.ID, "results")
    assert job.id in results.text
    assert "idempotency key" in results.text
    assert "PENDING" in results.text
    browser.driver.find_element(By.LINK_TEXT, job.id).click()
    browser.wait(lambda d: browser.heading() == f"Job {job.id}", "the job page")


def test_bulk_retry_shows_its_count_then_retries(
    browser: Browser, client: Client, dashboard: DashboardServer
) -> None:
    ids = _dead(client, dashboard, "b-bulk", 3)
    browser.open("/queues/b-bulk")
    browser.submit("Retry all dead", then="Confirm")
    assert browser.driver.find_element(By.ID, "preview-count").text == "3"
    assert {client.get(i).state for i in ids} == {JobState.DEAD}  # nothing yet
    browser.submit("Confirm", then="Done")
    assert "3 jobs of queue b-bulk retried" in browser.text()
    assert {client.get(i).state for i in ids} == {JobState.PENDING}


def test_the_workers_page_updates_itself(
    browser: Browser, client: Client, dashboard: DashboardServer
) -> None:
    job = client.submit("b-live-w", b"x")
    hold = threading.Event()

    def handler(job: ReceivedJob) -> str:
        hold.wait(10)
        return "ok"

    browser.open("/workers")
    browser.driver.execute_script("window.sameDocument = true")
    assert "b-live-worker" not in browser.text()
    with WorkerThread(dashboard.target, {"b-live-w": handler}, worker_id="b-live-worker"):
        table = browser.driver.find_element(By.ID, "workers")

        def shown(d: WebDriver) -> bool:
            return "b-live-worker" in table.text and job.id in table.text

        browser.wait(shown, "the new worker and its job, without a reload")
        link = table.find_element(By.LINK_TEXT, job.id)
        assert (link.get_attribute("href") or "").endswith(f"/jobs/{job.id}")
        hold.set()
    browser.wait(lambda d: "b-live-worker" not in table.text, "the worker gone, live")
    assert browser.driver.execute_script("return window.sameDocument === true")


def _background(browser: Browser) -> str:
    value: str = browser.driver.execute_script(
        "return getComputedStyle(document.body).backgroundColor"
    )
    return value


def _dark(rgb: str) -> bool:
    parts = [int(p) for p in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3]]
    return sum(parts) < 3 * 80


def test_the_dark_theme_follows_the_system(browser: Browser, client: Client) -> None:
    client.update_queue("b-dark", width=1, create=True)
    browser.open("/")
    assert not _dark(_background(browser))
    browser.dark(True)
    try:
        browser.open("/")
        assert _dark(_background(browser))
        browser.open("/queues/b-dark")
        assert _dark(_background(browser))
    finally:
        browser.dark(False)


def test_a_phone_width_page_does_not_scroll_sideways(browser: Browser, client: Client) -> None:
    client.update_queue("b-narrow-queue-with-a-long-name", width=1, create=True)
    job = client.submit("b-narrow-queue-with-a-long-name", b"x" * 10_000)
    size = browser.driver.get_window_size()
    browser.driver.set_window_size(390, 844)
    try:
        for path in ("/", "/queues/b-narrow-queue-with-a-long-name", f"/jobs/{job.id}", "/workers"):
            browser.open(path)
            overflow = browser.driver.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, f"{path} is {overflow}px wider than the phone"
            search = browser.driver.find_element(By.ID, "find")
            assert search.is_displayed()
    finally:
        browser.driver.set_window_size(size["width"], size["height"])


def test_actions_are_reachable_by_keyboard(browser: Browser, client: Client) -> None:
    client.update_queue("b-keys", width=2, create=True)
    browser.open("/queues/b-keys")
    body = browser.driver.find_element(By.TAG_NAME, "body")
    for _ in range(60):  # Tab through the page until the Pause button has the focus
        active = browser.driver.switch_to.active_element
        if active.tag_name == "button" and active.text == "Pause":
            break
        body.send_keys(Keys.TAB) if active.tag_name == "body" else active.send_keys(Keys.TAB)
    else:
        raise AssertionError("the Pause button is not reachable with Tab")
    browser.driver.switch_to.active_element.send_keys(Keys.ENTER)
    browser.wait(lambda d: browser.heading() == "Confirm", "the confirmation")
    for _ in range(60):
        active = browser.driver.switch_to.active_element
        if active.tag_name == "button" and active.text == "Confirm":
            break
        active.send_keys(Keys.TAB)
    else:
        raise AssertionError("the Confirm button is not reachable with Tab")
    active.send_keys(Keys.ENTER)
    browser.wait(lambda d: browser.heading() == "Done", "the done page")
    assert client.get_queue("b-keys").paused


def test_the_axe_check_catches_a_violation(browser: Browser) -> None:
    browser.open("/")
    browser.driver.execute_script(
        "const i = document.createElement('input'); i.type = 'checkbox';"
        "document.querySelector('main').appendChild(i);"
    )
    found = browser.accessibility()
    assert any(line.startswith("label (critical)") for line in found), found


def test_the_overview_chart_redraws_as_jobs_finish(
    browser: Browser, client: Client, dashboard: DashboardServer
) -> None:
    client.update_queue("b-chart", width=4, create=True)
    browser.open("/")
    browser.driver.execute_script("window.sameDocument = true")
    line = browser.driver.find_element(By.CSS_SELECTOR, "#chart path[data-series='succeeded']")
    jobs = [client.submit("b-chart", b"x") for _ in range(20)]
    with WorkerThread(dashboard.target, {"b-chart": lambda job: "ok"}, concurrency=4):
        for job in jobs:
            assert client.wait(job.id, timeout=10).state is JobState.SUCCEEDED

    def risen(d: WebDriver) -> bool:
        ys = (line.get_attribute("d") or "").split()[1::2]
        return any(float(y) < 138.0 for y in ys)

    browser.wait(risen, "the succeeded line to rise, live")
    total = browser.driver.find_element(By.CSS_SELECTOR, "[data-latest='top']").text
    assert float(total) > 0
    assert browser.driver.execute_script("return window.sameDocument === true")


def test_a_new_queue_appears_on_the_overview_without_a_reload(
    browser: Browser, client: Client
) -> None:
    client.update_queue("b-leaver", width=1, create=True)
    browser.open("/?all=1")
    browser.driver.execute_script("window.sameDocument = true")
    assert browser.cell("queues", "b-leaver", 5).text == "1"
    client.update_queue("b-newcomer", width=3, create=True)
    client.submit("b-newcomer", b"x")
    browser.wait(lambda d: browser.cell("queues", "b-newcomer", 5).text == "3", "its row, live")
    assert browser.cell("queues", "b-newcomer", 2).text == "1"
    row = browser.driver.find_element(By.XPATH, "//tr[td/a[text()='b-newcomer']]")
    assert row.find_element(By.CSS_SELECTOR, "svg.spark.throughput path")
    assert row.find_element(By.NAME, "pick:b-newcomer").get_attribute("form") == "pick"
    assert browser.accessibility() == []
    client.delete_queue("b-leaver")
    gone = "//table[@id='queues']//a[text()='b-leaver']"
    browser.wait(lambda d: not d.find_elements(By.XPATH, gone), "the deleted queue's row gone")
    assert browser.driver.execute_script("return window.sameDocument === true")


def test_a_job_page_follows_its_job(
    browser: Browser, client: Client, dashboard: DashboardServer
) -> None:
    client.update_queue("b-follow", width=1, paused=True, create=True)
    job = client.submit("b-follow", b"x")
    browser.open(f"/jobs/{job.id}")
    browser.driver.execute_script("window.sameDocument = true")
    badge = browser.driver.find_element(By.CSS_SELECTOR, "tr[data-field='State'] .state")
    assert badge.text == "PENDING"
    with WorkerThread(dashboard.target, {"b-follow": lambda job: "ok"}, worker_id="b-follower"):
        client.resume("b-follow")
        assert client.wait(job.id, timeout=10).state is JobState.SUCCEEDED
        browser.wait(lambda d: badge.text == "SUCCEEDED", "the state badge, live")
    assert "state-succeeded" in (badge.get_attribute("class") or "")
    worker = browser.driver.find_element(By.CSS_SELECTOR, "tr[data-field='Worker'] td:last-child")
    assert worker.text == "b-follower"
    assert browser.driver.execute_script("return window.sameDocument === true")
