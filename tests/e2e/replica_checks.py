"""Checks over worker-side timestamps: how many ran at once, and how fast they started."""

from __future__ import annotations

from collections.abc import Sequence


def most_at_once(runs: Sequence[tuple[float, float]]) -> int:
    """The largest number of (start, end) intervals open at one instant; an end at the
    same instant as a start counts first (the slot was free)."""
    events = sorted([(start, 1) for start, _ in runs] + [(end, -1) for _, end in runs])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def worst_burst(starts: Sequence[float], per_second: float) -> float:
    """max over windows [t_i, t_j] of (jobs started in it) - per_second * (t_j - t_i):
    a token bucket of that rate lets this be at most its burst."""
    ordered = sorted(starts)
    best_prefix = float("-inf")  # max over i <= j of per_second * t_i - i
    worst = 0.0
    for j, t in enumerate(ordered):
        best_prefix = max(best_prefix, per_second * t - j)
        worst = max(worst, (j + 1) - per_second * t + best_prefix)
    return worst
