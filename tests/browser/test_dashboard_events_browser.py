"""The job and queue pages follow /api/events (Server-Sent Events): they change within a
second of the change, in the same document, with no poll in between (polling would take
up to 2 s)."""

from __future__ import annotations

import time

from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from dispatchd_client import Client, JobState

from .harness import Browser


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
