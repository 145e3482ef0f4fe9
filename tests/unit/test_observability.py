"""The pure parts of observability: histogram buckets, label folding, the metrics observer
driven by a real engine with numbers for time, OTEL_* parsing and the log formats."""

from __future__ import annotations

import io
import json
import logging
import os
import random
import subprocess
import sys
import time

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from dispatchd.config import Config
from dispatchd.engine import Engine, JobFailure, NewJob, ObserverChain
from dispatchd.engine.policies import KeyLimits, RetryPolicy
from dispatchd.observability import Observability, TracingConfigError, provider_from_env
from dispatchd.observability.collector import DispatchdCollector, Gauges
from dispatchd.observability.exposition import Family, render
from dispatchd.observability.logs import JsonFormatter, LifecycleLog, StateLog, TextFormatter
from dispatchd.observability.metrics import (
    GrpcStats,
    Histogram,
    MetricsObserver,
    QueueLabels,
)
from dispatchd.observability.tracing import exporter_names
from tests.unit.engine_helpers import let_go


def test_histogram_buckets_are_le_and_cumulative() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        h.observe(v)
    assert h.cumulative() == [2, 4, 5]
    assert h.count == 5
    assert h.sum == pytest.approx(8.65)


def test_queue_labels_fold_past_the_cap_and_stay_stable() -> None:
    labels = QueueLabels(cap=2)
    assert [labels(q) for q in ("a", "b", "c", "a", "d")] == ["a", "b", "_other", "a", "_other"]
    assert labels("") == "_unknown"  # does not take a slot
    assert labels("c") == "_other"


def _engine(observer: MetricsObserver) -> Engine:
    engine = Engine(observer=ObserverChain([observer]), rng=random.Random(7))
    engine.update_queue("q", width=10, create=True)
    return engine


def test_observer_counts_a_job_life_with_engine_time() -> None:
    obs = MetricsObserver(QueueLabels(10), clock=lambda: 0.0)
    engine = _engine(obs)
    worker = engine.connect("w", ["q"], 10, now=0.0)
    engine.submit([NewJob("q", b"a"), NewJob("q", b"b")], now=100.0)
    ((_, leases),) = engine.dispatch(now=100.5)
    engine.complete(worker, leases[0].job.id, leases[0].lease_id, b"ok", now=102.5)
    engine.complete(worker, leases[1].job.id, leases[1].lease_id, JobFailure("x", False), 110.5)
    engine.complete(worker, leases[1].job.id, leases[1].lease_id, b"late", now=111.0)
    stats = obs.stats["q"]
    assert (stats.submitted, stats.dispatched, stats.stale_results) == (2, 2, 1)
    assert (stats.completed[3], stats.completed[4]) == (1, 1)  # SUCCEEDED, FAILED
    assert stats.wait.count == 2
    assert stats.wait.sum == pytest.approx(1.0)
    assert stats.run.count == 2
    assert stats.run.sum == pytest.approx(12.0)


def test_lease_expiry_counts_and_redispatch_does_not_add_a_wait() -> None:
    obs = MetricsObserver(QueueLabels(10), clock=lambda: 0.0)
    engine = _engine(obs)
    engine.update_queue("q", lease_seconds=5.0)
    w = engine.connect("w", ["q"], 10, now=0.0)
    engine.submit([NewJob("q")], now=0.0)
    engine.dispatch(now=1.0)
    engine.expire_leases(now=7.0)
    let_go(engine, w, 7.0)
    engine.dispatch(now=7.0)
    stats = obs.stats["q"]
    assert (stats.lease_expired, stats.dispatched, stats.wait.count) == (1, 2, 1)


def test_lost_attempts_have_no_run_time_and_delays_are_not_waiting() -> None:
    obs = MetricsObserver(QueueLabels(10), clock=lambda: 0.0)
    engine = _engine(obs)
    engine.update_queue("q", lease_seconds=5.0, retry_policy=RetryPolicy(max_attempts=2))
    worker = engine.connect("w", ["q"], 10, now=0.0)
    engine.submit([NewJob("q", not_before=50.0)], now=0.0)
    engine.tick(now=50.0)
    ((_, (_first,)),) = engine.dispatch(now=52.0)
    engine.expire_leases(now=60.0)  # lost: retried, but no result to time
    let_go(engine, worker, 60.0)
    stats = obs.stats["q"]
    assert (stats.retried, stats.run.count) == (1, 0)
    assert stats.wait.sum == pytest.approx(2.0)  # from the end of the delay, not submit
    engine.tick(now=70.0)
    ((_, (again,)),) = engine.dispatch(now=70.0)
    engine.complete(worker, again.job.id, again.lease_id, JobFailure("no"), now=73.0)
    assert stats.completed[8] == 1  # DEAD: attempts used up
    assert stats.run.count == 1
    assert stats.run.sum == pytest.approx(3.0)
    assert stats.wait.count == 1


