"""Runs the engine's time-driven work on the event loop: one dispatch pass per loop
tick however many calls asked for it, and one timer for the engine's next wake-up
(a lease deadline, a delayed job, an expiry, the next rate token)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from dispatchd.backend import Outbox
from dispatchd.engine import Engine, WorkerRecord
from dispatchd.stall import StallWatch

log = logging.getLogger("dispatchd.pump")


MIN_TIMER_SECONDS = 0.001


def wake_delay(due: float, now: float) -> float:
    """Whole milliseconds, at least one: uvloop rounds a timer delay to milliseconds, so
    a 0.4 ms wake-up fires at once, finds no token yet and re-arms - a spin that cost a
    whole core at 2,000 tokens/s. Waking up to 1 ms late loses no tokens with a burst of
    at least rate / 1000 (the default burst is the rate)."""
    return max(MIN_TIMER_SECONDS, math.ceil((due - now) * 1000.0) / 1000.0)


class DispatchPump:
    """Coalesces dispatch requests: submits, results, credit and width changes all call
    ``kick()``; the pass runs once at the end of the current loop iteration, so a
    batch of 1,000 results costs one pass, not 1,000."""

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], float],
        timers: bool = True,
        stall: StallWatch | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._timers = timers
        self._stall = stall
        self._outboxes: dict[int, Outbox] = {}
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due: float | None = None
        # Cached: asyncio.get_running_loop() costs a getpid() system call on 3.11.
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def outboxes(self) -> list[Outbox]:
        return list(self._outboxes.values())

    def outbox(self, worker: WorkerRecord) -> Outbox | None:
        return self._outboxes.get(worker.key)

    def register(self, worker: WorkerRecord, outbox: Outbox) -> None:
        self._outboxes[worker.key] = outbox

    def unregister(self, worker: WorkerRecord) -> None:
        self._outboxes.pop(worker.key, None)

    def kick(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        self.run_now()

    def run_now(self) -> None:
        """One pass at once: what is due by the clock, then every dispatch it allows."""
        if self._stall is not None:
            self._stall.check()  # a stall is given back before any lease is found late
        now = self._clock()
        engine = self._engine
        engine.tick(now)
        outboxes = self._outboxes
        for worker, leases in engine.dispatch(now):
            outbox = outboxes.get(worker.key)
            if outbox is not None:
                outbox.deliver(leases)
        if self._timers:
            self._arm_timer(now)

    def _arm_timer(self, now: float) -> None:
        due = self._engine.next_wakeup()
        if due is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer, self._timer_due = None, None
            return
        if self._timer is not None and self._timer_due is not None and self._timer_due <= due:
            return  # the armed timer fires first; it re-arms after its pass
        if self._timer is not None:
            self._timer.cancel()
        loop = self._loop or asyncio.get_running_loop()
        self._timer_due = due
        self._timer = loop.call_at(loop.time() + wake_delay(due, now), self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_due = None, None
        self.kick()

    def start(self) -> None:
        if self._stall is not None and self._timers:
            self._stall.start()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._stall is not None:
            self._stall.stop()
