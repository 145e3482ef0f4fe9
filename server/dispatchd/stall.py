"""Noticing that this process did not run for a while (SIGSTOP, a VM or container pause,
swapping, a long collection) and giving leases that time back.

A server that was not running cannot have read the heartbeats its workers sent
meanwhile: they wait in the sockets. Without this, every lease would expire the moment
the loop resumed, a millisecond before those heartbeats are read, and every job would
run twice. A tick every ``every`` seconds keeps a record of when the loop last ran; a gap
longer than ``threshold`` is a stall, and the leases get it back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger("dispatchd")

TICK_SECONDS = 0.25
STALL_SECONDS = 0.5


class StallWatch:
    def __init__(
        self,
        on_stall: Callable[[float], None],
        monotonic: Callable[[], float] = time.monotonic,
        every: float = TICK_SECONDS,
        threshold: float = STALL_SECONDS,
    ) -> None:
        self._on_stall = on_stall
        self._monotonic = monotonic
        self._every = every
        self._threshold = threshold
        self._last = monotonic()
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._last = self._monotonic()
        self._tick()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        self.check()
        self._handle = asyncio.get_running_loop().call_later(self._every, self._tick)

    def check(self) -> None:
        """Call before acting on deadlines: a stall since the last check is given back
        first (the time beyond one tick, which the loop would have slept anyway)."""
        now = self._monotonic()
        gap = now - self._last
        self._last = now
        if gap > self._threshold:
            stalled = gap - self._every
            log.warning(
                "this process did not run for %.2f s; leases and slots get that time back",
                stalled,
            )
            self._on_stall(stalled)
