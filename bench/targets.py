"""A figure's target, and how figures are printed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Target:
    key: str
    label: str
    op: str  # ">=", "<=", "<", or "~" (within ``bound`` of 1: a ratio to a set value)
    bound: float

    def met(self, value: float) -> bool:
        if self.op == ">=":
            return value >= self.bound
        if self.op == "<=":
            return value <= self.bound
        if self.op == "~":
            return abs(value - 1.0) <= self.bound
        return value < self.bound

    def describe(self) -> str:
        if self.op == "~":
            return f"1 ± {fmt(self.bound)}"
        return f"{self.op} {fmt(self.bound)}"


def fmt(value: float) -> str:
    if value != value:  # NaN: the phase did not run
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"
