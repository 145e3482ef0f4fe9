"""Dispatch: width, pause, worker credits, draining workers, fairness."""

from __future__ import annotations

from collections import Counter

import pytest

from dispatchd.engine import (
    Engine,
    InvalidArgument,
    JobState,
    LeaseRecord,
    NotFound,
    Unavailable,
)

from .engine_helpers import Connect, Dispatch, Submit


def finish(engine: Engine, lease: LeaseRecord, now: float = 0.0) -> None:
    assert engine.complete(lease.worker, lease.job.id, lease.lease_id, b"ok", now) is None


def test_nothing_to_dispatch_without_workers(
    engine: Engine, submit: Submit, dispatch: Dispatch
) -> None:
    submit(n=3)
    assert dispatch(0.0) == []
    assert engine.get_queue("q").pending_count == 3


def test_nothing_to_dispatch_without_jobs(
    engine: Engine, connect: Connect, dispatch: Dispatch
) -> None:
    connect()
    assert dispatch(0.0) == []


def test_dispatch_sets_lease_fields(engine: Engine, submit: Submit, connect: Connect) -> None:
    [job] = submit()
    w = connect(worker_id="w1")
    out = engine.dispatch(4.0)
    assert len(out) == 1
    worker, [lease] = out[0]
    assert worker is w
    assert lease.job is job
    assert lease.worker is w
    assert lease.deadline == 4.0 + 30.0
    assert not lease.cancelled
    assert job.state is JobState.UNDERWAY
    assert job.attempt == 1
    assert job.dispatch_time == 4.0
    assert job.first_dispatch_time == 4.0
    assert job.worker_id == "w1"
    assert job.lease is lease
    assert w.leases == {lease.lease_id: lease}
    assert engine.underway_total() == 1
    view = engine.get_queue("q")
    assert (view.pending_count, view.underway_count, view.worker_count) == (0, 1, 1)


def test_worker_id_defaults_when_empty(connect: Connect) -> None:
    w = connect(worker_id="")
    assert w.worker_id


def test_batches_grouped_per_worker(engine: Engine, submit: Submit, connect: Connect) -> None:
    submit(n=5)
    w = connect(credits=10)
    out = engine.dispatch(0.0)
    assert len(out) == 1
    assert out[0][0] is w
    assert len(out[0][1]) == 5


def test_never_more_leases_than_width(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=20)
    engine.update_queue("q", width=3)
    connect(credits=100)
    connect(credits=100)
    assert len(dispatch(0.0)) == 3
    assert dispatch(1.0) == []
    assert engine.get_queue("q").underway_count == 3


