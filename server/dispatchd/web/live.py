"""GET /api/events?job=ID or ?queue=NAME: the job's (or queue's) lifecycle events as
Server-Sent Events, so the job and queue pages refresh when something happens instead of
polling every 2 s; and GET /api/live/overview, /api/live/workers: the figures those pages
show, pushed once a second when they changed (web/pulse.py). Both kinds share the bounds
below.

It reads Backend.watch_events, the cursor WatchEvents reads: nothing is buffered per
stream. A client that reads slowly stops our writes (aiohttp waits for the socket to
drain), the cursor stops with them, and when the backend dropped events it had not read
yet the client gets an ``event: missed`` (FELL_BEHIND / RESUME_TOO_OLD), as a WatchEvents
caller gets EventsMissed. Every event's ``id:`` is its resume token, so the browser's
reconnect (with Last-Event-ID) goes on where it left off.

Bounds: at most MAX_STREAMS streams per process (503 beyond); a keep-alive comment every
KEEPALIVE seconds (proxies close silent connections); a client that went away is noticed
within TICK seconds; a write that cannot drain within KEEPALIVE seconds ends the stream (a
client that stopped reading holds no slot for ever); a stream lasts at most MAX_SECONDS,
then the browser reconnects and its credential is checked again (a logged-out session
stops getting events).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from dispatchd.backend import Backend
from dispatchd.observability.events import Event, EventFilter, Missed
from dispatchd.web.errors import WebError
from dispatchd.web.pulse import Pulse

log = logging.getLogger("dispatchd.web")

MAX_STREAMS = 32
KEEPALIVE = 15.0
TICK = 1.0
MAX_SECONDS = 300.0
#: How long the browser waits before it reconnects (ms).
RETRY_MS = 1000


class Sink(Protocol):
    """Where a stream writes: the HTTP response (web/server.py makes it)."""

    async def open(self) -> None:
        """Sends the status line and headers."""

    async def write(self, data: bytes) -> None:
        """Raises ConnectionError when the client went away."""

    def gone(self) -> bool:
        """The client closed its connection."""


def frame(item: Event | Missed) -> bytes:
    """One SSE message: an event (``id:`` its token) or ``event: missed``."""
    if isinstance(item, Missed):
        data = {"reason": item.reason, "message": item.message}
        return f"event: missed\ndata: {json.dumps(data)}\n\n".encode()
    data2 = {
        "kind": item.kind.name,
        "queue": item.queue,
        "job": item.job_id,
        "attempt": item.attempt,
        "worker": item.worker_id,
    }
    line = f"id: {item.token}\n" if item.token.isprintable() else ""
    return f"{line}data: {json.dumps(data2)}\n\n".encode()


def pulse_frame(event: str, body: bytes) -> bytes:
    """One SSE message of a pushed topic: ``event: <page>`` and its JSON on one line."""
    return b"event: " + event.encode() + b"\ndata: " + body + b"\n\n"


async def _framed(items: AsyncIterator[Event | Missed]) -> AsyncIterator[bytes]:
    async for item in items:
        yield frame(item)


async def _pulsed(event: str, bodies: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for body in bodies:
        yield pulse_frame(event, body)


class EventStream:
    """One open stream: what it sends (its watch, or a pushed topic), and the slot it
    holds until run() ends."""

    def __init__(
        self,
        owner: LiveStreams,
        frames: AsyncIterator[bytes],
        source: AsyncIterator[object],
    ) -> None:
        self._owner = owner
        self._frames = frames
        self._source = source
        self._lock = asyncio.Lock()  # the pump and the keep-alive both write
        self._last = 0.0

    async def _send(self, sink: Sink, data: bytes) -> None:
        async with asyncio.timeout(KEEPALIVE), self._lock:
            await sink.write(data)
            self._last = asyncio.get_running_loop().time()

    async def _pump(self, sink: Sink) -> None:
        async for data in self._frames:
            await self._send(sink, data)

    async def run(self, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        pump: asyncio.Task[None] | None = None
        try:
            await sink.open()
            await self._send(sink, f"retry: {RETRY_MS}\n: open\n\n".encode())
            pump = asyncio.create_task(self._pump(sink))
            end = loop.time() + MAX_SECONDS
            while not pump.done() and not sink.gone() and loop.time() < end:
                await asyncio.wait({pump}, timeout=TICK)
                if not pump.done() and loop.time() - self._last >= KEEPALIVE:
                    await self._send(sink, b": keep-alive\n\n")
        except (TimeoutError, ConnectionError):
            pass  # the client stopped reading, or went away
        finally:
            await self._end(pump)

    async def _end(self, pump: asyncio.Task[None] | None) -> None:
        self._owner.open -= 1
        if pump is not None:
            pump.cancel()
            (outcome,) = await asyncio.gather(pump, return_exceptions=True)
            if isinstance(outcome, Exception) and not isinstance(
                outcome, (TimeoutError, ConnectionError)
            ):
                log.error("event stream failed", exc_info=outcome)
        await self._frames.aclose()  # type: ignore[attr-defined]
        await self._source.aclose()  # type: ignore[attr-defined]


class LiveStreams:
    """The process's event streams and their bound."""

    def __init__(self, backend: Backend, pulse: Pulse, limit: int = MAX_STREAMS) -> None:
        self._backend = backend
        self._pulse = pulse
        self._limit = limit
        self.open = 0

    def _refuse_past_bound(self) -> None:
        if self.open >= self._limit:
            raise WebError(
                503, f"at most {self._limit} event streams at once; the page polls instead"
            )

    def pushed(self, topic: str, event: str) -> EventStream:
        """A stream of a pushed topic (web/pulse.py), each message named ``event``.
        Raises WebError past the bound."""
        self._refuse_past_bound()
        self.open += 1
        bodies = self._pulse.follow(topic)
        return EventStream(self, _pulsed(event, bodies), bodies)

    async def start(self, query: dict[str, str], last_event_id: str) -> EventStream:
        """A stream of what ?job=ID or ?queue=NAME names, after ``last_event_id`` (from
        now when empty). Raises WebError (503 past the bound) or EngineError (unknown job
        or queue, bad token) before anything is sent."""
        job_id, queue = query.get("job", ""), query.get("queue", "")
        if bool(job_id) == bool(queue):
            raise WebError(400, "name one of ?job=ID or ?queue=NAME")
        self._refuse_past_bound()
        if job_id:  # its queue too: on Redis a watch reads the streams of its queues
            job = await self._backend.get_job(job_id)
            flt = EventFilter(frozenset({job.queue}), frozenset({job.id}))
        else:
            view = await self._backend.get_queue(queue)
            flt = EventFilter.of([view.name], [], [], [])
        if self.open >= self._limit:  # others started while we looked the job up
            raise WebError(503, f"at most {self._limit} event streams at once")
        self.open += 1
        try:
            items = await self._backend.watch_events(flt, last_event_id)
        except BaseException:
            self.open -= 1
            raise
        return EventStream(self, _framed(items), items)
