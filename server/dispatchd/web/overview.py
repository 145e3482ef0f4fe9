"""The overview: fleet totals, the dispatched/succeeded/failed chart, and the queues in the
order they need attention (stuck first, then dead growing, then throttled by their rate
with a backlog past the burst, then paused with work waiting).

Counts come from the backend (``queue_figures`` and ``list_workers``: the whole fleet on
Redis), and so does the chart (``fleet_counts``: every replica's workers, web/trends.py
FleetChart); the dead-in-window counts and the sparklines come from this process's trend
rings (on Redis, this replica's share: each replica hears of the jobs its own workers
ran).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dispatchd.backend import WorkerInfo
from dispatchd.engine import QueueFigures, QueueView
from dispatchd.web.sparks import chart_path
from dispatchd.web.trends import Rates, Trend

#: Attention levels, highest first in the table.
STUCK, DEAD_GROWING, THROTTLED, PAUSED_WAITING, FINE = 4, 3, 2, 1, 0
#: Complete buckets with no finished job after which a queue with work is "stuck".
QUIET_BUCKETS = 3
#: Seconds the head job may stay ready, with room and a free credit, before "stuck".
STUCK_AFTER = 60.0


@dataclass(frozen=True, slots=True)
class Attention:
    level: int
    reason: str
    """What to look at ('' when nothing)."""


def attention(
    v: QueueView, trend: Trend | None, fig: QueueFigures | None = None, now: float = 0.0
) -> Attention:
    """Why a queue needs an operator, if it does. Stuck: work waits, the queue is not
    paused, and nothing runs (no workers, width 0, or nothing finished lately and nothing
    underway). Throttled: its rate has no token now or its fairness keys are at their
    limits (the backend's figures), or its backlog is past the rate's burst."""
    waiting = v.pending_count
    running = not v.settings.paused
    rate = v.settings.rate
    hold = v.throttled_until is not None and v.throttled_until > now
    held = hold or v.throttled_key_count > 0
    held = held or (fig is not None and (fig.rate_limited or fig.key_held > 0))
    # A backlog past the burst of a rate limit is the rate's doing, not a stuck queue.
    throttled = (
        running and waiting > 0 and (held or (rate is not None and waiting > max(1, rate.burst)))
    )
    if waiting and running:
        if v.worker_count == 0:
            return Attention(STUCK, f"stuck: {waiting} waiting, no workers")
        if v.settings.width == 0:
            return Attention(STUCK, f"stuck: {waiting} waiting, width 0")
        quiet = trend is not None and not any(trend.throughput[-QUIET_BUCKETS:])
        if quiet and v.underway_count == 0 and not throttled:
            return Attention(STUCK, f"stuck: {waiting} waiting, nothing running")
        waited = _head_waited(v, fig, now)
        if waited is not None and not throttled:
            return Attention(STUCK, f"stuck: the next job has been ready {waited:.0f} s")
    if trend is not None and trend.dead:
        seconds = len(trend.throughput) * trend.bucket_seconds
        window = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
        return Attention(DEAD_GROWING, f"{trend.dead} dead in the last {window}")
    if throttled and hold:
        return Attention(THROTTLED, f"throttled: held by a signal ({v.throttle_reason})")
    if throttled and fig is not None and fig.key_held and not fig.rate_limited:
        return Attention(THROTTLED, f"throttled: {fig.key_held} ready jobs at their key limits")
    if throttled:
        at = f" at {rate.per_second:g}/s" if rate is not None else ""
        return Attention(THROTTLED, f"throttled: {waiting} waiting{at}")
    if waiting and not running:
        return Attention(PAUSED_WAITING, f"paused, {waiting} waiting")
    return Attention(FINE, "")


def _head_waited(v: QueueView, fig: QueueFigures | None, now: float) -> float | None:
    """Seconds the head job has been ready while the queue had room and a worker had a
    free credit (so nothing should have held it), when that is past STUCK_AFTER."""
    if fig is None or fig.head_ready is None or not fig.credit_free:
        return None
    if v.underway_count >= v.settings.width:
        return None  # busy, not stuck: every slot of the width is running
    waited = now - fig.head_ready
    return waited if waited > STUCK_AFTER else None


def by_attention(
    views: Sequence[QueueView],
    trends: dict[str, Trend | None],
    figures: Mapping[str, QueueFigures] | None = None,
    now: float = 0.0,
) -> list[tuple[QueueView, Attention]]:
    figs = figures or {}
    return sort_rated([(v, attention(v, trends[v.name], figs.get(v.name), now)) for v in views])


def sort_rated(rated: list[tuple[QueueView, Attention]]) -> list[tuple[QueueView, Attention]]:
    """Most attention first, then the longest backlog, then by name."""
    rated.sort(key=lambda r: (-r[1].level, -r[0].pending_count, r[0].name))
    return rated


@dataclass(frozen=True, slots=True)
class Totals:
    queues: int
    pending: int
    scheduled: int
    underway: int
    workers: int
    replicas: int
    """Distinct replicas holding workers (0 on the embedded backend)."""
    dead: int
    """DEAD jobs the queues hold now (the backend's figures: the whole fleet on Redis)."""
    failed: int
    dead_recent: int
    """Jobs that went DEAD within the trend window (this process's share)."""
    dispatched_now: float
    finished_now: float
    """Per second, in the last complete bucket."""


def totals(
    views: Sequence[QueueView],
    workers: Sequence[WorkerInfo],
    trends: dict[str, Trend | None],
    rates: Rates | None,
    figures: Mapping[str, QueueFigures] | None = None,
) -> Totals:
    figs = (figures or {}).values()
    return Totals(
        dead=sum(f.dead for f in figs),
        failed=sum(f.failed for f in figs),
        queues=len(views),
        pending=sum(v.pending_count for v in views),
        scheduled=sum(v.scheduled_count for v in views),
        underway=sum(v.underway_count for v in views),
        workers=len(workers),
        replicas=len({w.replica for w in workers if w.replica}),
        dead_recent=sum(t.dead for t in trends.values() if t is not None),
        dispatched_now=rates.dispatched[-1] if rates else 0.0,
        finished_now=rates.succeeded[-1] + rates.failed[-1] if rates else 0.0,
    )


def chart(rates: Rates) -> dict[str, object]:
    """The chart's series, their paths on one shared axis, and the axis' top."""
    top = max([*rates.dispatched, *rates.succeeded, *rates.failed, 0.0])
    series = {
        "dispatched": rates.dispatched,
        "succeeded": rates.succeeded,
        "failed": rates.failed,
    }
    return {
        "bucket_seconds": rates.bucket_seconds,
        "top": top,
        "series": series,
        "paths": {k: chart_path(v, top) for k, v in series.items()},
    }
