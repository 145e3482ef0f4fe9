"""Retries: backoff, attempts history, dead letters, lease expiry, RetryJob, PurgeJobs."""

from __future__ import annotations

import math
import random

import pytest

from dispatchd.engine import (
    AttemptRecord,
    Engine,
    EngineObserver,
    FailedPrecondition,
    FinishedJob,
    InvalidArgument,
    JobFailure,
    JobRecord,
    JobState,
    LeaseRecord,
    NewJob,
    NotFound,
    RetryPolicy,
    Unavailable,
)

from .engine_helpers import Add, Connect, Pump, ok

POLICY = RetryPolicy.of(5, 1.0, 10.0, 3.0, 0.0)


def fail(
    engine: Engine, lease: LeaseRecord, now: float, retryable: bool = True, message: str = "boom"
) -> JobFailure:
    failure = JobFailure(message, retryable, "E")
    assert engine.complete(lease.worker, lease.job.id, lease.lease_id, failure, now) is None
    return failure


def only(leases: list[LeaseRecord]) -> LeaseRecord:
    assert len(leases) == 1, leases
    return leases[0]


def ids(jobs: list[JobRecord] | list[FinishedJob] | list[JobRecord | FinishedJob]) -> list[str]:
    return [j.id for j in jobs]


def listed(engine: Engine, state: JobState, queue: str = "q") -> list[str]:
    jobs, token = engine.list_jobs(queue, state, 1000, "")
    assert token == ""
    return [j.id for j in jobs]


class RetryLog(EngineObserver):
    def __init__(self) -> None:
        self.retrying: list[tuple[str, float]] = []
        self.requeued: list[tuple[str, str]] = []

    def job_retrying(self, job: JobRecord, due: float) -> None:
        self.retrying.append((job.id, due))

    def job_requeued(self, job: JobRecord, reason: str) -> None:
        self.requeued.append((job.id, reason))


@pytest.fixture
def log(engine: Engine) -> RetryLog:
    engine.observer = RetryLog()
    assert isinstance(engine.observer, RetryLog)
    return engine.observer


# ---- the policy value ---------------------------------------------------------------


def test_policy_defaults_fill_zero_fields() -> None:
    p = RetryPolicy.of(3, 2.0, 0.0, 0.0, 0.0)
    assert p == RetryPolicy(3, 2.0, 300.0, 2.0, 0.0)
    assert RetryPolicy.of(3, 500.0, 0.0, 0.0, 0.0).max_backoff == 500.0


@pytest.mark.parametrize(
    "args",
    [
        (0, 1.0, 10.0, 2.0, 0.0),
        (1001, 1.0, 10.0, 2.0, 0.0),
        (3, -1.0, 10.0, 2.0, 0.0),
        (3, 100_000.0, 0.0, 2.0, 0.0),
        (3, 5.0, 4.0, 2.0, 0.0),
        (3, 1.0, 100_000.0, 2.0, 0.0),
        (3, 1.0, 10.0, 0.5, 0.0),
        (3, 1.0, 10.0, 101.0, 0.0),
        (3, 1.0, 10.0, math.nan, 0.0),
        (3, 1.0, 10.0, 2.0, -0.1),
        (3, 1.0, 10.0, 2.0, 1.5),
        (3, 1.0, 10.0, 2.0, math.inf),
    ],
)
def test_policy_rejects_bad_values(args: tuple[int, float, float, float, float]) -> None:
    with pytest.raises(InvalidArgument):
        RetryPolicy.of(*args)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (RetryPolicy(10, 1.0, 10.0, 3.0, 0.0), [1.0, 3.0, 9.0, 10.0, 10.0]),
        (RetryPolicy(10, 0.5, 300.0, 2.0, 0.0), [0.5, 1.0, 2.0, 4.0, 8.0]),
        (RetryPolicy(10, 2.0, 300.0, 1.0, 0.0), [2.0] * 5),
        (RetryPolicy(10, 0.0, 300.0, 2.0, 0.0), [0.0] * 5),
    ],
)
def test_backoff_is_min_of_max_and_min_times_multiplier_power(
    policy: RetryPolicy, expected: list[float]
) -> None:
    rng = random.Random(0)
    assert [policy.backoff(n, rng) for n in range(1, 6)] == pytest.approx(expected)


def test_backoff_does_not_overflow() -> None:
    policy = RetryPolicy.of(1000, 86_400.0, 86_400.0, 100.0, 0.0)
    assert policy.backoff(1000, random.Random(0)) == 86_400.0


