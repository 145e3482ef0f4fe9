"""Slot turnaround, for the benchmark: from the server reading a result that frees a slot
to the next delivery being written. Off unless the environment names
``DISPATCHD_TURNAROUND_PROBE`` (bench/run.py sets it for the servers it starts); when off,
the Work stream's cost is one ``is None`` test per message.

Each result read leaves a stamp in one FIFO for the whole server (a width is shared by
every stream, so the slot one worker frees may go to another); each delivery written takes
the oldest stamps, one per job it carries, and keeps the differences. On a width-limited
queue with a backlog that pairs every freed slot with the delivery that filled it. The
metrics endpoint answers ``GET /debug/turnaround`` with the samples since the last ask
(and forgets them), while the probe is on."""

from __future__ import annotations

import json
import os
import time
from array import array
from collections import deque
from collections.abc import Callable

ENV = "DISPATCHD_TURNAROUND_PROBE"
PATH = "/debug/turnaround"
#: Samples kept between two asks: a run of the bench's enforced phases makes 100,000.
MAX_SAMPLES = 1_000_000


class TurnaroundProbe:
    __slots__ = ("_clock", "_freed", "_samples")

    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self._freed: deque[int] = deque()
        self._samples = array("q")
        self._clock = clock

    def results_read(self, n: int) -> None:
        """``n`` results were just read from a stream (each frees a slot)."""
        now = self._clock()
        self._freed.extend([now] * n)

    def delivered(self, n: int) -> None:
        """A message carrying ``n`` deliveries was just written."""
        freed = self._freed
        if not freed:
            return
        now = self._clock()
        samples = self._samples
        for _ in range(min(n, len(freed))):
            if len(samples) < MAX_SAMPLES:
                samples.append(now - freed.popleft())
            else:
                freed.popleft()

    def take(self) -> bytes:
        """The samples since the last call as JSON ``{"us": [...]}``; starts afresh (the
        stamps of results not yet followed by a delivery are dropped too)."""
        samples, self._samples = self._samples, array("q")
        self._freed.clear()
        return json.dumps({"us": [round(ns / 1000, 1) for ns in samples]}).encode()


def from_environment() -> TurnaroundProbe | None:
    return TurnaroundProbe() if os.environ.get(ENV) else None


#: The process's probe (None: off).
PROBE = from_environment()
