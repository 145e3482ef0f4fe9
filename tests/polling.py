"""Waiting for state in tests: poll a condition until a deadline, never sleep-and-hope.
One sync form (threads, subprocesses) and one async form (tests on an event loop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

POLL_INTERVAL = 0.01


def until(
    check: Callable[[], bool],
    within: float = 10.0,
    what: str = "condition",
    interval: float = POLL_INTERVAL,
) -> None:
    """Calls ``check`` until it is true; AssertionError naming ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        time.sleep(interval)


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    within: float = 10.0,
    what: str = "condition",
    interval: float = POLL_INTERVAL,
) -> None:
    """Polls ``check`` (sync or async) until it is true or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(interval)
