"""Engine events seen by an EngineObserver."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from dispatchd.engine import (
    Engine,
    EngineObserver,
    FinishedJob,
    InvalidArgument,
    JobFailure,
    JobRecord,
    LeaseRecord,
    NewJob,
    ObserverChain,
)
from tests.unit.engine_helpers import let_go


class Recorder(EngineObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def jobs_submitted(self, jobs: Sequence[JobRecord]) -> None:
        self.events.append(("submitted", *(j.id for j in jobs)))

    def job_dispatched(self, lease: LeaseRecord) -> None:
        self.events.append(("dispatched", lease.job.id, lease.worker.worker_id))

    def job_finished(self, job: FinishedJob) -> None:
        self.events.append(("finished", job.id, job.state.name))

    def job_requeued(self, job: JobRecord, reason: str) -> None:
        self.events.append(("requeued", job.id, reason))

    def result_rejected(self, queue: str, reason: str) -> None:
        self.events.append(("rejected", queue, reason))

    def lease_released(self, queue: str) -> None:
        self.events.append(("released", queue))

    def take(self) -> list[tuple[str, ...]]:
        out, self.events = self.events, []
        return out


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def observed(rec: Recorder) -> Engine:
    return Engine(observer=rec, rng=random.Random(0))


def test_submit_event(observed: Engine, rec: Recorder) -> None:
    jobs = observed.submit([NewJob("q"), NewJob("q")], 0.0)
    assert rec.take() == [("submitted", jobs[0].id, jobs[1].id)]


def test_rejected_submit_emits_nothing(observed: Engine, rec: Recorder) -> None:
    with pytest.raises(InvalidArgument, match="jobs"):
        observed.submit([NewJob("q"), NewJob("")], 0.0)
    assert rec.take() == []


def test_dispatch_finish_release(observed: Engine, rec: Recorder) -> None:
    [a, b] = observed.submit([NewJob("q"), NewJob("q")], 0.0)
    w = observed.connect("w1", ["q"], 5, 0.0)
    rec.take()
    leases = [lease for _, batch in observed.dispatch(0.0) for lease in batch]
    assert rec.take() == [("dispatched", a.id, "w1"), ("dispatched", b.id, "w1")]
    observed.complete(w, a.id, leases[0].lease_id, b"", 1.0)
    assert rec.take() == [("released", "q"), ("finished", a.id, "SUCCEEDED")]
    observed.complete(w, b.id, leases[1].lease_id, JobFailure("x"), 1.0)
    assert rec.take() == [("released", "q"), ("finished", b.id, "FAILED")]


def test_requeue_events(observed: Engine, rec: Recorder) -> None:
    [a, b, c] = observed.submit([NewJob("q")] * 3, 0.0)
    w = observed.connect("w1", ["q"], 1, 0.0)
    observed.dispatch(0.0)
    rec.take()
    observed.expire_leases(30.0)
    assert rec.take() == [("released", "q"), ("requeued", a.id, "lease expired")]
    let_go(observed, w, 30.5)
    observed.dispatch(31.0)
    rec.take()
    observed.disconnect(w, 32.0)
    assert rec.take() == [("released", "q"), ("requeued", a.id, "worker disconnected")]
    observed.connect("w2", ["q"], 1, 33.0)
    observed.dispatch(33.0)
    rec.take()
    observed.begin_drain()
    observed.reclaim_underway()
    assert rec.take() == [("released", "q"), ("requeued", a.id, "drain grace ran out")]
    assert (b.attempt, c.attempt) == (0, 0)


def test_cancel_events(observed: Engine, rec: Recorder) -> None:
    [a, b] = observed.submit([NewJob("q")] * 2, 0.0)
    w = observed.connect("w1", ["q"], 1, 0.0)
    [(_, [lease])] = observed.dispatch(0.0)
    rec.take()
    observed.cancel(b.id, 1.0)
    assert rec.take() == [("finished", b.id, "CANCELLED")]
    observed.cancel(a.id, 1.0)
    assert rec.take() == [("finished", a.id, "CANCELLED")]
    observed.complete(w, a.id, lease.lease_id, b"", 2.0)
    assert rec.take() == [("released", "q")]  # no second finish, no requeue


def test_rejected_result_events(observed: Engine, rec: Recorder) -> None:
    [a] = observed.submit([NewJob("jobs")], 0.0)
    w = observed.connect("w1", ["jobs"], 1, 0.0)
    observed.dispatch(0.0)
    rec.take()
    observed.complete(w, a.id, "stale", b"", 1.0)
    observed.complete(w, "unknown", "stale", b"", 1.0)
    events = rec.take()
    assert [e[:2] for e in events] == [("rejected", "jobs"), ("rejected", "")]
    assert events[1][2] == "unknown job"


def test_observer_chain_fans_out() -> None:
    first, second = Recorder(), Recorder()
    chain = ObserverChain([first])
    chain.add(second)
    engine = Engine(observer=chain, rng=random.Random(0))
    [job] = engine.submit([NewJob("q")], 0.0)
    w = engine.connect("w", ["q"], 1, 0.0)
    [(_, [lease])] = engine.dispatch(0.0)
    engine.complete(w, job.id, "bad", b"", 1.0)
    engine.expire_leases(30.0)
    let_go(engine, w, 30.5)
    engine.dispatch(31.0)
    engine.cancel(job.id, 32.0)
    assert first.events == second.events
    kinds = [e[0] for e in first.events]
    assert kinds == [
        "submitted",
        "dispatched",
        "rejected",
        "released",
        "requeued",
        "dispatched",
        "finished",
    ]
    assert lease.job is job


def test_base_observer_is_noop() -> None:
    engine = Engine(rng=random.Random(0))
    assert isinstance(engine.observer, EngineObserver)
    [job] = engine.submit([NewJob("q")], 0.0)
    engine.cancel(job.id, 1.0)


class FinishOnly(EngineObserver):
    def __init__(self) -> None:
        self.finished: list[str] = []

    def job_finished(self, job: FinishedJob) -> None:
        self.finished.append(job.id)


def test_chain_calls_only_the_hooks_an_observer_overrides() -> None:
    partial, full = FinishOnly(), Recorder()
    chain = ObserverChain([partial])
    chain.add(full)  # added later: its hooks join every event's list
    engine = Engine(observer=chain, rng=random.Random(0))
    [job] = engine.submit([NewJob("q")], 0.0)
    w = engine.connect("w", ["q"], 1, 0.0)
    engine.dispatch(0.0)
    [(lease_id, _)] = [(k, v) for k, v in w.leases.items()]
    engine.complete(w, job.id, lease_id, b"ok", 1.0)
    assert partial.finished == [job.id]
    assert [e[0] for e in full.events] == ["submitted", "dispatched", "released", "finished"]
    # The no-op base hooks of FinishOnly are never called: only Recorder's are listed.
    assert chain._job_dispatched == (full.job_dispatched,)
    assert chain._job_finished == (partial.job_finished, full.job_finished)
