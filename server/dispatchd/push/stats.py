"""Counts of HTTP push outcomes and call latency, per queue.

This is the seam for metrics: a collector reads ``HttpPusher.stats`` (queue name ->
TargetStats) when it is scraped and turns the counts into counters and a histogram;
the pusher never imports a metrics library.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

# Upper bounds in seconds (Prometheus "le" style, +Inf implied), covering 5 ms to the
# 10-minute timeout cap.
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    600.0,
)


@dataclass(slots=True)
class TargetStats:
    """Everything since the server started, for one queue's target.

    ``outcomes``: attempts by kind: '1xx'..'5xx' by response status, 'timeout',
    'connection' (refused, reset, TLS, protocol errors), 'invalid' (a job header HTTP
    cannot carry) and 'forbidden' (the host leads only to addresses the server may not
    call). ``stale``: results the engine refused because the lease had already
    ended (drain grace ran out, a stalled loop let it expire). ``truncated``: success
    bodies cut to the payload cap. Latency counts only attempts that were sent.
    """

    outcomes: Counter[str] = field(default_factory=Counter)
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    latency_count: int = 0
    stale: int = 0
    truncated: int = 0
    in_flight: int = 0

    @property
    def latency_bounds(self) -> tuple[float, ...]:
        return LATENCY_BUCKETS

    def record(self, kind: str, latency: float | None, truncated: bool, stale: bool) -> None:
        self.outcomes[kind] += 1
        if latency is not None:
            self.latency_counts[bisect_left(LATENCY_BUCKETS, latency)] += 1
            self.latency_sum += latency
            self.latency_count += 1
        self.truncated += truncated
        self.stale += stale

    def cumulative_buckets(self) -> list[tuple[float, int]]:
        """(upper bound, attempts at most that slow), ending with (inf, count)."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), self.latency_counts, strict=True):
            total += n
            out.append((bound, total))
        return out
