"""What the browser tests drive: a dispatchd subprocess with its dashboard on, a Worker on
its own thread, and headless Chromium through Selenium and Debian's chromium-driver."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver import Chrome
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.command import Command
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from dispatchd_client import ReceivedJob, Worker
from tests.dispatchd_process import DispatchdProcess

DASHBOARD = re.compile(r"dashboard on http://[^:]+:(\d+)/")
#: axe-core, installed from npm by `make browser-deps` (tests/browser/package-lock.json).
AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
#: axe impacts a page must not have.
AXE_FAILING = ("serious", "critical")
#: The flags the brief asks for: no sandbox (root in CI), nothing fetched in the background.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--window-size=1280,800",
)
#: Deadline of every wait for the page to show something.
WAIT_SECONDS = 10.0


class DashboardServer(DispatchdProcess):
    """``python -m dispatchd`` with the dashboard on a free port."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.web_port = 0  # before the reader starts
        super().__init__(
            [
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "0",
                "--data-dir",
                str(data_dir),
                "--durability",
                "none",
                "--drain-grace",  # the SIGTERM at the end never waits long for a held job
                "1",
                "--log-level",
                "info",
                *extra,
            ]
        )

    def _saw(self, line: str) -> None:
        if m := DASHBOARD.search(line):
            self.web_port = int(m.group(1))

    def _started(self) -> bool:
        return super()._started() and self.web_port != 0

    def wait_ready(self, timeout: float = 20.0) -> None:
        self._wait_started(timeout)

    @property
    def grpc_port(self) -> int:
        return self.port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def serve_dashboard(data_dir: Path, *extra: str) -> Iterator[DashboardServer]:
    """For fixtures: a started server, stopped (drained by SIGTERM) afterwards."""
    server = DashboardServer(data_dir, *extra)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


Handler = Callable[[ReceivedJob], Any]


class WorkerThread:
    """A real Worker on its own thread and event loop (the tests themselves are sync)."""

    def __init__(self, target: str, handlers: Mapping[str, Handler], **options: Any) -> None:
        self._target = target
        self._handlers = handlers
        self._options = options
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        worker = Worker(self._target, **self._options)
        for queue, handler in self._handlers.items():
            worker.handler(queue)(handler)
        task = asyncio.create_task(worker.run_async())
        await asyncio.to_thread(self._stop.wait)
        await worker.stop()
        await task

    def __enter__(self) -> WorkerThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def find_tool(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError(
        f"{' or '.join(names)} not found: `make test` installs Debian's chromium and "
        "chromium-driver (or run `apt-get install chromium chromium-driver`)"
    )


def new_chromium() -> Chrome:
    """Debian's chromium through its own chromedriver (same version, nothing downloaded).
    Console messages are kept for ``Browser.problems``; an alert is left open (not
    dismissed) so a test can see that one fired."""
    options = webdriver.ChromeOptions()
    options.binary_location = find_tool("chromium", "chromium-browser")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.unhandled_prompt_behavior = "ignore"
    service = Service(find_tool("chromedriver"))
    return webdriver.Chrome(options=options, service=service)


class Browser:
    """One dashboard in the shared Chromium: navigation, clicks and waits with deadlines."""

    def __init__(self, driver: Chrome, base: str) -> None:
        self.driver = driver
        self.base = base

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def wait(self, check: Callable[[WebDriver], Any], what: str) -> Any:
        """Polls ``check`` until it returns something truthy, for WAIT_SECONDS at most; an
        element missing or gone stale (the page is being replaced) counts as not yet."""

        def settled(d: WebDriver) -> Any:
            try:
                return check(d)
            except WebDriverException as e:
                # Chromium's answer for an element found as the old document unloads: the
                # same "not yet" as a stale element, under a generic error code.
                if "does not belong to the document" in str(e.msg):
                    return False
                raise

        return WebDriverWait(
            self.driver,
            WAIT_SECONDS,
            poll_frequency=0.05,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        ).until(settled, f"timed out after {WAIT_SECONDS} s waiting for {what}")

    def heading(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "h1").text

    def text(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "body").text

    def button(self, label: str, within: WebElement | None = None) -> WebElement:
        scope: WebDriver | WebElement = within or self.driver
        return scope.find_element(By.XPATH, f".//button[normalize-space()='{label}']")

    def submit(self, label: str, then: str) -> None:
        """Clicks a form's button and waits for the page whose heading is ``then``."""
        self.button(label).click()
        self.wait(lambda d: d.find_element(By.TAG_NAME, "h1").text == then, f"page {then!r}")

    def cell(self, table_id: str, row_link: str, column: int) -> WebElement:
        """The ``column``-th cell (1-based) of the row whose first cell links ``row_link``."""
        return self.driver.find_element(
            By.XPATH, f"//table[@id='{table_id}']//tr[td/a[text()='{row_link}']]/td[{column}]"
        )

    def alert_open(self) -> bool:
        try:
            self.driver.switch_to.alert  # noqa: B018 - the lookup is the check
        except NoAlertPresentException:
            return False
        return True

    def dark(self, on: bool) -> None:
        """Emulates prefers-color-scheme: dark (or light) for the pages that follow."""
        scheme = "dark" if on else "light"
        self.driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
        )

    def accessibility(self) -> list[str]:
        """axe-core's serious and critical violations on the current page, one line each
        (rule, impact, the first offending elements)."""
        if not AXE.exists():
            raise AssertionError(f"{AXE} missing: run `make browser-deps` (npm ci)")
        if not self.driver.execute_script("return typeof window.axe === 'object'"):
            self.driver.execute_script(AXE.read_text())
        violations: list[dict[str, Any]] = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']})"
            ".then((r) => done(r.violations), (e) => done([{id: 'axe-error', impact: 'critical',"
            " help: String(e), nodes: []}]));"
        )
        return [
            f"{v['id']} ({v['impact']}): {v['help']} at "
            + ", ".join(str(n.get("target")) for n in v["nodes"][:3])
            for v in violations
            if v.get("impact") in AXE_FAILING
        ]

    def problems(self) -> list[str]:
        """Console errors and warnings since the last call (CSP violations and uncaught
        exceptions land here too)."""
        # What Chrome.get_log("browser") does, without its missing type hints.
        entries: Iterable[dict[str, Any]] = self.driver.execute(
            Command.GET_LOG, {"type": "browser"}
        )["value"]
        return [e["message"] for e in entries if e["level"] in ("SEVERE", "WARNING")]