def _gauges(engine: Engine, now: float = 0.0) -> Gauges:
    return Gauges(engine.queue_figures(now), engine.workers(), engine.draining, now=now)


def test_our_rendering_equals_prometheus_clients() -> None:
    obs = MetricsObserver(QueueLabels(10), clock=lambda: 0.0)
    engine = _engine(obs)
    worker = engine.connect("w", ["q"], 10, now=0.0)
    engine.submit([NewJob("q"), NewJob("q")], now=0.0)
    ((_, leases),) = engine.dispatch(now=0.25)
    engine.complete(worker, leases[0].job.id, leases[0].lease_id, b"ok", now=3.0)
    grpc_stats = GrpcStats()
    grpc_stats.record("svc", "Call", "OK", 0.002)
    collector = DispatchdCollector(lambda: _gauges(engine), obs, grpc_stats)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    def parsed(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    ours, theirs = collector.render(), generate_latest(registry).decode()
    assert parsed(ours) == parsed(theirs)
    assert len(parsed(ours)) > 80  # histograms with buckets included
    types = [line for line in ours.splitlines() if line.startswith("# TYPE")]
    assert types == [line for line in theirs.splitlines() if line.startswith("# TYPE")]


def test_label_values_are_escaped() -> None:
    family = Family("x", "gauge", "a\\b\nc", ("k",))
    family.add(['q"uo\\te\nd'], 1.5)
    (parsed,) = text_string_to_metric_families(render([family]))
    assert parsed.samples[0].labels == {"k": 'q"uo\\te\nd'}
    assert parsed.documentation == "a\\b\nc"


def test_collector_builds_families_from_engine_state() -> None:
    obs = MetricsObserver(QueueLabels(10), clock=lambda: 0.0)
    engine = _engine(obs)
    engine.submit([NewJob("q")], now=0.0)
    engine.pause("q")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DispatchdCollector(lambda: _gauges(engine), obs, GrpcStats()))
    assert registry.get_sample_value("dispatchd_jobs_pending", {"queue": "q"}) == 1
    assert registry.get_sample_value("dispatchd_queue_paused", {"queue": "q"}) == 1
    assert registry.get_sample_value("dispatchd_jobs_submitted_total", {"queue": "q"}) == 1
    assert registry.get_sample_value("dispatchd_workers_connected") == 0


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ["otlp", "console"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_exporters_follow_otel_variables_and_default_to_off(
    env: dict[str, str], names: list[str]
) -> None:
    assert exporter_names(env) == names


def test_unknown_exporter_or_protocol_is_an_actionable_error() -> None:
    with pytest.raises(TracingConfigError, match=r"jaeger.*use otlp, console, none"):
        provider_from_env({"OTEL_TRACES_EXPORTER": "jaeger"})
    with pytest.raises(TracingConfigError, match="grpc or http/protobuf"):
        provider_from_env({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "x"})


def test_no_otel_variables_means_no_provider() -> None:
    assert provider_from_env({}) is None


PROBE = """
import os
from dispatchd.observability import provider_from_env
provider = provider_from_env(os.environ)
with provider.get_tracer("t").start_as_current_span("probe"):
    pass
provider.shutdown()
"""


def test_console_exporter_prints_spans_of_the_dispatchd_service() -> None:
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "console"}
    env.pop("OTEL_SERVICE_NAME", None)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    span = json.loads(out.stdout)
    assert span["name"] == "probe"
    assert span["resource"]["attributes"]["service.name"] == "dispatchd"


def test_service_name_from_the_environment_wins() -> None:
    provider = provider_from_env({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "mine"})
    assert provider is not None
    provider.shutdown()
    assert "OTEL_SERVICE_NAME" not in provider.resource.attributes


def _record(msg: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {"name": "dispatchd.jobs", "levelno": level, "levelname": logging.getLevelName(level)}
    )
    record.msg = msg
    record.__dict__.update(extra)
    return record


def test_json_formatter_puts_extra_fields_beside_the_message() -> None:
    line = JsonFormatter().format(_record("lease expired", queue="q", job_id="j1"))
    doc = json.loads(line)
    assert doc["msg"] == "lease expired"
    assert (doc["level"], doc["logger"], doc["queue"], doc["job_id"]) == (
        "info",
        "dispatchd.jobs",
        "q",
        "j1",
    )
    assert doc["time"].endswith("+00:00")


def test_text_formatter_appends_key_value_fields() -> None:
    line = TextFormatter().format(_record("worker gone", worker_id="w", held=2))
    assert line.endswith("INFO dispatchd.jobs: worker gone worker_id=w held=2")


