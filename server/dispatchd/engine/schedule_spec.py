"""When a schedule fires: the instants of its spec, with time passed in.

A spec is the union of cron expressions (read in an IANA time zone) and fixed intervals,
cut to start..end, each tick moved later by a jitter share derived from the schedule id and
the tick (so every replica computes the same instant). cronsim parses the expressions and
walks the wall clock; this module maps wall-clock times to instants, which is where daylight
saving changes are decided (docs/schedules.md, "Daylight saving"), following Debian's cron:

- An expression that runs at set times (neither its minute nor its hour field starts with
  ``*``, e.g. ``30 2 * * *``) fires once per wall-clock match: a time the clock shows twice
  fires at its first occurrence; a time the clock skips fires at the instant of the jump
  (the first instant after the gap).
- Any other expression (``*/15 * * * *``, ``0 * * * *``) follows elapsed time: a repeated
  wall time fires at both occurrences, a skipped one not at all.

Ticks are whole seconds. Pure: no clock, no I/O.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from dispatchd.engine.errors import InvalidArgument

MAX_CRON_EXPRESSIONS = 10
MAX_INTERVALS = 10
MAX_INTERVAL_SECONDS = 366 * 86_400
MAX_JITTER_SECONDS = 86_400.0
#: Daylight saving (and other offset) changes are shorter than this: a wall time this much
#: before an instant may still map after it.
_SHIFT = timedelta(hours=3)
#: Latest instant a tick may have (the year 9000): far enough, and inside datetime's range.
_LAST_INSTANT = 221_845_392_000.0


@dataclass(frozen=True, slots=True)
class SpecRecord:
    """A validated spec, as stored."""

    cron_expressions: tuple[str, ...] = ()
    intervals: tuple[tuple[int, int], ...] = ()
    """(every, offset) in whole seconds."""
    time_zone: str = ""
    start: float | None = None
    end: float | None = None
    jitter: float = 0.0


def _zone(name: str) -> ZoneInfo | None:
    if not name or name == "UTC":
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidArgument(
            f"time_zone {name!r} is not an IANA time zone name (e.g. Europe/Berlin, "
            "America/New_York, UTC)",
            field="time_zone",
        ) from None


def check_spec(spec: SpecRecord) -> None:
    """Raises InvalidArgument naming the field (relative to the spec) at fault."""
    if not spec.cron_expressions and not spec.intervals:
        raise InvalidArgument(
            "the spec has no cron expression and no interval: it would never fire",
            field="cron_expressions",
        )
    if len(spec.cron_expressions) > MAX_CRON_EXPRESSIONS:
        raise InvalidArgument(
            f"{len(spec.cron_expressions)} cron expressions; the limit is {MAX_CRON_EXPRESSIONS}",
            field="cron_expressions",
        )
    if len(spec.intervals) > MAX_INTERVALS:
        raise InvalidArgument(
            f"{len(spec.intervals)} intervals; the limit is {MAX_INTERVALS}", field="intervals"
        )
    _check_cron(spec.cron_expressions)
    _check_intervals(spec.intervals)
    _zone(spec.time_zone)
    _check_times(spec)


def _check_cron(expressions: tuple[str, ...]) -> None:
    for i, expr in enumerate(expressions):
        where = f"cron_expressions[{i}]"
        if len(expr.split()) not in (5, 6):
            raise InvalidArgument(
                f"{where}: {expr!r} has {len(expr.split())} fields; a cron expression has 5 "
                "(minute hour day-of-month month day-of-week) or 6 (seconds first)",
                field=where,
            )
        try:
            CronSim(expr, datetime(2000, 1, 1))
        except CronSimError as e:
            raise InvalidArgument(f"{where}: {expr!r}: {e}", field=where) from None


def _check_intervals(intervals: tuple[tuple[int, int], ...]) -> None:
    for i, (every, offset) in enumerate(intervals):
        where = f"intervals[{i}]"
        if not 1 <= every <= MAX_INTERVAL_SECONDS:
            raise InvalidArgument(
                f"{where}.every must be 1 s to 366 days in whole seconds, got {every} s",
                field=f"{where}.every",
            )
        if not 0 <= offset < every:
            raise InvalidArgument(
                f"{where}.offset must be at least 0 and less than every ({every} s), got "
                f"{offset} s",
                field=f"{where}.offset",
            )


def _check_times(spec: SpecRecord) -> None:
    if not 0 <= spec.jitter <= MAX_JITTER_SECONDS:
        raise InvalidArgument(f"jitter must be 0 to 1 day, got {spec.jitter:g} s", field="jitter")
    for name in ("start", "end"):
        t = getattr(spec, name)
        if t is not None and not (math.isfinite(t) and 0 <= t < _LAST_INSTANT):
            raise InvalidArgument(f"{name}_time is not a usable time", field=f"{name}_time")
    if spec.start is not None and spec.end is not None and spec.end < spec.start:
        raise InvalidArgument("end_time is before start_time", field="end_time")


def _set_times(expr: str) -> bool:
    """Debian cron's "runs at a specific time": neither minute nor hour starts with ``*``."""
    parts = expr.split()
    if len(parts) == 6:
        parts = parts[1:]
    return not parts[0].startswith("*") and not parts[1].startswith("*")


