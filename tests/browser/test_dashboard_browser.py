"""The dashboard in headless Chromium against a real server: actions through their
confirmation, checked on the page and through the gRPC API; the live refresh; escaping;
and a clean console (no script errors, no CSP violations) on every page."""

from __future__ import annotations

import threading

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from dispatchd_client import Client, JobState, ReceivedJob

from .harness import Browser, DashboardServer, WorkerThread

XSS = "<script>alert(1)</script>"


def test_pause_and_width_through_their_confirmation(browser: Browser, client: Client) -> None:
    client.update_queue("b-pause", width=2, create=True)
    browser.open("/queues/b-pause")
    assert browser.heading() == "Queue b-pause"
    browser.submit("Pause", then="Confirm")
    assert "Pause queue: queue=b-pause" in browser.text()
    assert not client.get_queue("b-pause").paused  # nothing happens before the confirmation
    browser.submit("Confirm", then="Done")
    assert "queue b-pause paused" in browser.text()
    assert client.get_queue("b-pause").paused
    browser.driver.find_element(By.LINK_TEXT, "Back").click()
    browser.wait(lambda d: d.find_elements(By.XPATH, "//button[text()='Resume']"), "Resume")
    info = browser.driver.find_element(By.XPATH, "//table[1]/tbody/tr").text.split()
    assert info[5] == "yes"  # Pending, Scheduled, Underway, Width, Rate(-), Paused

    width = browser.driver.find_element(By.NAME, "width")
    width.clear()
    width.send_keys("7")
    browser.submit("Set width", then="Confirm")
    assert "width=7" in browser.text()
    browser.submit("Confirm", then="Done")
    assert client.get_queue("b-pause").width == 7
    browser.driver.find_element(By.LINK_TEXT, "Back").click()
    browser.wait(lambda d: d.find_element(By.NAME, "width").get_attribute("value") == "7", "7")
    browser.open("/")
    assert browser.cell("queues", "b-pause", 5).text == "7"
    assert browser.cell("queues", "b-pause", 7).text == "yes"


def test_a_bad_width_is_refused_in_the_browser_and_changes_nothing(
    browser: Browser, client: Client
) -> None:
    client.update_queue("b-bad", width=3, create=True)
    browser.open("/queues/b-bad")
    width = browser.driver.find_element(By.NAME, "width")
    width.clear()
    width.send_keys("lots")
    browser.button("Set width").click()
    browser.wait(lambda d: "width must be an integer" in d.page_source, "the refusal")
    browser.problems()  # the 400 answer is logged as a failed load: expected here
    assert client.get_queue("b-bad").width == 3


def test_queues_page_updates_itself_without_a_reload(browser: Browser, client: Client) -> None:
    client.update_queue("b-live", width=1, create=True)
    client.pause("b-live")  # nothing dispatches: pending only grows
    browser.open("/")
    assert browser.cell("queues", "b-live", 2).text == "0"
    browser.driver.execute_script("window.sameDocument = true")
    for _ in range(3):
        client.submit("b-live", b"x")
    client.update_queue("b-live", width=5)
    browser.wait(lambda d: browser.cell("queues", "b-live", 2).text == "3", "pending 3")
    browser.wait(lambda d: browser.cell("queues", "b-live", 5).text == "5", "width 5")
    assert browser.driver.execute_script("return window.sameDocument === true")


def test_sparklines_redraw_as_jobs_finish(
    browser: Browser, client: Client, dashboard: DashboardServer
) -> None:
    client.update_queue("b-spark", width=4, create=True)
    browser.open("/")
    path = browser.cell("queues", "b-spark", 9).find_element(By.TAG_NAME, "path")
    flat = path.get_attribute("d")
    assert flat is not None
    assert set(flat.split()[1::2]) == {"23.0"}
    jobs = [client.submit("b-spark", b"x") for _ in range(20)]
    with WorkerThread(dashboard.target, {"b-spark": lambda job: "ok"}, concurrency=4):
        for job in jobs:
            assert client.wait(job.id, timeout=10).state is JobState.SUCCEEDED

    def risen(d: WebDriver) -> bool:
        points = (path.get_attribute("d") or "").split()
        return any(float(y) < 23.0 for y in points[1::2])

    browser.wait(risen, "the throughput line to rise")
    latest = browser.cell("queues", "b-spark", 10).find_element(By.CLASS_NAME, "latest")
    assert latest.text.endswith("ms") or latest.text == "-"


def test_a_script_payload_shows_as_text_and_never_runs(browser: Browser, client: Client) -> None:
    job = client.submit("b-xss", XSS, headers={"note": "<img src=x onerror=alert(2)>"})
    browser.open(f"/jobs/{job.id}")
    assert browser.driver.find_element(By.TAG_NAME, "pre").text == XSS
    assert "<img src=x onerror=alert(2)>" in browser.text()
    assert not browser.driver.find_elements(By.TAG_NAME, "img")
    assert not browser.alert_open()
    browser.open("/queues/b-xss")
    assert job.id in browser.text()
    assert not browser.alert_open()


def test_every_page_loads_with_a_clean_console(
    browser: Browser, client: Client, dashboard: DashboardServer
) -> None:
    job = client.submit("b-pages", b'{"a": 1}', content_type="application/json")
    hold = threading.Event()

    def handler(job: ReceivedJob) -> str:
        hold.wait(10)
        return "ok"

    labels = {"zone": "eu-1"}
    with WorkerThread(dashboard.target, {"b-pages": handler}, worker_id="b-worker", labels=labels):

        def held(d: WebDriver) -> bool:
            browser.open("/workers")  # a fresh load each poll (the live refresh is tested apart)
            return job.id in browser.text()

        browser.wait(held, "the worker holding the job")
        assert "b-worker" in browser.text()
        assert "zone=eu-1" in browser.text()
        for path in ("/", "/queues/b-pages", f"/jobs/{job.id}", "/login", "/favicon.ico"):
            browser.open(path)
            assert browser.problems() == [], path
        hold.set()
    browser.open("/")
    browser.submit("Drain the server", then="Confirm")  # seen, never confirmed
    browser.driver.find_element(By.LINK_TEXT, "Cancel").click()
    browser.wait(lambda d: browser.heading() == "Overview", "the overview")


def test_the_console_check_catches_a_csp_violation(browser: Browser) -> None:
    browser.open("/")
    browser.driver.execute_script(
        "const s = document.createElement('script');"
        "s.textContent = 'window.ran = true'; document.body.appendChild(s);"
    )
    problems = browser.problems()
    assert any("Content Security Policy" in p for p in problems), problems
    assert browser.driver.execute_script("return window.ran === undefined")