def test_backoff_jitter_stays_within_bounds_and_varies() -> None:
    policy = RetryPolicy.of(10, 4.0, 100.0, 2.0, 0.25)
    rng = random.Random(1)
    for attempt, base in [(1, 4.0), (2, 8.0), (3, 16.0), (10, 100.0)]:
        delays = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(base * 0.75 <= d <= base * 1.25 for d in delays)
        assert max(delays) - min(delays) > base * 0.25  # it really jitters


# ---- retryable errors -----------------------------------------------------------------


def test_retryable_error_schedules_the_next_attempt_with_exact_backoff(
    engine: Engine, add: Add, connect: Connect, pump: Pump, log: RetryLog
) -> None:
    """min(max_backoff, min_backoff * multiplier^(attempt-1)): 1, 3, 9, then 10 (capped)."""
    job = add(retry_policy=POLICY)
    connect(worker_id="w")
    now = 0.0
    for attempt, backoff in [(1, 1.0), (2, 3.0), (3, 9.0), (4, 10.0)]:
        lease = only(pump(now))
        assert job.attempt == attempt
        fail(engine, lease, now + 0.5)
        due = now + 0.5 + backoff
        assert job.state is JobState.SCHEDULED
        assert job.not_before == due
        assert log.retrying[-1] == (job.id, due)
        assert listed(engine, JobState.SCHEDULED) == [job.id]
        assert engine.get_queue("q").scheduled_count == 1
        assert engine.next_wakeup() == due
        assert pump(due - 0.01) == []  # not before it is due
        assert job.state is JobState.SCHEDULED
        engine.tick(due)
        assert engine.get_job(job.id).state is JobState.PENDING
        assert listed(engine, JobState.PENDING) == [job.id]
        now = due
    # The fifth attempt is the last one the policy allows.
    lease = only(pump(now))
    assert job.attempt == 5
    fail(engine, lease, now + 1.0)
    done = engine.get_job(job.id)
    assert done.state is JobState.DEAD
    assert len(log.retrying) == 4
    assert listed(engine, JobState.DEAD) == [job.id]


def test_jittered_retry_is_due_within_bounds(engine: Engine, connect: Connect, pump: Pump) -> None:
    policy = RetryPolicy.of(3, 10.0, 100.0, 2.0, 0.5)
    engine.update_queue("q", width=100, create=True)
    jobs = engine.submit([NewJob("q", retry_policy=policy)] * 50, 0.0)
    connect(credits=100)
    dues = []
    for lease in pump(0.0):
        fail(engine, lease, 1.0)
        assert lease.job.not_before is not None
        dues.append(lease.job.not_before)
    assert len(dues) == len(jobs) == 50
    assert all(1.0 + 5.0 <= d <= 1.0 + 15.0 for d in dues)
    assert len(set(dues)) > 10


