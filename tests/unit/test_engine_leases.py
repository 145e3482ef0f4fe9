"""Leases: results and fencing, heartbeats, expiry, disconnect, cancel, reprioritize."""

from __future__ import annotations

import pytest

from dispatchd.engine import (
    Engine,
    EngineLimits,
    FailedPrecondition,
    InvalidArgument,
    JobFailure,
    JobState,
    NotFound,
    Rejection,
)
from tests.unit.engine_helpers import let_go

from .engine_helpers import Connect, Dispatch, Submit


def pending_ids(engine: Engine, queue: str = "q") -> list[str]:
    jobs, _ = engine.list_jobs(queue, JobState.PENDING, 1000, "")
    return [j.id for j in jobs]


def snapshot(engine: Engine, queue: str = "q") -> tuple[object, ...]:
    """Everything a rejected result must leave alone."""
    view = engine.get_queue(queue)
    jobs, _ = engine.list_jobs(queue, JobState.UNSPECIFIED, 1000, "")
    return (
        view,
        [(j.id, j.state, j.attempt, j.result, j.error) for j in jobs],
        sorted((w.key, tuple(w.leases)) for w in engine.workers()),
        engine.underway_total(),
    )


# ---- complete ---------------------------------------------------------------


def test_complete_success(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit()
    w = connect()
    [lease] = dispatch(0.0)
    assert engine.complete(w, lease.job.id, lease.lease_id, b"result", 3.0) is None
    job = engine.get_job(lease.job.id)
    assert job.state is JobState.SUCCEEDED
    assert job.result == b"result"
    assert job.error is None
    assert job.finish_time == 3.0
    assert job.lease is None
    assert w.leases == {}
    assert engine.underway_total() == 0
    assert engine.get_queue("q").underway_count == 0


def test_complete_failure(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit()
    w = connect()
    [lease] = dispatch(0.0)
    failure = JobFailure("boom", retryable=False, code="E42")
    assert engine.complete(w, lease.job.id, lease.lease_id, failure, 1.0) is None
    job = lease.job
    assert job.state is JobState.FAILED
    assert job.error == failure
    assert job.result == b""
    assert engine.get_queue("q").underway_count == 0


def test_result_at_cap_succeeds(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch, limits: EngineLimits
) -> None:
    submit()
    w = connect()
    [lease] = dispatch(0.0)
    result = b"r" * limits.max_payload_bytes
    engine.complete(w, lease.job.id, lease.lease_id, result, 1.0)
    assert lease.job.state is JobState.SUCCEEDED
    assert lease.job.result == result


def test_result_over_cap_fails_result_too_large(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch, limits: EngineLimits
) -> None:
    submit()
    w = connect()
    [lease] = dispatch(0.0)
    result = b"r" * (limits.max_payload_bytes + 1)
    assert engine.complete(w, lease.job.id, lease.lease_id, result, 1.0) is None
    job = lease.job
    assert job.state is JobState.FAILED
    assert job.result == b""
    assert job.error is not None
    assert job.error.code == "ResultTooLarge"
    assert job.error.retryable is False
    assert engine.get_queue("q").underway_count == 0


def test_unknown_lease_rejected_changes_nothing(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=2)
    w = connect()
    [lease, _] = dispatch(0.0)
    before = snapshot(engine)
    rej = engine.complete(w, lease.job.id, "no-such-lease", b"x", 1.0)
    assert isinstance(rej, Rejection)
    assert (rej.job_id, rej.lease_id) == (lease.job.id, "no-such-lease")
    assert "stale" in rej.reason
    assert snapshot(engine) == before
    assert lease.job.state is JobState.UNDERWAY


def test_unknown_job_rejected(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit()
    w = connect()
    [lease] = dispatch(0.0)
    before = snapshot(engine)
    rej = engine.complete(w, "nope", lease.lease_id, b"x", 1.0)
    assert rej is not None
    assert rej.reason == "unknown job"
    assert snapshot(engine) == before


def test_lease_of_other_job_rejected(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=2)
    w = connect()
    [l1, l2] = dispatch(0.0)
    before = snapshot(engine)
    assert engine.complete(w, l1.job.id, l2.lease_id, b"x", 1.0) is not None
    assert snapshot(engine) == before


def test_result_from_other_workers_lease_rejected(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=2)
    a = connect(credits=1)
    b = connect(credits=1)
    leases = dispatch(0.0)
    la = next(lease for lease in leases if lease.worker is a)
    before = snapshot(engine)
    rej = engine.complete(b, la.job.id, la.lease_id, b"x", 1.0)
    assert rej is not None
    assert snapshot(engine) == before
    assert la.job.state is JobState.UNDERWAY
    assert engine.complete(a, la.job.id, la.lease_id, b"x", 1.0) is None


def test_stale_lease_after_expiry_and_redispatch(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit()
    a = connect(credits=1)
    [old] = dispatch(0.0)
    engine.expire_leases(30.0)
    b = connect(credits=1)
    engine.set_credit(a, 0)
    [new] = dispatch(31.0)
    assert new.worker is b
    assert new.job is old.job
    before = snapshot(engine)
    assert engine.complete(a, old.job.id, old.lease_id, b"late", 32.0) is not None
    assert snapshot(engine) == before
    assert engine.complete(b, new.job.id, new.lease_id, b"fresh", 33.0) is None
    assert new.job.result == b"fresh"
    assert new.job.attempt == 2


def test_completing_twice_rejects_second(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit()
    w = connect()
    [lease] = dispatch(0.0)
    assert engine.complete(w, lease.job.id, lease.lease_id, b"1", 1.0) is None
    assert engine.complete(w, lease.job.id, lease.lease_id, b"2", 2.0) is not None
    assert lease.job.result == b"1"
    assert lease.job.state is JobState.SUCCEEDED


def test_lease_ids_unique(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=50)
    connect(credits=100)
    engine.update_queue("q", width=100)
    ids = [lease.lease_id for lease in dispatch(0.0)]
    assert len(set(ids)) == 50


# ---- heartbeat and expiry ---------------------------------------------------


def test_heartbeat_extends_deadline(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit()
    w = connect()
    [lease] = dispatch(0.0)
    assert lease.deadline == 30.0
    assert engine.heartbeat(w, [lease.lease_id], 20.0) == []
    assert lease.deadline == 50.0
    assert engine.expire_leases(30.0) == []
    assert lease.job.state is JobState.UNDERWAY
    assert engine.expire_leases(49.9) == []
    assert engine.expire_leases(50.0) == [lease.job]
    assert engine.get_job(lease.job.id).state is JobState.PENDING


def test_heartbeat_all_when_none_named(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=3)
    w = connect()
    leases = dispatch(0.0)
    assert engine.heartbeat(w, [], 10.0) == []
    assert [lease.deadline for lease in leases] == [40.0, 40.0, 40.0]


def test_heartbeat_reports_unknown(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=2)
    a = connect(credits=1)
    b = connect(credits=1)
    leases = dispatch(0.0)
    lb = next(lease for lease in leases if lease.worker is b)
    la = next(lease for lease in leases if lease.worker is a)
    assert engine.heartbeat(a, [la.lease_id, lb.lease_id, "x"], 5.0) == [lb.lease_id, "x"]
    assert la.deadline == 35.0
    assert lb.deadline == 30.0  # other worker's lease untouched


def test_heartbeat_uses_current_lease_seconds(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit()
    w = connect()
    [lease] = dispatch(0.0)
    engine.update_queue("q", lease_seconds=100.0)
    engine.heartbeat(w, [lease.lease_id], 10.0)
    assert lease.deadline == 110.0


def test_heartbeat_shortened_lease_expires_on_time(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    """After lease_seconds is cut, a heartbeat may move a deadline earlier; the lease
    must then expire at the new deadline, not at the old one."""
    engine.update_queue("q", lease_seconds=3600.0, create=True)
    submit()
    w = connect()
    [lease] = dispatch(0.0)
    engine.update_queue("q", lease_seconds=10.0)
    engine.heartbeat(w, [lease.lease_id], 5.0)
    assert lease.deadline == 15.0
    deadline = engine.next_lease_deadline()
    assert deadline is not None
    assert deadline <= 15.0
    assert engine.expire_leases(15.0) == [lease.job]


def test_expire_requeues_in_original_place(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    first = submit(priority=1)[0]
    rest = [*submit(priority=1), *submit(priority=0)]
    w = connect(credits=1)
    [lease] = dispatch(0.0)
    assert lease.job is first
    later_high = submit(priority=1, now=1.0)[0]
    top = submit(priority=2, now=1.0)[0]
    expired = engine.expire_leases(30.0)
    let_go(engine, w, 30.0)
    assert expired == [first]
    assert first.state is JobState.PENDING
    assert first.attempt == 1
    assert first.lease is None
    assert w.leases == {}
    assert pending_ids(engine) == [top.id, first.id, rest[0].id, later_high.id, rest[1].id]
    # The slot is free again and the job comes back with attempt 2.
    engine.update_queue("q", width=1)
    [again] = dispatch(31.0)
    assert again.job is top
    engine.complete(w, top.id, again.lease_id, b"", 32.0)
    [again] = dispatch(33.0)
    assert again.job is first
    assert first.attempt == 2
    assert first.first_dispatch_time == 0.0
    assert first.dispatch_time == 33.0


def test_expire_frees_width_slot(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=2)
    engine.update_queue("q", width=1)
    w = connect(credits=5)
    [lease] = dispatch(0.0)
    assert dispatch(1.0) == []
    engine.expire_leases(30.0)
    let_go(engine, w, 30.0)
    assert engine.get_queue("q").underway_count == 0
    [again] = dispatch(30.0)
    assert again.job is lease.job  # it kept its place at the head


def test_expire_only_past_deadline(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit()
    connect()
    [a] = dispatch(0.0)
    submit(now=10.0)
    [b] = dispatch(10.0)
    assert engine.expire_leases(29.9) == []
    assert engine.expire_leases(30.0) == [a.job]
    assert b.job.state is JobState.UNDERWAY
    assert engine.expire_leases(40.0) == [b.job]


def test_expire_uses_queue_lease_seconds(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    engine.update_queue("q", lease_seconds=5.0, create=True)
    submit()
    connect()
    [lease] = dispatch(0.0)
    assert lease.deadline == 5.0
    assert engine.expire_leases(5.0) == [lease.job]


def test_next_lease_deadline(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    assert engine.next_lease_deadline() is None
    submit()
    w = connect()
    [a] = dispatch(0.0)
    submit(now=5.0)
    dispatch(5.0)
    assert engine.next_lease_deadline() == 30.0
    engine.heartbeat(w, [a.lease_id], 10.0)
    deadline = engine.next_lease_deadline()
    assert deadline is not None
    assert deadline <= 35.0  # may be early, never late
    engine.expire_leases(deadline)
    assert engine.next_lease_deadline() == 35.0
    engine.expire_leases(40.0)
    assert engine.next_lease_deadline() is None
    assert engine.underway_total() == 0


def test_many_expiries_with_heap_compaction(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    """Enough finished leases that the lazy deadline heap gets rebuilt mid-expiry."""
    engine.update_queue("q", width=500, create=True)
    submit(n=300)
    w = connect(credits=500)
    leases = dispatch(0.0)
    assert len(leases) == 300
    keep, done, lapse = leases[:10], leases[10:200], leases[200:]
    for lease in done:
        engine.complete(w, lease.job.id, lease.lease_id, b"", 1.0)
    assert engine.heartbeat(w, [lease.lease_id for lease in keep], 20.0) == []
    expired = engine.expire_leases(30.0)
    assert {j.id for j in expired} == {lease.job.id for lease in lapse}
    assert len(expired) == 100
    assert engine.underway_total() == 10
    assert all(lease.job.state is JobState.UNDERWAY for lease in keep)
    assert engine.expire_leases(49.0) == []
    assert {j.id for j in engine.expire_leases(50.0)} == {lease.job.id for lease in keep}
    assert engine.underway_total() == 0
    assert engine.next_lease_deadline() is None or engine.expire_leases(1e9) == []
    assert engine.get_queue("q").pending_count == 110


def test_disconnect_requeues_all_held(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    jobs = submit(n=4)
    a = connect(credits=3)
    leases = dispatch(0.0)
    assert len(leases) == 3
    assert engine.disconnect(a, 1.0) == 3
    assert all(j.state is JobState.PENDING for j in jobs)
    assert all(j.attempt == (1 if j is not jobs[3] else 0) for j in jobs)
    assert pending_ids(engine) == [j.id for j in jobs]
    assert engine.underway_total() == 0
    assert engine.workers() == []
    assert engine.get_queue("q").worker_count == 0
    assert engine.next_lease_deadline() in (None, 30.0)
    assert engine.expire_leases(100.0) == []


def test_disconnect_leaves_other_workers(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=2)
    a = connect(credits=1)
    b = connect(credits=1)
    dispatch(0.0)
    engine.disconnect(a, 1.0)
    assert len(b.leases) == 1
    assert engine.underway_total() == 1
    assert engine.workers() == [b]


def test_complete_after_disconnect_rejected(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit()
    w = connect()
    [lease] = dispatch(0.0)
    engine.disconnect(w, 1.0)
    assert engine.complete(w, lease.job.id, lease.lease_id, b"", 2.0) is not None
    assert lease.job.state is JobState.PENDING


# ---- cancel -----------------------------------------------------------------


def test_cancel_pending(engine: Engine, submit: Submit) -> None:
    a, b = submit(n=2)
    job, worker = engine.cancel(a.id, 2.0)
    assert job.id == a.id
    assert worker is None
    assert a.state is JobState.CANCELLED
    assert a.finish_time == 2.0
    assert pending_ids(engine) == [b.id]
    assert engine.get_queue("q").pending_count == 1


def test_cancel_underway_holds_slot_until_worker_answers(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=3)
    engine.update_queue("q", width=1)
    w = connect(credits=5)
    [lease] = dispatch(0.0)
    job, worker = engine.cancel(lease.job.id, 1.0)
    assert worker is w
    assert job.state is JobState.CANCELLED
    assert lease.cancelled
    # The slot stays used until the worker answers.
    assert engine.get_queue("q").underway_count == 1
    assert dispatch(2.0) == []
    # Not listed as underway any more; listed as cancelled.
    underway, _ = engine.list_jobs("q", JobState.UNDERWAY, 10, "")
    assert underway == []
    cancelled, _ = engine.list_jobs("q", JobState.CANCELLED, 10, "")
    assert cancelled == [job]
    # The worker's answer frees the slot; the job stays cancelled.
    assert engine.complete(w, job.id, lease.lease_id, b"done anyway", 3.0) is None
    assert job.state is JobState.CANCELLED
    assert job.result == b""
    assert engine.get_queue("q").underway_count == 0
    assert len(dispatch(4.0)) == 1


def test_cancel_underway_failure_answer_keeps_cancelled(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit()
    w = connect()
    [lease] = dispatch(0.0)
    engine.cancel(lease.job.id, 1.0)
    engine.complete(w, lease.job.id, lease.lease_id, JobFailure("x"), 2.0)
    assert lease.job.state is JobState.CANCELLED
    assert lease.job.error is None


def test_cancel_underway_then_expire_not_requeued(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit()
    engine.update_queue("q", width=1)
    w = connect()
    [lease] = dispatch(0.0)
    engine.cancel(lease.job.id, 1.0)
    engine.expire_leases(30.0)
    let_go(engine, w, 30.0)
    assert lease.job.state is JobState.CANCELLED
    assert engine.get_queue("q").pending_count == 0
    assert engine.get_queue("q").underway_count == 0
    assert pending_ids(engine) == []
    submit(now=31.0)
    assert len(dispatch(31.0)) == 1


def test_cancel_underway_then_disconnect_not_requeued(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit()
    w = connect()
    [lease] = dispatch(0.0)
    engine.cancel(lease.job.id, 1.0)
    assert engine.disconnect(w, 2.0) == 1
    assert lease.job.state is JobState.CANCELLED
    assert engine.get_queue("q").pending_count == 0
    assert engine.get_queue("q").underway_count == 0


def test_cancel_underway_then_reclaim_not_requeued(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit()
    connect()
    [lease] = dispatch(0.0)
    engine.cancel(lease.job.id, 1.0)
    engine.begin_drain()
    engine.reclaim_underway()
    assert lease.job.state is JobState.CANCELLED
    assert engine.unfinished_jobs() == []


@pytest.mark.parametrize("how", ["success", "failure", "cancel"])
def test_cancel_finished_is_failed_precondition(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch, how: str
) -> None:
    [job] = submit()
    w = connect()
    if how == "cancel":
        engine.cancel(job.id, 0.0)
    else:
        [lease] = dispatch(0.0)
        outcome = b"" if how == "success" else JobFailure("no")
        engine.complete(w, job.id, lease.lease_id, outcome, 0.0)
    state = job.state
    with pytest.raises(FailedPrecondition):
        engine.cancel(job.id, 1.0)
    assert job.state is state


UNKNOWN_ID = "01JN0000000000000000000000"  # a well-formed ULID no job has


def test_cancel_unknown(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.cancel(UNKNOWN_ID, 0.0)
    with pytest.raises(InvalidArgument, match="not a job id"):
        engine.cancel("nope", 0.0)
    with pytest.raises(InvalidArgument):
        engine.cancel("", 0.0)


# ---- reprioritize -----------------------------------------------------------


def test_reprioritize_pending_moves_it(engine: Engine, submit: Submit) -> None:
    a, b, c = submit(n=3)
    assert engine.reprioritize(c.id, 5) is c
    assert pending_ids(engine) == [c.id, a.id, b.id]
    engine.reprioritize(c.id, -5)
    assert pending_ids(engine) == [a.id, b.id, c.id]
    engine.reprioritize(c.id, 0)  # back among equals at its submit place
    assert pending_ids(engine) == [a.id, b.id, c.id]
    engine.reprioritize(b.id, -1)
    assert pending_ids(engine) == [a.id, c.id, b.id]
    assert engine.get_queue("q").pending_count == 3


def test_reprioritize_underway_is_failed_precondition(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    a = submit()[0]
    connect(credits=1)
    dispatch(0.0)
    with pytest.raises(FailedPrecondition, match="UNDERWAY"):
        engine.reprioritize(a.id, 9)
    assert a.priority == 0


def test_reprioritize_finished_is_failed_precondition(engine: Engine, submit: Submit) -> None:
    [job] = submit()
    engine.cancel(job.id, 0.0)
    with pytest.raises(FailedPrecondition):
        engine.reprioritize(job.id, 3)
    assert job.priority == 0


def test_reprioritize_unknown(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.reprioritize(UNKNOWN_ID, 1)
