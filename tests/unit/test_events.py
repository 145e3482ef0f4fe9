"""The embedded event ring (observability/events.py): a resume inside the ring misses
nothing, one older than it is told RESUME_TOO_OLD, and a watcher the ring overtook while it
was not reading is told FELL_BEHIND with the last token it got; nothing is kept per
watcher."""

from __future__ import annotations

import asyncio

import pytest

from dispatchd.engine.errors import InvalidArgument
from dispatchd.observability.events import (
    FELL_BEHIND,
    RESUME_TOO_OLD,
    Event,
    EventFilter,
    EventHub,
    EventKind,
    Missed,
)


def _emit(hub: EventHub, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        hub._emit(EventKind.SUBMITTED, "q", f"job{i}")


async def _next(it: object) -> Event | Missed:
    return await asyncio.wait_for(anext(it), 2.0)  # type: ignore[call-overload]


async def test_a_resume_within_the_ring_misses_nothing() -> None:
    hub = EventHub(lambda: 0.0, size=10)
    _emit(hub, 5)
    watch = hub.watch(EventFilter(), f"{hub.epoch}-2")
    got = [await _next(watch) for _ in range(3)]
    assert [e.job_id for e in got if isinstance(e, Event)] == ["job2", "job3", "job4"]


async def test_a_resume_older_than_the_ring_is_told() -> None:
    hub = EventHub(lambda: 0.0, size=10)
    _emit(hub, 30)
    watch = hub.watch(EventFilter(), f"{hub.epoch}-3")
    missed = await _next(watch)
    assert isinstance(missed, Missed)
    assert missed.reason == RESUME_TOO_OLD
    first = await _next(watch)
    assert isinstance(first, Event)
    assert first.job_id == "job20"
    other = hub.watch(EventFilter(), "0000abcd-5")  # another process's token
    gone = await _next(other)
    assert isinstance(gone, Missed)
    assert gone.reason == RESUME_TOO_OLD
    with pytest.raises(InvalidArgument):
        hub.watch(EventFilter(), "garbage")


async def test_a_watcher_that_stops_reading_is_told_it_fell_behind() -> None:
    hub = EventHub(lambda: 0.0, size=10)
    watch = hub.watch(EventFilter(queues=frozenset({"q"})), "")
    _emit(hub, 3)
    first = await _next(watch)
    assert isinstance(first, Event)
    _emit(hub, 50, start=3)  # the watcher holds nothing meanwhile: the ring overtakes it
    behind = await _next(watch)
    assert isinstance(behind, Missed)
    assert behind.reason == FELL_BEHIND
    assert behind.resume_token == first.token
    after = await _next(watch)
    assert isinstance(after, Event)
    assert after.job_id == "job43"