def test_attempts_history_keeps_worker_times_and_errors(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    job = add(retry_policy=RetryPolicy.of(5, 1.0, 1.0, 1.0, 0.0))
    a = connect(worker_id="a", credits=1)
    b = connect(worker_id="b", credits=1)
    first = only(pump(0.0))
    e1 = fail(engine, first, 2.0, message="first")
    second = only(pump(3.0))
    e2 = fail(engine, second, 5.0, message="second")
    third = only(pump(6.0))
    ok(engine, third, 9.0, b"done")
    assert {first.worker.key, second.worker.key} == {a.key, b.key}  # round-robin workers
    done = engine.get_job(job.id)
    assert done.state is JobState.SUCCEEDED
    assert done.result == b"done"
    assert done.attempt == 3
    assert list(done.attempts) == [
        AttemptRecord(1, first.worker.worker_id, 0.0, 2.0, e1),
        AttemptRecord(2, second.worker.worker_id, 3.0, 5.0, e2),
        AttemptRecord(3, third.worker.worker_id, 6.0, 9.0, None),
    ]
    assert done.first_dispatch_time == 0.0
    assert done.dispatch_time == 6.0


def test_retried_job_goes_back_to_its_place_in_line(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    first = add(retry_policy=RetryPolicy.of(3, 1.0, 1.0, 1.0, 0.0))
    w = connect(credits=1)
    lease = only(pump(0.0))
    later = [add(now=0.5) for _ in range(3)]
    fail(engine, lease, 0.5)
    assert [only(pump(0.6)).job.id] == [later[0].id]
    ok(engine, w.leases[next(iter(w.leases))], 1.5)
    assert only(pump(1.5)).job is first  # due again at 1.5, older than the rest


# ---- dead letters -------------------------------------------------------------------


def test_non_retryable_error_is_dead_at_once(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    job = add(retry_policy=POLICY)
    connect()
    lease = only(pump(0.0))
    failure = fail(engine, lease, 1.0, retryable=False)
    done = engine.get_job(job.id)
    assert done.state is JobState.DEAD
    assert done.error == failure
    assert [a.error for a in done.attempts] == [failure]
    assert engine.get_queue("q").scheduled_count == 0


def test_exhausted_attempts_end_dead_with_every_error(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    job = add(retry_policy=RetryPolicy.of(3, 0.0, 0.0, 1.0, 0.0))
    connect()
    errors = []
    for i in range(3):
        lease = only(pump(float(i)))
        errors.append(fail(engine, lease, float(i), message=f"e{i}"))
    done = engine.get_job(job.id)
    assert done.state is JobState.DEAD
    assert done.attempt == 3
    assert [a.error for a in done.attempts] == errors
    assert [a.number for a in done.attempts] == [1, 2, 3]
    assert done.error == errors[-1]


def test_one_attempt_policy_is_dead_not_failed(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    job = add(retry_policy=RetryPolicy.of(1, 1.0, 1.0, 1.0, 0.0))
    connect()
    fail(engine, only(pump(0.0)), 0.0)
    assert engine.get_job(job.id).state is JobState.DEAD


def test_oversized_result_under_a_policy_is_dead(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    job = add(retry_policy=POLICY)
    connect()
    ok(engine, only(pump(0.0)), 0.0, b"x" * (engine.limits.max_payload_bytes + 1))
    done = engine.get_job(job.id)
    assert done.state is JobState.DEAD
    assert done.error is not None
    assert done.error.code == "ResultTooLarge"


def test_without_any_policy_an_error_fails_the_job(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    job = add()
    connect()
    fail(engine, only(pump(0.0)), 1.0, retryable=True)
    done = engine.get_job(job.id)
    assert done.state is JobState.FAILED
    assert len(done.attempts) == 1
    assert listed(engine, JobState.FAILED) == [job.id]
    assert listed(engine, JobState.DEAD) == []


# ---- lost attempts ------------------------------------------------------------------


def test_lease_expiry_under_a_policy_is_a_failed_attempt_with_backoff(
    engine: Engine, add: Add, connect: Connect, pump: Pump, log: RetryLog
) -> None:
    engine.update_queue("q", lease_seconds=5.0, retry_policy=POLICY, create=True)
    job = add()
    w = connect(worker_id="w")
    only(pump(0.0))
    engine.tick(5.0)
    assert job.state is JobState.SCHEDULED
    assert job.not_before == 6.0
    assert w.leases == {}
    assert log.requeued == []
    assert log.retrying == [(job.id, 6.0)]
    [attempt] = job.attempts
    assert attempt.error is not None
    assert attempt.error.code == "LeaseExpired"
    assert attempt.worker_id == "w"
    assert attempt.dispatch_time == 0.0
    assert attempt.finish_time == 5.0


def test_lease_expiries_exhaust_the_policy(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    engine.update_queue(
        "q", lease_seconds=1.0, retry_policy=RetryPolicy.of(2, 0.0, 0.0, 1.0, 0.0), create=True
    )
    job = add()
    connect()
    only(pump(0.0))
    connect()  # takes the job the first worker's expired lease gives back
    assert pump(1.0)[0].job is job  # expired at 1.0 and due again at once
    pump(2.0)
    done = engine.get_job(job.id)
    assert done.state is JobState.DEAD
    assert [a.error.code for a in done.attempts if a.error] == ["LeaseExpired"] * 2


def test_lease_expiry_without_a_policy_requeues_at_once(
    engine: Engine, add: Add, connect: Connect, pump: Pump, log: RetryLog
) -> None:
    engine.update_queue("q", lease_seconds=5.0, create=True)
    job = add()
    connect()
    only(pump(0.0))
    connect()  # takes the job the first worker's expired lease gives back
    again = only(pump(5.0))
    assert again.job is job
    assert job.attempt == 2
    assert log.requeued == [(job.id, "lease expired")]
    assert log.retrying == []
    assert [a.error.code for a in job.attempts if a.error] == ["LeaseExpired"]


def test_worker_loss_under_a_policy_is_a_failed_attempt(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", retry_policy=POLICY, create=True)
    job = add()
    w = connect()
    only(pump(0.0))
    engine.disconnect(w, 2.0)
    assert job.state is JobState.SCHEDULED
    assert job.not_before == 3.0
    assert job.error is not None
    assert job.error.code == "WorkerLost"


def test_cancel_of_a_retry_in_backoff(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    job = add(retry_policy=POLICY)
    connect()
    fail(engine, only(pump(0.0)), 0.0)
    assert job.state is JobState.SCHEDULED
    _, worker = engine.cancel(job.id, 0.5)
    assert worker is None
    assert engine.get_job(job.id).state is JobState.CANCELLED
    assert engine.get_queue("q").scheduled_count == 0
    assert pump(5.0) == []


# ---- which policy ------------------------------------------------------------------


def test_job_policy_overrides_the_queue_policy(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", retry_policy=RetryPolicy.of(1, 100.0, 100.0, 1.0, 0.0), create=True)
    by_queue = add()
    by_job = add(retry_policy=RetryPolicy.of(3, 2.0, 2.0, 1.0, 0.0))
    connect()
    for lease in pump(0.0):
        fail(engine, lease, 1.0)
    assert engine.get_job(by_queue.id).state is JobState.DEAD  # one attempt allowed
    assert by_job.state is JobState.SCHEDULED
    assert by_job.not_before == 3.0  # the job's backoff, not the queue's 100 s


def test_queue_policy_changes_apply_to_the_next_failure(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", retry_policy=POLICY, create=True)
    job = add()
    connect()
    fail(engine, only(pump(0.0)), 0.0)
    assert job.state is JobState.SCHEDULED
    engine.update_queue("q", retry_policy=None)
    assert engine.get_queue("q").settings.retry_policy is None
    fail(engine, only(pump(1.0)), 1.0)
    assert engine.get_job(job.id).state is JobState.FAILED


def test_queue_policy_must_be_a_retry_policy(engine: Engine) -> None:
    engine.update_queue("q", retry_policy=POLICY, create=True)
    with pytest.raises(InvalidArgument):
        engine.update_queue("q", retry_policy=3)
    assert engine.get_queue("q").settings.retry_policy == POLICY


# ---- RetryJob ---------------------------------------------------------------------


def test_retry_of_a_dead_job_gives_a_fresh_budget(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    job = add(retry_policy=RetryPolicy.of(2, 1.0, 1.0, 1.0, 0.0))
    connect()
    fail(engine, only(pump(0.0)), 0.0)
    fail(engine, only(pump(1.0)), 1.0)
    assert engine.get_job(job.id).state is JobState.DEAD
    again = engine.retry(job.id, 2.0)
    assert again.id == job.id
    assert again.state is JobState.PENDING
    assert engine.get_job(job.id) is again
    assert listed(engine, JobState.DEAD) == []
    assert listed(engine, JobState.PENDING) == [job.id]
    # Two more attempts: the budget starts again.
    fail(engine, only(pump(2.0)), 2.0)
    assert engine.get_job(job.id).state is JobState.SCHEDULED
    assert again.not_before == 3.0
    fail(engine, only(pump(3.0)), 3.0)
    done = engine.get_job(job.id)
    assert done.state is JobState.DEAD
    assert done.attempt == 4
    assert [a.number for a in done.attempts] == [1, 2, 3, 4]


def test_retry_of_a_failed_job_puts_it_back_to_pending(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    job = add(payload=b"p", priority=3)
    connect()
    fail(engine, only(pump(0.0)), 0.0)
    assert engine.get_job(job.id).state is JobState.FAILED
    again = engine.retry(job.id, 1.0)
    assert (again.state, again.payload, again.priority, again.attempt) == (
        JobState.PENDING,
        b"p",
        3,
        1,
    )
    ok(engine, only(pump(1.0)), 2.0)
    done = engine.get_job(job.id)
    assert done.state is JobState.SUCCEEDED
    assert done.attempt == 2
    assert len(done.attempts) == 2


@pytest.mark.parametrize("state", ["pending", "scheduled", "underway", "succeeded", "cancelled"])
def test_retry_of_other_states_is_refused(
    engine: Engine, add: Add, connect: Connect, pump: Pump, state: str
) -> None:
    job = add(not_before=10.0) if state == "scheduled" else add()
    if state in ("underway", "succeeded"):
        connect()
        lease = only(pump(0.0))
        if state == "succeeded":
            ok(engine, lease, 0.0)
    elif state == "cancelled":
        engine.cancel(job.id, 0.0)
    before = engine.get_job(job.id).state
    with pytest.raises(FailedPrecondition):
        engine.retry(job.id, 1.0)
    assert engine.get_job(job.id).state is before


def test_retry_of_an_expired_job_is_refused(engine: Engine, add: Add) -> None:
    job = add(expire_at=1.0)
    engine.tick(1.0)
    assert engine.get_job(job.id).state is JobState.EXPIRED
    with pytest.raises(FailedPrecondition):
        engine.retry(job.id, 2.0)


def test_retry_of_unknown_job_and_while_draining(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    with pytest.raises(NotFound):
        engine.retry("00000000000000000000000000", 0.0)
    job = add()
    connect()
    fail(engine, only(pump(0.0)), 0.0)
    engine.begin_drain()
    with pytest.raises(Unavailable):
        engine.retry(job.id, 1.0)
    assert engine.get_job(job.id).state is JobState.FAILED


# ---- listing and purging finished jobs ---------------------------------------------


def finished_mix(engine: Engine, add: Add, connect: Connect, pump: Pump) -> dict[str, list[str]]:
    """Two dead, one failed, one succeeded, one cancelled, one expired, one pending."""
    policy = RetryPolicy.of(1, 1.0, 1.0, 1.0, 0.0)
    dead = [add(retry_policy=policy), add(retry_policy=policy)]
    failed = add()
    good = add()
    cancelled = add()
    expired = add(expire_at=5.0, not_before=8.0)
    engine.cancel(cancelled.id, 0.0)
    connect(credits=10)
    leases = {lease.job.id: lease for lease in pump(0.0)}
    fail(engine, leases[dead[1].id], 1.0)
    fail(engine, leases[dead[0].id], 2.0)
    fail(engine, leases[failed.id], 3.0)
    ok(engine, leases[good.id], 4.0)
    engine.tick(5.0)
    pending = add(now=6.0)
    return {
        "dead": [dead[1].id, dead[0].id],  # finish order
        "failed": [failed.id],
        "succeeded": [good.id],
        "cancelled": [cancelled.id],
        "expired": [expired.id],
        "pending": [pending.id],
    }


def test_list_jobs_by_finished_state(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    mix = finished_mix(engine, add, connect, pump)
    assert listed(engine, JobState.DEAD) == mix["dead"]
    assert listed(engine, JobState.FAILED) == mix["failed"]
    assert listed(engine, JobState.EXPIRED) == mix["expired"]
    page, token = engine.list_jobs("q", JobState.DEAD, 1, "")
    assert ids(page) == mix["dead"][:1]
    assert token
    page, token = engine.list_jobs("q", JobState.DEAD, 1, token)
    assert ids(page) == mix["dead"][1:]
    assert token == ""


def test_purge_by_state_forgets_only_that_state(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    mix = finished_mix(engine, add, connect, pump)
    assert engine.purge("q", JobState.DEAD) == 2
    for job_id in mix["dead"]:
        with pytest.raises(NotFound):
            engine.get_job(job_id)
    assert listed(engine, JobState.DEAD) == []
    for state in ("failed", "succeeded", "cancelled", "expired", "pending"):
        for job_id in mix[state]:
            engine.get_job(job_id)
    assert engine.purge("q", JobState.DEAD) == 0
    assert engine.purge("q", JobState.UNSPECIFIED) == 4  # every finished state
    assert listed(engine, JobState.UNSPECIFIED) == mix["pending"]


@pytest.mark.parametrize("state", [JobState.PENDING, JobState.SCHEDULED, JobState.UNDERWAY])
def test_purge_refuses_unfinished_states(engine: Engine, add: Add, state: JobState) -> None:
    job = add()
    with pytest.raises(InvalidArgument):
        engine.purge("q", state)
    assert engine.get_job(job.id).state is JobState.PENDING


def test_purge_of_unknown_queue(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.purge("nope", JobState.DEAD)
    with pytest.raises(InvalidArgument):
        engine.purge("", JobState.DEAD)


def test_purge_touches_only_its_queue(
    engine: Engine, add: Add, connect: Connect, pump: Pump
) -> None:
    mine = add(queue="a")
    theirs = add(queue="b")
    connect(queues=["a", "b"])
    for lease in pump(0.0):
        fail(engine, lease, 0.0)
    assert engine.purge("a", JobState.FAILED) == 1
    with pytest.raises(NotFound):
        engine.get_job(mine.id)
    assert engine.get_job(theirs.id).state is JobState.FAILED
