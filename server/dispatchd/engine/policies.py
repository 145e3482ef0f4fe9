"""Dispatch policies as plain values: token buckets, retry backoff, per-key limits."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from dispatchd.engine.errors import InvalidArgument

# A token counts as available this close to 1: float error must not turn a due wake-up
# into a second wake-up a nanosecond later.
_EPSILON = 1e-9
MAX_RATE = 1_000_000.0


@dataclass(frozen=True, slots=True)
class Rate:
    """per_second tokens a second, at most ``burst`` saved up."""

    per_second: float
    burst: int

    @staticmethod
    def of(per_second: float, burst: int = 0, what: str = "rate") -> Rate:
        if not (math.isfinite(per_second) and 0 < per_second <= MAX_RATE):
            raise InvalidArgument(
                f"{what}.per_second must be > 0 and <= {MAX_RATE:g}, got {per_second}",
                field=f"{what}.per_second",
            )
        if not 0 <= burst <= MAX_RATE:
            raise InvalidArgument(
                f"{what}.burst must be between 0 and {MAX_RATE:g}, got {burst}",
                field=f"{what}.burst",
            )
        return Rate(per_second, burst or max(1, math.ceil(per_second)))


class TokenBucket:
    """Over any window of length t, take() succeeds at most burst + per_second * t times."""

    __slots__ = ("burst", "per_second", "stamp", "tokens")

    def __init__(self, rate: Rate, now: float) -> None:
        self.per_second = rate.per_second
        self.burst = float(rate.burst)
        self.tokens = self.burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.per_second)
            self.stamp = now

    def ready(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= 1.0 - _EPSILON

    def take(self, now: float) -> bool:
        if not self.ready(now):
            return False
        self.tokens = max(0.0, self.tokens - 1.0)
        return True

    def next_time(self, now: float) -> float:
        """When the next token is due (``now`` when one is there)."""
        self._refill(now)
        if self.tokens >= 1.0 - _EPSILON:
            return now
        return now + (1.0 - self.tokens) / self.per_second

    def hold(self, until: float) -> None:
        """A throttle signal holds its scope until ``until``: the bucket is empty then and
        earns nothing before, so the calls resume at the rate, not in a burst of the tokens
        a hold would have saved up (which would be refused again at once)."""
        self.tokens = 0.0
        self.stamp = max(self.stamp, until)

    def reconfigure(self, rate: Rate, now: float) -> None:
        """Takes effect at once: tokens earned so far are kept, capped to the new burst."""
        self._refill(now)
        self.per_second = rate.per_second
        self.burst = float(rate.burst)
        self.tokens = min(self.tokens, self.burst)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed attempt runs again; max_attempts counts the first attempt too."""

    max_attempts: int = 1
    min_backoff: float = 1.0
    max_backoff: float = 300.0
    multiplier: float = 2.0
    jitter: float = 0.0

    @staticmethod
    def of(
        max_attempts: int,
        min_backoff: float,
        max_backoff: float,
        multiplier: float,
        jitter: float,
        what: str = "retry_policy",
    ) -> RetryPolicy:
        if not 1 <= max_attempts <= 1000:
            raise InvalidArgument(
                f"{what}.max_attempts must be 1-1000, got {max_attempts}",
                field=f"{what}.max_attempts",
            )
        if not 0 <= min_backoff <= 86_400:
            raise InvalidArgument(
                f"{what}.min_backoff must be 0 s to 1 day, got {min_backoff:g} s",
                field=f"{what}.min_backoff",
            )
        max_backoff = max_backoff or max(min_backoff, 300.0)
        if not min_backoff <= max_backoff <= 86_400:
            raise InvalidArgument(
                f"{what}.max_backoff must be between min_backoff and 1 day, got {max_backoff:g} s",
                field=f"{what}.max_backoff",
            )
        multiplier = multiplier or 2.0
        if not (math.isfinite(multiplier) and 1.0 <= multiplier <= 100.0):
            raise InvalidArgument(
                f"{what}.multiplier must be 1-100, got {multiplier}", field=f"{what}.multiplier"
            )
        if not (math.isfinite(jitter) and 0.0 <= jitter <= 1.0):
            raise InvalidArgument(
                f"{what}.jitter must be 0-1, got {jitter}", field=f"{what}.jitter"
            )
        return RetryPolicy(max_attempts, min_backoff, max_backoff, multiplier, jitter)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Delay before the attempt after ``attempt`` (1-based): min(max, min * mult^(n-1))
        with +/- jitter of that."""
        exponent = min(attempt - 1, 1000)
        try:
            base = self.min_backoff * self.multiplier**exponent
        except OverflowError:
            base = self.max_backoff
        delay = min(self.max_backoff, base)
        if self.jitter:
            delay *= 1.0 + self.jitter * (2.0 * rng.random() - 1.0)
        return max(0.0, delay)


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """Bounds per fairness key; 0 means unbounded. ``windows``: quotas per key (RateWindow,
    in period order)."""

    max_in_flight_per_key: int = 0
    per_key_rate: Rate | None = None
    windows: tuple[RateWindow, ...] = ()

    @staticmethod
    def of(
        max_in_flight: int,
        per_key_rate: float,
        per_key_burst: int,
        windows: tuple[RateWindow, ...] = (),
    ) -> KeyLimits:
        if not 0 <= max_in_flight <= 1_000_000:
            raise InvalidArgument(
                f"key_limits.max_in_flight_per_key must be 0-1000000, got {max_in_flight}",
                field="key_limits.max_in_flight_per_key",
            )
        if per_key_rate < 0 or per_key_burst < 0:
            raise InvalidArgument(
                "key_limits.per_key_rate and per_key_burst must be >= 0",
                field="key_limits.per_key_rate",
            )
        rate = (
            Rate.of(per_key_rate, per_key_burst, "key_limits.per_key_rate")
            if per_key_rate
            else None
        )
        quotas = RateWindow.several(list(windows), "key_limits.per_key_windows")
        return KeyLimits(max_in_flight, rate, quotas)


@dataclass(frozen=True, slots=True)
class AdaptiveRate:
    """AIMD over a configured rate (the ceiling): each throttle signal multiplies the
    effective rate by ``decrease`` (not below ``floor``), each ``quiet`` seconds without one
    adds ``increase`` (0: 5 % of the ceiling), never above the ceiling."""

    floor: float
    decrease: float = 0.5
    increase: float = 0.0
    quiet: float = 1.0

    @staticmethod
    def of(floor: float, decrease: float, increase: float, quiet: float) -> AdaptiveRate:
        what = "adaptive"
        if not (math.isfinite(floor) and 0 < floor <= MAX_RATE):
            raise InvalidArgument(
                f"{what}.floor must be > 0 and <= {MAX_RATE:g} per second, got {floor}",
                field=f"{what}.floor",
            )
        decrease = decrease or 0.5
        if not (math.isfinite(decrease) and 0 < decrease < 1):
            raise InvalidArgument(
                f"{what}.decrease must be more than 0 and less than 1, got {decrease}",
                field=f"{what}.decrease",
            )
        if not (math.isfinite(increase) and 0 <= increase <= MAX_RATE):
            raise InvalidArgument(
                f"{what}.increase must be 0 (5 % of the rate) to {MAX_RATE:g}, got {increase}",
                field=f"{what}.increase",
            )
        if not (math.isfinite(quiet) and 0.1 <= quiet <= 3600):
            raise InvalidArgument(
                f"{what}.quiet_interval must be 0.1 s to 1 h, got {quiet:g} s",
                field=f"{what}.quiet_interval",
            )
        return AdaptiveRate(floor, decrease, increase, quiet)


class Aimd:
    """The effective rate of one adaptive bucket (a queue's, or a fairness key's), moved
    only by the calls below: time is an argument. Stateless between signals: the rate at
    ``now`` is the rate the last signal left (``base``) plus one ``increase`` per whole
    quiet interval since ``stamp``, under the ceiling; never signalled, it is the ceiling.
    The Redis scripts compute the same from the same two stored numbers
    (includes/adaptive.lua), so both backends agree to the float."""

    __slots__ = ("base", "ceiling", "cut", "policy", "stamp")

    def __init__(self, policy: AdaptiveRate, ceiling: float, now: float) -> None:
        self.policy = policy
        self.ceiling = ceiling
        self.base: float | None = None  # the rate the last decrease left; None: none yet
        self.stamp = now  # when the increases after it start counting
        self.cut = -math.inf  # the last decrease

    def rate_at(self, now: float) -> float:
        """The effective rate at ``now``."""
        if self.base is None:
            return self.ceiling
        e = min(self.base, self.ceiling)
        if e < self.ceiling and now > self.stamp:
            p = self.policy
            n = math.floor((now - self.stamp) / p.quiet + _EPSILON)
            e = min(self.ceiling, e + n * (p.increase or 0.05 * self.ceiling))
        return e

    def throttled(
        self, now: float, sent_at: float | None = None, resume_at: float | None = None
    ) -> float:
        """A throttle signal came: multiplicative decrease, and the quiet interval starts
        over when the signal's hold ends (``resume_at``): time spent held is not time the
        rate proved itself. A signal about a call sent (``sent_at``, its dispatch) before
        the last decrease says nothing about the rate since, so it changes nothing: the
        calls in flight when the provider started refusing do not cut the rate once each
        (TCP's one cut per window)."""
        if sent_at is not None and sent_at < self.cut:
            return self.rate_at(now)
        p = self.policy
        self.base = max(min(p.floor, self.ceiling), self.rate_at(now) * p.decrease)
        self.cut = now
        self.stamp = now if resume_at is None else max(now, resume_at)
        return self.base

    def reconfigure(self, policy: AdaptiveRate, ceiling: float) -> None:
        """New settings: the rate signals brought it to stays (under the new ceiling)."""
        self.policy = policy
        self.ceiling = ceiling

    def rate(self, configured: Rate, now: float) -> Rate:
        """The bucket's rate now: the effective rate, with the burst scaled alike (a full
        bucket of the configured burst would flush out at once after a signal)."""
        e = self.rate_at(now)
        if e >= configured.per_second:
            return configured
        burst = max(1, math.floor(configured.burst * e / configured.per_second))
        return Rate(e, burst)


MAX_WINDOWS = 16
MAX_WINDOW_LIMIT = 1_000_000_000_000
MAX_WINDOW_SECONDS = 366 * 86_400.0


@dataclass(frozen=True, slots=True)
class RateWindow:
    """A quota: at most ``limit`` dispatches in each window of ``period`` seconds, windows
    fixed and aligned to the Unix epoch (a day's starts at 00:00 UTC)."""

    limit: int
    period: float

    @staticmethod
    def of(limit: int, period: float, what: str = "windows") -> RateWindow:
        if not 1 <= limit <= MAX_WINDOW_LIMIT:
            raise InvalidArgument(
                f"{what}.limit must be 1 to {MAX_WINDOW_LIMIT:,}, got {limit}",
                field=f"{what}.limit",
            )
        if not (math.isfinite(period) and 1.0 <= period <= MAX_WINDOW_SECONDS):
            raise InvalidArgument(
                f"{what}.period must be 1 s to 366 days, got {period:g} s", field=f"{what}.period"
            )
        return RateWindow(limit, period)

    @staticmethod
    def several(windows: list[RateWindow], what: str = "windows") -> tuple[RateWindow, ...]:
        """A queue's windows: at most MAX_WINDOWS, one per period, in period order."""
        if len(windows) > MAX_WINDOWS:
            raise InvalidArgument(
                f"{what} has {len(windows)} windows; the limit is {MAX_WINDOWS}", field=what
            )
        periods = [w.period for w in windows]
        if len(set(periods)) != len(periods):
            raise InvalidArgument(f"{what} names a period twice", field=what)
        return tuple(sorted(windows, key=lambda w: w.period))


class WindowCounts:
    """Dispatches counted per window of one queue; time is an argument. ``used`` is by
    period: (window start, count). Windows are fixed, so a count is exact and a restart
    that restores ``used`` grants nothing twice (includes/windows.lua does the same)."""

    __slots__ = ("used", "windows")

    def __init__(self, windows: tuple[RateWindow, ...]) -> None:
        self.windows = windows
        self.used: dict[float, tuple[float, int]] = {}

    @staticmethod
    def start_of(period: float, now: float) -> float:
        return math.floor(now / period) * period

    def count(self, w: RateWindow, now: float) -> int:
        start, n = self.used.get(w.period, (-1.0, 0))
        # Not ==: a start restored from a stored timestamp may differ in the last bits.
        return n if abs(start - self.start_of(w.period, now)) < 1e-6 else 0

    def ready(self, now: float) -> bool:
        return all(self.count(w, now) < w.limit for w in self.windows)

    def next_time(self, now: float) -> float:
        """When every exhausted window has ended (``now`` if none is)."""
        t = now
        for w in self.windows:
            if self.count(w, now) >= w.limit:
                t = max(t, self.start_of(w.period, now) + w.period)
        return t

    def take(self, now: float) -> None:
        for w in self.windows:
            self.used[w.period] = (self.start_of(w.period, now), self.count(w, now) + 1)

    def reconfigure(self, windows: tuple[RateWindow, ...]) -> None:
        """Counts of the periods that stay are kept (a new limit applies to them)."""
        self.windows = windows
        keep = {w.period for w in windows}
        self.used = {p: u for p, u in self.used.items() if p in keep}

    def usage(self, now: float) -> tuple[tuple[float, float, int], ...]:
        """(period, window start, count) of each window at ``now``: what is stored."""
        return tuple(
            (w.period, self.start_of(w.period, now), self.count(w, now)) for w in self.windows
        )

    def restore(self, usage: tuple[tuple[float, float, int], ...]) -> None:
        for period, start, n in usage:
            if any(w.period == period for w in self.windows):
                self.used[period] = (start, n)
