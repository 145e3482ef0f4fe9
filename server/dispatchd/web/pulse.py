"""The overview's and the workers page's live figures, pushed once a second to every tab
that listens (GET /api/live/overview, /api/live/workers: Server-Sent Events, web/live.py
bounds them), instead of each tab polling its JSON every 2 s.

One task per process computes each topic's JSON once per PERIOD while at least one
stream listens to it, whatever the number of tabs, and stops when the last one leaves.
A stream is sent a topic's JSON when it changed (the workers page hears nothing while no
worker comes, goes or changes), as one ``event: <topic>`` message. Nothing is queued per
stream: a stream that wakes up late gets the latest JSON, never a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

from dispatchd.engine import EngineError

log = logging.getLogger("dispatchd.web")

#: Seconds between two computations of a listened topic.
PERIOD = 1.0
#: The topics: the overview (its 200 rows needing attention most, or every queue's) and
#: the workers.
TOPICS = ("overview", "overview-all", "workers")

Compute = Callable[[str], Awaitable[bytes]]


class Pulse:
    """``follow(topic)`` yields the topic's JSON each time it changed, checked every
    ``period`` seconds by one shared task."""

    def __init__(self, compute: Compute, period: float = PERIOD) -> None:
        self._compute = compute
        self._period = period
        self._listeners: Counter[str] = Counter()
        self._latest: dict[str, tuple[int, bytes]] = {}
        self._version = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0
        """Computation rounds so far (tests, the bench)."""

    async def follow(self, topic: str) -> AsyncIterator[bytes]:
        """The topic's JSON now (as soon as the task has it) and after each change."""
        if topic not in TOPICS:
            raise ValueError(topic)
        self._listeners[topic] += 1
        if self._task is None or self._task.done():
            self._latest.clear()  # computed while nobody listened: too old to show
            self._task = asyncio.get_running_loop().create_task(self._run())
        seen = 0
        try:
            while True:
                latest = self._latest.get(topic)
                if latest is not None and latest[0] > seen:
                    seen = latest[0]
                    yield latest[1]
                    continue
                self._changed.clear()
                await self._changed.wait()
        finally:
            self._listeners[topic] -= 1

    async def _run(self) -> None:
        while +self._listeners:
            for topic in [t for t in TOPICS if self._listeners[t] > 0]:
                try:
                    body = await self._compute(topic)
                except EngineError as e:  # the backend is away: the tabs keep their picture
                    log.debug("live %s not computed: %s", topic, e)
                    continue
                except Exception:  # a bug must not leave every tab waiting for ever
                    log.exception("live %s not computed", topic)
                    continue
                latest = self._latest.get(topic)
                if latest is None or latest[1] != body:
                    self._version += 1
                    self._latest[topic] = (self._version, body)
                    self._changed.set()
            self.rounds += 1
            await asyncio.sleep(self._period)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