@dataclass(slots=True)
class CompiledSpec:
    """A spec ready to answer "the first tick after t"; ``seed`` (the schedule id) makes
    each tick's jitter share."""

    spec: SpecRecord
    seed: str
    _zone: ZoneInfo | None = field(init=False)
    _set_times: tuple[bool, ...] = field(init=False)

    def __post_init__(self) -> None:
        self._zone = _zone(self.spec.time_zone)
        self._set_times = tuple(_set_times(e) for e in self.spec.cron_expressions)

    # ---- nominal ticks --------------------------------------------------------------

    def next_tick(self, after: float) -> float | None:
        """The first tick strictly after ``after`` within start..end, or None."""
        spec = self.spec
        if spec.start is not None:
            after = max(after, math.ceil(spec.start) - 1.0)
        best: float | None = None
        for expr, set_times in zip(spec.cron_expressions, self._set_times, strict=True):
            t = self._next_cron(expr, set_times, after)
            if t is not None and (best is None or t < best):
                best = t
        whole = math.floor(after)
        for every, offset in spec.intervals:
            t = float(offset + ((whole - offset) // every + 1) * every)
            if best is None or t < best:
                best = t
        if best is None or best > _LAST_INSTANT:
            return None
        if spec.end is not None and best > spec.end:
            return None
        return best

    def ticks(self, after: float, until: float, limit: int) -> list[float]:
        """Ticks in (after, until], oldest first, at most ``limit``."""
        out: list[float] = []
        t = self.next_tick(after)
        while t is not None and t <= until and len(out) < limit:
            out.append(t)
            t = self.next_tick(t)
        return out

    def _wall(self, t: float) -> datetime:
        return datetime.fromtimestamp(t, self._zone or UTC).replace(tzinfo=None)

    def _offset_steady(self, t: float) -> bool:
        """No offset change within _SHIFT of ``t``: wall time and instant differ by one
        fixed offset around it."""
        zone = self._zone
        span = _SHIFT.total_seconds()
        before = datetime.fromtimestamp(max(0.0, t - span), zone).utcoffset()
        return before == datetime.fromtimestamp(t + span, zone).utcoffset()

    def _next_cron(self, expr: str, set_times: bool, after: float) -> float | None:
        start = self._wall(math.floor(after))
        if self._zone is None:  # UTC: the wall clock is the instant
            try:
                w = next(CronSim(expr, start))
            except StopIteration:
                return None
            return w.replace(tzinfo=UTC).timestamp()
        if self._offset_steady(after):
            # Far from any offset change the first wall-clock match names the first
            # instant, when no change is near that instant either.
            try:
                w = next(CronSim(expr, start))
            except StopIteration:
                return None
            t = w.replace(tzinfo=self._zone).timestamp()
            if t > after and self._offset_steady(t):
                return t
        # Near a change a wall time up to _SHIFT before ``after`` may map after it (a
        # repeated hour), and wall order is not instant order: look until no later wall
        # time can beat the best instant found.
        best: float | None = None
        best_wall: datetime | None = None
        try:
            for w in CronSim(expr, start - _SHIFT):
                if best_wall is not None and w > best_wall + _SHIFT:
                    break
                for t in self._instants(w, set_times):
                    if t > after and (best is None or t < best):
                        best, best_wall = t, w
                if w.year > 8999:
                    break
        except StopIteration:
            pass
        return best

    def _instants(self, w: datetime, set_times: bool) -> tuple[float, ...]:
        """The instants wall-clock time ``w`` names in the zone (see the module doc)."""
        first = w.replace(tzinfo=self._zone, fold=0).timestamp()
        second = w.replace(tzinfo=self._zone, fold=1).timestamp()
        if first == second:
            return (first,)
        if first < second:  # the clock shows w twice
            return (first,) if set_times else (first, second)
        # The clock skips w: fold=0 read it with the offset before the jump (later), fold=1
        # with the one after (earlier); the jump itself lies between.
        return (self._jump_between(second, first),) if set_times else ()

    def _jump_between(self, lo: float, hi: float) -> float:
        """The first instant in (lo, hi] whose UTC offset differs from lo's (offset changes
        fall on whole seconds)."""
        zone = self._zone
        before = datetime.fromtimestamp(lo, zone).utcoffset()
        a, b = math.floor(lo), math.ceil(hi)
        while b - a > 1:
            mid = (a + b) // 2
            if datetime.fromtimestamp(mid, zone).utcoffset() == before:
                a = mid
            else:
                b = mid
        return float(b)

    # ---- jitter -----------------------------------------------------------------------

    def fire_time(self, tick: float) -> float:
        """When ``tick`` fires: a share of the jitter fixed by (seed, tick), never at or past
        the following tick."""
        jitter = self.spec.jitter
        if jitter <= 0:
            return tick
        following = self.next_tick(tick)
        if following is not None:
            jitter = min(jitter, (following - tick) * 0.999)
        digest = hashlib.blake2b(f"{self.seed}@{tick:.0f}".encode(), digest_size=8).digest()
        share = int.from_bytes(digest, "big") / 2.0**64
        return tick + share * jitter


def tick_label(tick: float) -> str:
    """A tick as people read it: RFC 3339 UTC, milliseconds when not whole."""
    moment = datetime.fromtimestamp(tick, UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
