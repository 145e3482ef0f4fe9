"""Credit-filling turns: the worker whose turn it is fills its free credits in one
delivery, the first turn rotates between passes, and queue fairness, width, rate and
slots hold across turns."""

from __future__ import annotations

from collections import Counter

from dispatchd.engine import Engine, Rate, WorkerRecord

from .engine_helpers import Connect, Submit


def deliveries(engine: Engine, now: float) -> list[tuple[int, list[str]]]:
    """One pass as (worker key, queues of the jobs in its delivery) in delivery order."""
    return [(w.key, [lease.job.queue for lease in batch]) for w, batch in engine.dispatch(now)]


def finish_all(engine: Engine, worker: WorkerRecord, now: float) -> None:
    for lease in list(worker.leases.values()):
        assert engine.complete(worker, lease.job.id, lease.lease_id, b"ok", now) is None


def test_one_delivery_fills_the_credits_then_the_next_worker_goes(
    engine: Engine, submit: Submit, connect: Connect
) -> None:
    submit(n=14)
    engine.update_queue("q", width=100)
    a = connect(credits=10)
    b = connect(credits=10)
    assert [(k, len(qs)) for k, qs in deliveries(engine, 0.0)] == [(a.key, 10), (b.key, 4)]


def test_first_turn_rotates_over_workers(engine: Engine, submit: Submit, connect: Connect) -> None:
    workers = [connect(credits=10) for _ in range(3)]
    firsts = []
    for t in range(6):
        submit(n=2, now=float(t))
        [(key, queues)] = deliveries(engine, float(t))
        assert len(queues) == 2
        firsts.append(key)
        for w in workers:
            finish_all(engine, w, float(t))
    keys = [w.key for w in workers]
    assert firsts == keys + keys


def test_one_credit_and_ten_credits_both_served(
    engine: Engine, submit: Submit, connect: Connect
) -> None:
    big = connect(credits=10)
    small = connect(credits=1)
    submit(n=12)
    engine.update_queue("q", width=100)
    assert [(k, len(qs)) for k, qs in deliveries(engine, 0.0)] == [(big.key, 10), (small.key, 1)]
    finish_all(engine, big, 1.0)
    finish_all(engine, small, 1.0)
    # The pass starts after the worker served last (small): big takes the 12th job.
    assert [(k, len(qs)) for k, qs in deliveries(engine, 1.0)] == [(big.key, 1)]
    submit(n=1, now=2.0)
    # Now small's turn comes first, although big has nine free credits.
    assert [(k, len(qs)) for k, qs in deliveries(engine, 2.0)] == [(small.key, 1)]


def test_queues_alternate_within_a_turn(engine: Engine, submit: Submit, connect: Connect) -> None:
    submit("a", n=10)
    submit("b", n=10)
    w = connect(["a", "b"], credits=6)
    [(key, queues)] = deliveries(engine, 0.0)
    assert key == w.key
    assert Counter(queues) == {"a": 3, "b": 3}
    assert queues[0::2] == [queues[0]] * 3
    assert queues[1::2] == [queues[1]] * 3


def test_queue_rounds_go_on_across_turns(engine: Engine, submit: Submit, connect: Connect) -> None:
    """Two workers of 3 credits on queues a and b: the second turn picks the rounds up
    where the first stopped, so each queue gets 3 jobs, not 4 and 2."""
    submit("a", n=10)
    submit("b", n=10)
    connect(["a", "b"], credits=3)
    connect(["a", "b"], credits=3)
    [(_, first), (_, second)] = deliveries(engine, 0.0)
    assert len(first) == len(second) == 3
    assert Counter(first + second) == {"a": 3, "b": 3}
    assert first[-1] != second[0]


def test_width_and_rate_bound_a_turn(engine: Engine, submit: Submit, connect: Connect) -> None:
    submit(n=20)
    engine.update_queue("q", width=5)
    a = connect(credits=10)
    connect(credits=10)
    assert [(k, len(qs)) for k, qs in deliveries(engine, 0.0)] == [(a.key, 5)]
    engine.update_queue("q", width=100, rate=Rate.of(1.0, 3), now=0.0)
    # The bucket was full (burst 3) when the rate was set: 3 more, to the next turn.
    got = deliveries(engine, 0.0)
    assert [len(qs) for _, qs in got] == [3]
    assert got[0][0] != a.key
    assert engine.get_queue("q").underway_count == 8


def test_slots_are_granted_before_a_turn_fills(
    engine: Engine, submit: Submit, connect: Connect
) -> None:
    submit(n=10)
    engine.update_queue("q", width=4)
    engine.request_slot("q", "cron", 10.0, 0, 0.0)
    w = connect(credits=10)
    [(key, queues)] = deliveries(engine, 0.0)
    assert (key, len(queues)) == (w.key, 3)
    assert engine.get_queue("q").underway_count == 4  # the granted slot holds the 4th place


def test_worker_without_free_credits_takes_no_turn(
    engine: Engine, submit: Submit, connect: Connect
) -> None:
    a = connect(credits=10)
    b = connect(credits=10)
    engine.set_credit(b, 0)
    submit(n=3)
    assert [(k, len(qs)) for k, qs in deliveries(engine, 0.0)] == [(a.key, 3)]
    engine.set_credit(b, 2)
    submit(n=3, now=1.0)
    # b's turn comes first now (a was served last) and fills its 2 credits.
    assert [(k, len(qs)) for k, qs in deliveries(engine, 1.0)] == [(b.key, 2), (a.key, 1)]