def test_width_zero_dispatches_nothing(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    """The txrdq regression: width 0 must mean "run nothing", never "unlimited"."""
    submit(n=3)
    engine.update_queue("q", width=0)
    w = connect(credits=5)
    assert w.free_credits == 5
    assert dispatch(0.0) == []
    assert engine.dispatch(1.0) == []
    view = engine.get_queue("q")
    assert (view.pending_count, view.underway_count) == (3, 0)
    engine.update_queue("q", width=2)
    assert len(dispatch(2.0)) == 2


def test_width_zero_after_jobs_pending_and_worker_ready(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    connect(credits=5)
    submit(n=3)
    engine.update_queue("q", width=0)
    assert dispatch(0.0) == []


def test_narrowing_keeps_underway_and_holds_new(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=10)
    engine.update_queue("q", width=4)
    connect(credits=100)
    leases = dispatch(0.0)
    assert len(leases) == 4
    engine.update_queue("q", width=2)
    # Underway jobs are left alone.
    assert all(lease.job.state is JobState.UNDERWAY for lease in leases)
    assert engine.get_queue("q").underway_count == 4
    assert dispatch(1.0) == []
    finish(engine, leases[0])
    assert dispatch(2.0) == []  # 3 underway, width 2
    finish(engine, leases[1])
    assert dispatch(3.0) == []  # 2 underway, width 2
    finish(engine, leases[2])
    assert len(dispatch(4.0)) == 1  # 1 underway -> one new
    assert engine.get_queue("q").underway_count == 2


def test_widening_dispatches_more(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=10)
    engine.update_queue("q", width=1)
    connect(credits=100)
    assert len(dispatch(0.0)) == 1
    engine.update_queue("q", width=5)
    assert len(dispatch(1.0)) == 4


def test_pause_and_resume_with_width(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=10)
    connect(credits=100)
    view = engine.pause("q")
    assert view.settings.paused
    assert dispatch(0.0) == []
    view = engine.resume("q", width=3)
    assert not view.settings.paused
    assert view.settings.width == 3
    assert len(dispatch(1.0)) == 3
    engine.pause("q")
    engine.resume("q")
    assert engine.get_queue("q").settings.width == 3


def test_pause_keeps_underway(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=3)
    connect(credits=1)
    [lease] = dispatch(0.0)
    engine.pause("q")
    finish(engine, lease)
    assert lease.job.state is JobState.SUCCEEDED
    assert dispatch(1.0) == []


def test_pause_unknown_queue(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.pause("nope")
    with pytest.raises(NotFound):
        engine.resume("nope")


def test_worker_credits_respected(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=10)
    w = connect(credits=3)
    assert len(dispatch(0.0)) == 3
    assert w.free_credits == 0
    assert dispatch(1.0) == []
    finish(engine, next(iter(w.leases.values())))
    assert len(dispatch(2.0)) == 1
    assert len(w.leases) == 3


def test_set_credit_live(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=10)
    w = connect(credits=1)
    assert len(dispatch(0.0)) == 1
    engine.set_credit(w, 4)
    assert len(dispatch(1.0)) == 3
    engine.set_credit(w, 0)
    for lease in list(w.leases.values()):
        finish(engine, lease)
    assert dispatch(2.0) == []
    engine.set_credit(w, 2)
    assert len(dispatch(3.0)) == 2


def test_set_credit_below_held_stops_until_drained(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=10)
    w = connect(credits=4)
    held = dispatch(0.0)
    engine.set_credit(w, 1)
    assert w.free_credits < 0
    for lease in held[:3]:
        finish(engine, lease)
        assert dispatch(1.0) == []
    finish(engine, held[3])
    assert len(dispatch(2.0)) == 1


@pytest.mark.parametrize("bad", [-1, 10_001])
def test_set_credit_bounds(engine: Engine, connect: Connect, bad: int) -> None:
    w = connect(credits=2)
    with pytest.raises(InvalidArgument):
        engine.set_credit(w, bad)
    assert w.max_in_flight == 2


@pytest.mark.parametrize("bad", [0, -1, 10_001])
def test_connect_credit_bounds(engine: Engine, bad: int) -> None:
    with pytest.raises(InvalidArgument):
        engine.connect("w", ["q"], bad, 0.0)
    assert engine.workers() == []


def test_connect_validation(engine: Engine) -> None:
    with pytest.raises(InvalidArgument):
        engine.connect("w", [], 1, 0.0)
    with pytest.raises(InvalidArgument):
        engine.connect("w", ["ok", "bad name"], 1, 0.0)
    with pytest.raises(InvalidArgument):
        engine.connect("w", [f"q{i}" for i in range(101)], 1, 0.0)
    assert engine.workers() == []
    assert engine.list_queues() == []


def test_connect_creates_queues_and_dedups(engine: Engine, connect: Connect) -> None:
    w = connect(["a", "b", "a"])
    assert w.queues == ("a", "b")
    assert [v.name for v in engine.list_queues()] == ["a", "b"]
    assert engine.get_queue("a").worker_count == 1
    assert engine.get_queue("b").worker_count == 1


def test_worker_count_per_queue(engine: Engine, connect: Connect) -> None:
    a = connect("q")
    connect("q")
    assert engine.get_queue("q").worker_count == 2
    engine.disconnect(a, 1.0)
    assert engine.get_queue("q").worker_count == 1


def test_disconnected_worker_gets_nothing(engine: Engine, submit: Submit, connect: Connect) -> None:
    """A worker that made the queue on connect must be unsubscribed once on disconnect."""
    a = connect("q", worker_id="a")
    b = connect("q", worker_id="b")
    engine.disconnect(a, 1.0)
    submit(n=4)
    out = engine.dispatch(2.0)
    assert [w for w, _ in out] == [b]
    assert len(out[0][1]) == 4
    assert a.leases == {}


def test_disconnect_twice_is_harmless(engine: Engine, connect: Connect) -> None:
    w = connect()
    assert engine.disconnect(w, 0.0) == 0
    assert engine.disconnect(w, 0.0) == 0
    assert engine.workers() == []


def test_draining_worker_gets_nothing(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    w = connect(credits=5)
    w.draining = True
    submit(n=2)
    assert w.free_credits == 0
    assert dispatch(0.0) == []
    other = connect(credits=5)
    leases = dispatch(1.0)
    assert len(leases) == 2
    assert all(lease.worker is other for lease in leases)


def test_two_queues_share_one_worker_fairly(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit("a", n=10)
    submit("b", n=10)
    w = connect(["a", "b"], credits=2)
    first = dispatch(0.0)
    assert sorted(lease.job.queue for lease in first) == ["a", "b"]
    seen: Counter[str] = Counter()
    for t in range(1, 9):
        for lease in list(w.leases.values()):
            finish(engine, lease, float(t))
        for lease in dispatch(float(t)):
            seen[lease.job.queue] += 1
    assert seen["a"] == seen["b"] == 8


def test_two_queues_credit_one_alternate(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit("a", n=5)
    submit("b", n=5)
    connect(["a", "b"], credits=1)
    got = []
    for t in range(6):
        [lease] = dispatch(float(t))
        got.append(lease.job.queue)
        finish(engine, lease, float(t))
    counts = Counter(got)
    assert counts["a"] == counts["b"] == 3


def test_low_traffic_queue_not_starved(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit("busy", n=100)
    [small] = submit("small")
    connect(["busy", "small"], credits=3)
    leases = dispatch(0.0)
    assert small.id in {lease.job.id for lease in leases}


def test_two_workers_share_one_queue(engine: Engine, submit: Submit, connect: Connect) -> None:
    submit(n=6)
    engine.update_queue("q", width=100)
    a = connect(credits=10)
    b = connect(credits=10)
    out = [(w.key, len(batch)) for w, batch in engine.dispatch(0.0)]
    assert out == [(a.key, 6)]  # a credit-filling turn: one delivery, not 3 + 3
    submit(n=6, now=1.0)
    out = [(w.key, len(batch)) for w, batch in engine.dispatch(1.0)]
    assert out == [(b.key, 6)]  # the next pass starts with the other worker


def test_busy_worker_does_not_starve_other(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=6)
    a = connect(credits=1)
    b = connect(credits=10)
    leases = dispatch(0.0)
    assert len(leases) == 6
    assert sum(1 for lease in leases if lease.worker is a) == 1
    assert sum(1 for lease in leases if lease.worker is b) == 5


def test_width_is_across_workers(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit(n=10)
    engine.update_queue("q", width=3)
    for _ in range(3):
        connect(credits=1)
    assert len(dispatch(0.0)) == 3
    connect(credits=5)
    assert dispatch(1.0) == []


def test_worker_on_other_queue_gets_nothing(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    submit("a", n=2)
    connect("b")
    assert dispatch(0.0) == []


def test_dispatch_after_queue_emptied_by_cancel(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    [job] = submit()
    engine.cancel(job.id, 0.0)
    connect()
    assert dispatch(0.0) == []
    [again] = submit(now=1.0)
    assert [lease.job for lease in dispatch(1.0)] == [again]


def test_draining_engine_refuses_connect_and_dispatch(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    w = connect()
    submit(n=2)
    engine.begin_drain()
    assert w.draining
    assert dispatch(0.0) == []
    with pytest.raises(Unavailable):
        engine.connect("late", ["q"], 1, 0.0)
