"""The benchmark's slot turnaround probe (observability/turnaround.py): each written
delivery takes the oldest freed-slot stamps, and the metrics endpoint serves and forgets
the samples only while the probe is on."""

from __future__ import annotations

import json

import pytest

from dispatchd.observability import turnaround
from dispatchd.observability.http import MetricsServer


class _Clock:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


@pytest.fixture
def probe() -> tuple[turnaround.TurnaroundProbe, _Clock]:
    clock = _Clock()
    return turnaround.TurnaroundProbe(clock), clock


def _samples(p: turnaround.TurnaroundProbe) -> list[float]:
    us: list[float] = json.loads(p.take())["us"]
    return us


def test_each_delivery_takes_the_oldest_freed_slots(
    probe: tuple[turnaround.TurnaroundProbe, _Clock],
) -> None:
    p, clock = probe
    p.delivered(3)  # the first fill: no slot was freed, nothing to pair
    p.results_read(2)  # at 0
    clock.ns = 1_000
    p.results_read(1)  # at 1 us
    clock.ns = 5_000
    p.delivered(2)  # fills the two slots freed at 0
    clock.ns = 9_000
    p.delivered(4)  # fills the one freed at 1 us; the other three were not freed ones
    assert _samples(p) == [5.0, 5.0, 8.0]
    assert _samples(p) == []  # taken and forgotten


def test_take_drops_stamps_not_yet_followed_by_a_delivery(
    probe: tuple[turnaround.TurnaroundProbe, _Clock],
) -> None:
    p, clock = probe
    p.results_read(4)
    assert _samples(p) == []
    clock.ns = 2_000
    p.delivered(1)
    assert _samples(p) == []


async def _page() -> bytes:
    return b""


async def test_the_metrics_endpoint_serves_it_only_while_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = MetricsServer(_page, "127.0.0.1", 0)
    monkeypatch.setattr(turnaround, "PROBE", None)
    off = await server.answer(turnaround.PATH, "GET")
    assert off.startswith(b"HTTP/1.1 404")
    on = turnaround.TurnaroundProbe()
    monkeypatch.setattr(turnaround, "PROBE", on)
    on.results_read(1)
    on.delivered(1)
    answer = await server.answer(turnaround.PATH, "GET")
    assert answer.startswith(b"HTTP/1.1 200")
    assert len(json.loads(answer.partition(b"\r\n\r\n")[2])["us"]) == 1
