"""The dashboard's sparkline rings, fed by a real engine with times given as numbers."""

from __future__ import annotations

import random

import pytest

from dispatchd.config import ConfigError, load
from dispatchd.engine import Engine, JobFailure, NewJob
from dispatchd.web.sparks import HEIGHT, WIDTH, spark_path, throughput_cell, wait_cell
from dispatchd.web.trends import FleetChart, Trends


@pytest.fixture
def trends() -> Trends:
    return Trends(bucket_seconds=10.0, buckets=6, max_queues=2)


@pytest.fixture
def engine(trends: Trends) -> Engine:
    return Engine(observer=trends, rng=random.Random(0))


def _run(engine: Engine, queue: str, submit: float, start: float, end: float, ok: bool) -> None:
    """One job through submit, dispatch and result at the given times."""
    [job] = engine.submit([NewJob(queue)], submit)
    worker = engine.connect("w", [queue], 1, start)
    [(_, [lease])] = engine.dispatch(start)
    engine.complete(worker, job.id, lease.lease_id, b"" if ok else JobFailure("x"), end)
    engine.disconnect(worker, end)


def test_throughput_and_wait_land_in_the_buckets_of_their_events(
    engine: Engine, trends: Trends
) -> None:
    _run(engine, "q", submit=0.0, start=2.0, end=3.0, ok=True)  # wait 2 s, bucket 0
    _run(engine, "q", submit=1.0, start=5.0, end=12.0, ok=False)  # wait 4 s; ends bucket 1
    _run(engine, "q", submit=20.0, start=21.0, end=22.0, ok=True)  # bucket 2
    trend = trends.trend("q", now=35.0)  # bucket 3 is still filling: not shown
    assert trend is not None
    assert trend.bucket_seconds == 10.0
    # the 5 complete buckets before bucket 3, oldest first: -2, -1, 0, 1, 2
    assert trend.throughput == [0.0, 0.0, 0.1, 0.1, 0.1]
    assert trend.wait == [None, None, 3.0, None, 1.0]


def test_old_buckets_fall_out_of_the_ring(engine: Engine, trends: Trends) -> None:
    _run(engine, "q", submit=0.0, start=1.0, end=2.0, ok=True)
    _run(engine, "q", submit=60.0, start=61.0, end=62.0, ok=True)  # same slot as bucket 0
    trend = trends.trend("q", now=75.0)
    assert trend is not None
    assert trend.throughput == [0.0, 0.0, 0.0, 0.0, 0.1]
    later = trends.trend("q", now=1000.0)
    assert later is not None
    assert later.throughput == [0.0] * 5
    assert later.wait == [None] * 5


def test_cancelled_jobs_are_not_throughput_and_retries_are_not_waiting(
    engine: Engine, trends: Trends
) -> None:
    [job] = engine.submit([NewJob("q")], 0.0)
    engine.cancel(job.id, 1.0)
    trend = trends.trend("q", now=15.0)
    assert trend is not None
    assert trend.throughput[-1] == 0.0
    assert trend.wait[-1] is None


def test_queues_past_the_cap_get_no_ring(engine: Engine, trends: Trends) -> None:
    for name in ("a", "b", "c"):
        _run(engine, name, submit=0.0, start=1.0, end=2.0, ok=True)
    assert trends.trend("a", 15.0) is not None
    assert trends.trend("b", 15.0) is not None
    assert trends.trend("c", 15.0) is None  # bounded memory: "-" on the page
    assert throughput_cell(None) == "-"
    assert wait_cell(None) == "-"


def test_a_fresh_queue_under_the_cap_shows_an_empty_trend(trends: Trends) -> None:
    trend = trends.trend("new", 15.0)
    assert trend is not None
    assert trend.throughput == [0.0] * 5


def test_bad_ring_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="bucket_seconds"):
        Trends(bucket_seconds=0)


def test_spark_path_scales_to_the_top_and_breaks_on_gaps() -> None:
    assert spark_path([0.0, 2.0, None, 1.0, 1.0]) == (
        f"M0.0 {HEIGHT - 1:.1f} L30.0 1.0 M90.0 12.0 L{WIDTH:.1f} 12.0"
    )
    assert spark_path([None, None]) == ""
    assert spark_path([0.0, 0.0]) == f"M0.0 {HEIGHT - 1:.1f} L{WIDTH:.1f} {HEIGHT - 1:.1f}"


def test_cells_show_the_latest_figure(engine: Engine, trends: Trends) -> None:
    _run(engine, "q", submit=0.0, start=0.25, end=3.0, ok=True)
    trend = trends.trend("q", now=15.0)
    assert "<span class=latest>0.1/s</span>" in throughput_cell(trend)
    assert "<span class=latest>250 ms</span>" in wait_cell(trend)
    assert "jobs finished per second, last 50 s" in throughput_cell(trend)


def test_dashboard_bucket_flag_env_and_bounds() -> None:
    assert load([], env={}).dashboard_bucket == 5.0
    assert load([], env={"DISPATCHD_DASHBOARD_BUCKET": "0.5"}).dashboard_bucket == 0.5
    assert load(["--dashboard-bucket", "10"], env={}).dashboard_bucket == 10.0
    for bad in ("0", "0.05", "61", "nan"):
        with pytest.raises(ConfigError, match="--dashboard-bucket must be"):
            load(["--dashboard-bucket", bad], env={})


def test_the_fleet_chart_sums_what_each_replica_ran_since_its_last_reading() -> None:
    chart = FleetChart(bucket_seconds=10.0, buckets=4)
    chart.sample(1.0, [("a", (100, 90, 5))])  # a's first reading: a baseline, not a burst
    chart.sample(2.0, [("a", (110, 95, 6)), ("b", (50, 50, 0))])
    chart.sample(12.0, [("a", (120, 100, 6)), ("b", (60, 55, 1))])
    rates = chart.rates(25.0)  # the complete buckets 0-10 and 10-20 (and one before)
    assert rates.dispatched == [0.0, 1.0, 2.0]
    assert rates.succeeded == [0.0, 0.5, 1.0]
    assert rates.failed == [0.0, 0.1, 0.1]


def test_a_replica_that_went_away_or_restarted_never_makes_a_rate_negative() -> None:
    chart = FleetChart(bucket_seconds=10.0, buckets=4)
    chart.sample(1.0, [("a", (100, 100, 0)), ("b", (1000, 1000, 0))])
    chart.sample(2.0, [("a", (105, 105, 0))])  # b stopped: its counts leave the sum
    chart.sample(3.0, [("a", (104, 104, 0)), ("b", (3, 3, 0))])  # lower: adds nothing
    chart.sample(4.0, [("a", (106, 106, 0)), ("b", (5, 5, 0))])  # b back: from its new base
    rates = chart.rates(15.0)
    assert rates.dispatched[-1] == pytest.approx((5 + 2 + 2) / 10)
    assert min(rates.dispatched + rates.succeeded + rates.failed) >= 0
