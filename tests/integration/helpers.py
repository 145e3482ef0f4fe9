"""Waiting helpers for integration tests: poll a condition with a deadline, never sleep-and-hope."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

POLL_INTERVAL = 0.01


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    within: float = 10.0,
    what: str = "condition",
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
        await asyncio.sleep(POLL_INTERVAL)