FORGED_LINE = "2026-01-01 00:00:00,000 INFO dispatchd: forged"


def test_text_formatter_escapes_control_characters_so_no_line_can_be_forged() -> None:
    record = _record(
        f"worker w\r\n{FORGED_LINE} connected",
        worker_id=f"w\n{FORGED_LINE}",
        reason="a b=c",
        code='q"\x1b[31m',
    )
    record.exc_info = (ValueError, ValueError(f"bad\n{FORGED_LINE}"), None)
    text = TextFormatter().format(record)
    head, *rest = text.split("\n")
    assert "worker w\\r\\n2026-01-01" in head
    assert f' worker_id="w\\n{FORGED_LINE}"' in head
    assert ' reason="a b=c"' in head  # a value cannot pose as another field
    assert ' code="q\\"\\x1b[31m"' in head
    assert rest  # the traceback follows, every line of it indented
    assert all(line.startswith("    ") for line in rest)
    assert not any(line.startswith(FORGED_LINE) for line in text.splitlines())
    assert "\x1b" not in text


def test_json_formatter_keeps_one_record_on_one_line() -> None:
    line = JsonFormatter().format(_record(f"m\r\n{FORGED_LINE}", worker_id=f"w\n{FORGED_LINE}"))
    assert "\n" not in line
    assert "\r" not in line
    assert json.loads(line)["worker_id"] == f"w\n{FORGED_LINE}"


def test_lease_expiry_is_logged_and_healthy_jobs_are_not() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("dispatchd.jobs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        engine = Engine(observer=ObserverChain([LifecycleLog()]), rng=random.Random(1))
        worker = engine.connect("w", ["q"], 10, now=0.0)
        engine.submit([NewJob("q"), NewJob("q")], now=0.0)
        ((_, leases),) = engine.dispatch(now=0.0)
        for lease in leases:
            engine.complete(worker, lease.job.id, lease.lease_id, b"ok", now=1.0)
        assert stream.getvalue() == ""  # nothing per healthy job
        engine.update_queue("q", lease_seconds=1.0)
        engine.submit([NewJob("q")], now=2.0)
        ((_, (lease,)),) = engine.dispatch(now=2.0)
        engine.expire_leases(now=60.0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    (line,) = stream.getvalue().splitlines()
    doc = json.loads(line)
    assert (doc["queue"], doc["job_id"], doc["worker_id"]) == ("q", lease.job.id, "w")


def test_state_log_is_installed_only_at_debug_and_names_the_job() -> None:
    logger = logging.getLogger("dispatchd")
    config = Config(metrics_listen="0")
    Engine(rng=random.Random(3))
    assert not any(isinstance(o, StateLog) for o in Observability(config, time.time).observers)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        observers = Observability(config, time.time).observers
        assert any(isinstance(o, StateLog) for o in observers)
        debug_engine = Engine(observer=ObserverChain(observers), rng=random.Random(3))
        (job,) = debug_engine.submit([NewJob("q")], now=0.0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert f"submitted queue=q job_id={job.id}" in stream.getvalue()


def test_submit_refusals_count_each_job_under_its_queue_by_reason() -> None:
    obs = MetricsObserver(QueueLabels(10), clock=lambda: 0.0)
    obs.submit_refused(["a", "a", "b"], "DRAINING")
    obs.submit_refused(["a"], "QUEUE_FULL")
    obs.submit_refused(["a"], "INVALID_ARGUMENT")  # a malformed request: not a refusal
    assert obs.stats["a"].refused == {"draining": 2, "max_pending": 1}
    assert obs.stats["b"].refused == {"draining": 1}


def test_held_back_jobs_by_reason_from_the_engine() -> None:
    obs = MetricsObserver(QueueLabels(10), clock=lambda: 0.0)
    engine = _engine(obs)
    engine.update_queue("k", width=10, key_limits=KeyLimits.of(1, 0.0, 0), create=True, now=0.0)
    engine.update_queue("p", width=10, paused=True, create=True, now=0.0)
    engine.connect("w", ["k"], 10, now=0.0)
    engine.submit([NewJob("k", fairness_key="a")] * 3, now=0.0)
    engine.submit([NewJob("p", ordering_key="o")] * 2, now=0.0)
    engine.dispatch(now=0.0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DispatchdCollector(lambda: _gauges(engine), obs, GrpcStats()))

    def held(queue: str, reason: str) -> float | None:
        return registry.get_sample_value(
            "dispatchd_jobs_held_back", {"queue": queue, "reason": reason}
        )

    assert held("k", "key_limit") == 2
    assert held("k", "paused") == held("k", "no_credit") == 0
    assert held("p", "paused") == 1  # the key's head; the other waits behind it
    assert held("p", "ordering_key") == 1
