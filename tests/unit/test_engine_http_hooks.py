"""The engine's part of HTTP push: a failure's retry_after floor, HTTP status and latency
on attempts, and http_target as a validated, observed queue setting."""

from __future__ import annotations

import math

import pytest

from dispatchd.engine import (
    Engine,
    EngineObserver,
    FinishedJob,
    HttpTarget,
    InvalidArgument,
    JobFailure,
    JobState,
    LeaseRecord,
    QueueSettings,
    RetryPolicy,
)

from .engine_helpers import Add, Connect, Pump

POLICY = RetryPolicy.of(5, 1.0, 10.0, 2.0, 0.0)


def only(leases: list[LeaseRecord]) -> LeaseRecord:
    assert len(leases) == 1, leases
    return leases[0]


def fail(engine: Engine, lease: LeaseRecord, now: float, failure: JobFailure) -> None:
    assert engine.complete(lease.worker, lease.job.id, lease.lease_id, failure, now) is None


def test_retry_after_holds_the_next_attempt_back(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    connect()
    job = add(retry_policy=POLICY)
    fail(engine, only(pump(0.0)), 2.0, JobFailure("busy", True, "HTTP_503", retry_after=30.0))
    assert (job.state, job.not_before) == (JobState.SCHEDULED, 32.0)  # not 2 + 1 s backoff
    assert pump(31.9) == []
    assert only(pump(32.0)).job is job


def test_retry_after_shorter_than_the_backoff_changes_nothing(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    connect()
    job = add(retry_policy=POLICY)
    fail(engine, only(pump(0.0)), 0.0, JobFailure("busy", True, "", retry_after=0.2))
    assert job.not_before == 1.0


@pytest.mark.parametrize(
    ("retry_after", "due"),
    [(-5.0, 1.0), (math.nan, 1.0), (math.inf, 86_400.0), (1e9, 86_400.0)],
)
def test_retry_after_is_made_safe(
    engine: Engine, add: Add, connect: Connect, pump: Pump, retry_after: float, due: float
) -> None:
    connect()
    job = add(retry_policy=POLICY)
    fail(engine, only(pump(0.0)), 0.0, JobFailure("x", True, "", retry_after=retry_after))
    assert job.not_before == due


def test_retry_after_never_adds_an_attempt(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    connect()
    job = add(retry_policy=RetryPolicy.of(1, 1.0, 1.0, 1.0, 0.0))
    fail(engine, only(pump(0.0)), 0.0, JobFailure("busy", True, "", retry_after=1.0))
    assert engine.get_job(job.id).state is JobState.DEAD


def test_retry_after_without_a_policy_fails_the_job(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    connect()
    job = add()
    fail(engine, only(pump(0.0)), 0.0, JobFailure("busy", True, "", retry_after=1.0))
    assert engine.get_job(job.id).state is JobState.FAILED


def test_retry_after_past_the_expiry_expires_the_job(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    connect()
    job = add(retry_policy=POLICY, expire_at=20.0)
    fail(engine, only(pump(0.0)), 0.0, JobFailure("busy", True, "", retry_after=60.0))
    assert engine.get_job(job.id).state is JobState.EXPIRED


def test_http_status_and_latency_are_kept_on_each_attempt(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    connect()
    job = add(retry_policy=POLICY)
    lease = only(pump(0.0))
    failure = JobFailure("HTTP 500", True, "HTTP_500")
    assert (
        engine.complete(
            lease.worker, job.id, lease.lease_id, failure, 0.5, http_status=500, latency=0.25
        )
        is None
    )
    lease = only(pump(10.0))
    assert engine.complete(lease.worker, job.id, lease.lease_id, b"ok", 10.1, latency=0.1) is None
    done = engine.get_job(job.id)
    assert isinstance(done, FinishedJob)
    assert [(a.http_status, a.latency) for a in done.attempts] == [(500, 0.25), (0, 0.1)]
    assert done.attempts[0].error == failure


def test_packed_finished_jobs_keep_the_http_fields(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    connect()
    job = add()
    lease = only(pump(0.0))
    failure = JobFailure("busy", True, "HTTP_429", retry_after=3.0)
    engine.complete(lease.worker, job.id, lease.lease_id, failure, 1.0, http_status=429, latency=1)
    done = engine.get_job(job.id)
    assert isinstance(done, FinishedJob)
    again = FinishedJob.unpack(done.pack())
    assert again == done
    assert (again.attempts[0].http_status, again.attempts[0].error) == (429, failure)


class Settings(EngineObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, QueueSettings]] = []

    def queue_changed(self, name: str, settings: QueueSettings) -> None:
        self.seen.append((name, settings))


def test_http_target_is_a_queue_setting_observers_see() -> None:
    watcher = Settings()
    engine = Engine(observer=watcher)
    target = HttpTarget.of("https://api.example.com/hook", "put", {"X-Key": "k"}, 5.0, [201])
    view = engine.update_queue("q", http_target=target, create=True)
    assert view.settings.http_target == target
    assert watcher.seen[-1] == ("q", view.settings)
    engine.update_queue("q", http_target=None)
    assert engine.get_queue("q").settings.http_target is None
    with pytest.raises(InvalidArgument, match="http_target has the wrong type"):
        engine.update_queue("q", http_target="http://x")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": ""}, "url is empty"),
        ({"url": "file:///etc/passwd"}, "http:// or https://"),
        ({"url": "http://h:99999/"}, "not a valid URL"),
        ({"url": "http://h/a b"}, "whitespace"),
        ({"url": "http://h/" + "a" * 2048}, "longer than 2048"),
        ({"method": "CONNECT"}, "method must be one of"),
        ({"timeout": 0.0}, "timeout must be"),
        ({"timeout": math.nan}, "timeout must be"),
        ({"success_codes": [99]}, "100-599"),
        ({"headers": {"bad name": "x"}}, "not a valid header name"),
        ({"headers": {"X-Dispatchd-Job-Id": "x"}}, "set by the server"),
        ({"headers": {"X-A": "a\r\nInjected: 1"}}, "CR, LF or NUL"),
        ({"signing_secret": "s" * 1025}, "longer than 1024 bytes"),
    ],
)
def test_bad_targets_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"url": "http://h/"} | kwargs
    with pytest.raises(InvalidArgument, match=message):
        HttpTarget.of(**args)  # type: ignore[arg-type]


def test_target_defaults_and_success_codes() -> None:
    t = HttpTarget.of("http://h/")
    assert (t.method, t.timeout, t.success_codes, t.signing_secret) == ("POST", 30.0, (), "")
    assert t.is_success(200)
    assert t.is_success(299)
    assert not t.is_success(300)
    listed = HttpTarget.of("http://h/", success_codes=[204, 202, 204, 302])
    assert listed.success_codes == (202, 204, 302)
    assert listed.is_success(302)
    assert not listed.is_success(200)
