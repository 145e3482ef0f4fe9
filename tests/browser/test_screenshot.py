"""A busy dashboard in Chromium: several queues under real traffic, sparklines drawn live.

Every run checks the picture; with DISPATCHD_SCREENSHOT=DIR set (``make screenshot``) it
also runs the traffic long enough to fill the sparklines and the chart and saves the PNGs
docs/ shows: DIR/dashboard.png (the README's) and DIR/dashboard-PAGE-SCHEME.png for the
overview, a queue, a job and the workers page in the light and dark themes. Plain test
runs never rewrite them.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from dispatchd_client import Client, JobState, NewJob, Rate, ReceivedJob, RetryPolicy

from .conftest import BUCKET_FLAGS
from .harness import Browser, DashboardServer, WorkerThread, serve_dashboard

#: queue -> (width, rate per second or None, jobs per tick at the peak)
QUEUES = {
    "emails": (8, None, 6),
    "thumbnails": (3, None, 3),
    "webhooks": (4, Rate(20, 5), 4),
    "reports": (1, None, 1),
    "billing": (2, None, 1),
}
#: Every FAIL_EVERY-th billing job fails for good (the queue allows one attempt), so the
#: pictures show dead jobs, their attention and the chart's failed line.
FAIL_EVERY = 4
#: The pages of the screenshots: (file name part, path, or a queue whose job page to show).
PAGES = [("overview", "/"), ("queue", "/queues/billing"), ("workers", "/workers")]


@pytest.fixture
def busy(tmp_path: Path) -> Iterator[DashboardServer]:
    yield from serve_dashboard(tmp_path, *BUCKET_FLAGS)


#: Seconds a handler runs, by queue (thumbnails are slow enough to show jobs underway).
RUN_TIME = {"thumbnails": 0.1}


_billed = iter(range(1 << 30))


def _work(job: ReceivedJob) -> str:
    time.sleep(RUN_TIME.get(job.queue, 0.01))
    if job.queue == "billing" and next(_billed) % FAIL_EVERY == 0:
        raise RuntimeError("card declined: issuer unavailable")
    return "ok"


def _save_pages(browser: Browser, client: Client, out: Path) -> None:
    """The overview (as docs/dashboard.png too), a queue, a dead job and the workers page,
    light and dark, at a laptop's width."""
    dead = next(client.list_jobs("billing", JobState.DEAD, page_size=1), None)
    pages = [*PAGES, ("job", f"/jobs/{dead.id}")] if dead else PAGES
    browser.driver.set_window_size(1280, 900)
    for scheme in ("light", "dark"):
        browser.dark(scheme == "dark")
        for name, path in pages:
            browser.open(path)
            browser.wait(
                lambda d: d.execute_script("return document.readyState") == "complete", "load"
            )
            browser.driver.save_screenshot(str(out / f"dashboard-{name}-{scheme}.png"))
            if (name, scheme) == ("overview", "light"):
                browser.driver.save_screenshot(str(out / "dashboard.png"))
    browser.dark(False)


def _traffic(client: Client, seconds: float) -> None:
    """Submits in waves for ``seconds``: a load generator paced by the clock (it waits for
    no state, so its sleeps are the pace itself)."""
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        wave = 0.6 + 0.4 * math.sin(elapsed * 1.3)
        batch = [
            NewJob(queue, b'{"to": "user@example.com"}', content_type="application/json")
            for queue, (_, _, peak) in QUEUES.items()
            for _ in range(round(peak * wave))
        ]
        if batch:
            client.submit_batch(batch)
        time.sleep(0.1)


def test_a_busy_dashboard_draws_its_sparklines(chromium: Chrome, busy: DashboardServer) -> None:
    out = os.environ.get("DISPATCHD_SCREENSHOT", "")
    with Client(busy.target, timeout=10) as client:
        for name, (width, rate, _) in QUEUES.items():
            client.update_queue(name, width=width, rate=rate, create=True)
        client.update_queue("billing", retry_policy=RetryPolicy(max_attempts=1))
        client.pause("reports")
        browser = Browser(chromium, busy.url)
        browser.problems()
        chromium.set_window_size(1280, 560)
        browser.open("/")
        handlers = dict.fromkeys(QUEUES, _work)
        with WorkerThread(
            busy.target,
            handlers,
            worker_id="render-1",
            labels={"zone": "eu-west-1"},
            concurrency=16,
        ):
            seconds = 14.0 if out else 1.5
            traffic = threading.Thread(target=_traffic, args=(client, seconds), daemon=True)
            traffic.start()
            path = browser.cell("queues", "emails", 9).find_element(By.TAG_NAME, "path")

            def risen(d: WebDriver) -> bool:
                ys = (path.get_attribute("d") or "").split()[1::2]
                return any(float(y) < 23.0 for y in ys)

            browser.wait(risen, "the emails throughput line to rise")
            assert browser.cell("queues", "reports", 7).text == "yes"
            if out:
                traffic.join(seconds - 3)  # most of the sparkline window filled, still busy
                client.submit_batch([NewJob("thumbnails", b"x") for _ in range(80)])
                underway = browser.cell("queues", "thumbnails", 4)
                browser.wait(lambda d: underway.text == "3", "thumbnails underway")
                _save_pages(browser, client, Path(out))
            traffic.join(seconds + 10)
        assert browser.problems() == []
        chromium.set_window_size(1280, 800)
