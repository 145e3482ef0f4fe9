"""The Worker's heartbeat schedule, driven with numbers: the welcome's interval, then the
server's WorkerSettings changing it."""

from __future__ import annotations

from dispatchd_client._session import HeartbeatSchedule


def test_beats_follow_the_interval() -> None:
    s = HeartbeatSchedule(10.0, now=100.0)
    assert s.due == 110.0
    s.beat(110.2)
    assert s.due == 120.2


def test_a_shorter_interval_moves_the_pending_beat_at_once() -> None:
    s = HeartbeatSchedule(10.0, now=100.0)
    assert s.change(0.4)
    assert s.due == 100.4  # counted from the last beat: may already be past, then beat now
    s.beat(100.5)
    assert s.due == 100.9


def test_a_longer_interval_applies_after_the_next_beat() -> None:
    s = HeartbeatSchedule(1.0, now=100.0)
    assert not s.change(5.0)
    assert s.due == 101.0  # the beat already planned stays: the old leases still need it
    s.beat(101.0)
    assert s.due == 106.0


def test_shorter_then_longer_keeps_the_earlier_beat() -> None:
    s = HeartbeatSchedule(10.0, now=0.0)
    assert s.change(1.0)
    assert not s.change(3.0)
    assert s.due == 1.0
    s.beat(1.0)
    assert s.due == 4.0
