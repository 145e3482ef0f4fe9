"""The pump's wake-up delay never asks the loop for less than a millisecond."""

from __future__ import annotations

import pytest

from dispatchd.embedded.pump import wake_delay


@pytest.mark.parametrize(
    ("due", "now", "delay"),
    [
        (10.0004, 10.0, 0.001),  # under a millisecond: rounded up, never 0
        (10.0, 10.0, 0.001),
        (9.0, 10.0, 0.001),  # overdue: still not a busy loop
        (10.0021, 10.0, 0.003),
        (12.5, 10.0, 2.5),
    ],
)
def test_wake_delay(due: float, now: float, delay: float) -> None:
    assert wake_delay(due, now) == pytest.approx(delay)
