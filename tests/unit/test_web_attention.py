"""The overview's attention order: stuck, then dead growing, then throttled, then paused with
work waiting, then the rest; each with the reason the page shows."""

from __future__ import annotations

import dataclasses

from dispatchd.engine import Rate
from dispatchd.engine.model import QueueFigures, QueueSettings, QueueView
from dispatchd.web.overview import by_attention
from dispatchd.web.trends import Trend

BUSY = Trend(1.0, [1.0] * 10, [0.1] * 10)


def _queue(
    name: str,
    pending: int,
    workers: int = 1,
    width: int = 2,
    paused: bool = False,
    rate: Rate | None = None,
) -> QueueView:
    settings = QueueSettings(width=width, paused=paused, rate=rate)
    return QueueView(name, settings, pending, 0, workers)


def test_queues_come_in_the_order_they_need_attention() -> None:
    views = [
        _queue("fine", 0),
        _queue("paused", 5, paused=True),
        _queue("throttled", 50, rate=Rate.of(1.0, 5)),
        _queue("dying", 0),
        _queue("no-workers", 3, workers=0),
        _queue("quiet", 2),
        _queue("closed", 1, width=0),
    ]
    trends: dict[str, Trend | None] = {v.name: BUSY for v in views}
    trends["dying"] = Trend(1.0, [1.0] * 10, [0.1] * 10, dead=4)
    trends["quiet"] = Trend(1.0, [1.0] * 7 + [0.0] * 3, [None] * 10)
    rated = by_attention(views, trends)
    assert [(v.name, a.reason) for v, a in rated] == [
        ("no-workers", "stuck: 3 waiting, no workers"),
        ("quiet", "stuck: 2 waiting, nothing running"),
        ("closed", "stuck: 1 waiting, width 0"),
        ("dying", "4 dead in the last 10 s"),
        ("throttled", "throttled: 50 waiting at 1/s"),
        ("paused", "paused, 5 waiting"),
        ("fine", ""),
    ]


def test_a_head_job_ready_too_long_with_room_and_credit_is_stuck() -> None:
    view = _queue("slow-start", 4)
    fig = QueueFigures(view, 1000.0, 0, 0, 0, False)  # head ready since t=1000
    (rated,) = by_attention([view], {"slow-start": BUSY}, {"slow-start": fig}, now=1090.0)
    assert rated[1].reason == "stuck: the next job has been ready 90 s"
    (fresh,) = by_attention([view], {"slow-start": BUSY}, {"slow-start": fig}, now=1030.0)
    assert fresh[1].reason == ""
    full = QueueView("full", QueueSettings(width=1), 4, 1, 1)
    fig_full = QueueFigures(full, 1000.0, 0, 0, 0, False)
    (busy,) = by_attention([full], {"full": BUSY}, {"full": fig_full}, now=1090.0)
    assert busy[1].reason == ""  # every slot of the width runs: busy, not stuck


def test_a_queue_held_by_a_throttle_signal_is_throttled_not_stuck() -> None:
    view = dataclasses.replace(
        _queue("held", 7), throttled_until=2000.0, throttle_reason="provider says 429"
    )
    fig = QueueFigures(view, 1000.0, 0, 0, 0, False)  # its head waits: the hold's doing
    (rated,) = by_attention([view], {"held": BUSY}, {"held": fig}, now=1500.0)
    assert rated[1].reason == "throttled: held by a signal (provider says 429)"
