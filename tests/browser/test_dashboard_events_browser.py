"""The job and queue pages follow /api/events (Server-Sent Events): they change within a
second of the change, in the same document, with no poll in between (polling would take
up to 2 s). The workers page and the overview are sent their figures by /api/live/<page>
(pushed once a second): they change without a reload and without fetching their JSON."""

from __future__ import annotations

import time

from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from dispatchd_client import Client, JobState

from .harness import Browser, DashboardServer, WorkerThread


def _job_fetches(browser: Browser) -> int:
    script = (
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes('/api/jobs/')).length"
    )
    return int(browser.driver.execute_script(script))


def test_job_page_state_badge_follows_events_without_a_reload(
    browser: Browser, client: Client
) -> None:
    client.update_queue("b-events", width=1, create=True)
    client.pause("b-events")  # nothing dispatches: the job stays pending until cancelled
    job = client.submit("b-events", b"x")
    browser.open(f"/jobs/{job.id}")
    browser.wait(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-live-mode") == "events",
        "the page listening to /api/events",
    )
    browser.wait(lambda d: _job_fetches(browser) >= 1, "the refresh on open")
    badge = browser.driver.find_element(By.CSS_SELECTOR, "#fields .state")
    assert badge.text == "PENDING"
    browser.driver.execute_script("window.sameDocument = true")
    before = _job_fetches(browser)
    start = time.monotonic()
    assert client.cancel(job.id).state is JobState.CANCELLED
    WebDriverWait(browser.driver, 1.0, poll_frequency=0.02).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#fields .state").text == "CANCELLED",
        "the badge shows CANCELLED within 1 s",
    )
    assert time.monotonic() - start < 1.0
    assert browser.driver.execute_script("return window.sameDocument === true")
    # one fetch, the event's refresh: no 2 s poll ran (the page is in events mode)
    assert _job_fetches(browser) - before == 1
    classes = browser.driver.find_element(By.CSS_SELECTOR, "#fields .state").get_attribute("class")
    assert classes is not None
    assert "state-cancelled" in classes


def test_queue_page_counts_follow_events(browser: Browser, client: Client) -> None:
    client.update_queue("b-events-q", width=1, create=True)
    client.pause("b-events-q")  # nothing dispatches: pending only grows
    browser.open("/queues/b-events-q")
    browser.wait(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-live-mode") == "events",
        "the page listening to /api/events",
    )
    browser.driver.execute_script("window.sameDocument = true")
    for _ in range(3):
        client.submit("b-events-q", b"x")
    WebDriverWait(browser.driver, 1.0, poll_frequency=0.02).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#counts tbody td").text == "3",
        "pending 3 within 1 s",
    )
    assert browser.driver.execute_script("return window.sameDocument === true")


def _fetches(browser: Browser, path: str) -> int:
    script = (
        "return performance.getEntriesByType('resource')"
        ".filter(e => e.name.includes(arguments[0])).length"
    )
    return int(browser.driver.execute_script(script, path))


def _streaming(browser: Browser) -> None:
    browser.wait(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-live-mode") == "stream",
        "the page listening to its pushed figures",
    )


def test_the_workers_page_shows_a_new_worker_pushed_not_polled(
    browser: Browser, client: Client, dashboard: DashboardServer
) -> None:
    client.update_queue("b-pushed-w", width=1, create=True)
    browser.open("/workers")
    _streaming(browser)
    browser.driver.execute_script("window.sameDocument = true")
    table = browser.driver.find_element(By.ID, "workers")
    assert "b-pushed-worker" not in table.text
    with WorkerThread(
        dashboard.target, {"b-pushed-w": lambda job: "ok"}, worker_id="b-pushed-worker"
    ):
        start = time.monotonic()
        WebDriverWait(browser.driver, 5.0, poll_frequency=0.05).until(
            lambda d: "b-pushed-worker" in table.text, "the new worker, without a reload"
        )
        # Pushed within about a second of connecting (a 2 s poll is not what showed it).
        assert time.monotonic() - start < 3.0
    browser.wait(lambda d: "b-pushed-worker" not in table.text, "the worker gone, live")
    assert browser.driver.execute_script("return window.sameDocument === true")
    assert _fetches(browser, "/api/workers") == 0  # no poll ran: the stream brought both


def test_the_overview_is_pushed_not_polled(browser: Browser, client: Client) -> None:
    client.update_queue("b-pushed-o", width=1, paused=True, create=True)
    browser.open("/?all=1")
    _streaming(browser)
    browser.driver.execute_script("window.sameDocument = true")
    for _ in range(4):
        client.submit("b-pushed-o", b"x")

    def pending_shown(d: object) -> bool:
        for row in browser.driver.find_elements(By.CSS_SELECTOR, "#queues tbody tr"):
            cells = row.find_elements(By.TAG_NAME, "td")
            if cells and cells[0].text == "b-pushed-o":
                return cells[1].text == "4"
        return False

    WebDriverWait(browser.driver, 5.0, poll_frequency=0.05).until(
        pending_shown, "4 pending on the overview, without a reload"
    )
    assert browser.driver.execute_script("return window.sameDocument === true")
    assert _fetches(browser, "/api/overview") == 0
