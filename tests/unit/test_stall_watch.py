"""A stall of the process is noticed and handed to the leases (server/dispatchd/stall.py,
Engine.extend_leases)."""

from __future__ import annotations

import random

from dispatchd.engine import Engine, NewJob
from dispatchd.stall import StallWatch


class Monotonic:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_gap_longer_than_the_threshold_is_a_stall() -> None:
    mono, stalls = Monotonic(), list[float]()
    watch = StallWatch(stalls.append, mono, every=0.25, threshold=0.5)
    mono.t += 0.3
    watch.check()
    mono.t += 4.25
    watch.check()
    watch.check()  # no time passed since: nothing more
    assert stalls == [4.0]


def test_extended_leases_survive_the_stall_and_expire_later() -> None:
    engine = Engine(rng=random.Random(1))
    engine.update_queue("q", lease_seconds=2.0, create=True, now=0.0)
    engine.submit([NewJob("q")], 0.0)
    worker = engine.connect("w", ["q"], 1, 0.0)
    engine.dispatch(0.0)
    engine.extend_leases(4.0)
    engine.tick(5.0)  # past the old deadline (2.0), before the new one (6.0)
    assert len(worker.leases) == 1
    engine.tick(6.5)
    assert worker.leases == {}
