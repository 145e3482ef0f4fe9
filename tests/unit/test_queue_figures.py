"""Engine.queue_figures(): the head job's ready time, chained jobs, the finished jobs held
and the rate, with numbers (the conformance-level truth is checked end to end on both
backends by tests/integration/test_alertable_metrics.py)."""

from __future__ import annotations

from dispatchd.engine import (
    Engine,
    EngineLimits,
    JobFailure,
    NewJob,
    QueueFigures,
    Rate,
    RetryPolicy,
)


def _engine() -> Engine:
    return Engine(EngineLimits())


def _figures(engine: Engine, name: str, now: float) -> QueueFigures:
    (f,) = [f for f in engine.queue_figures(now) if f.view.name == name]
    return f


def test_head_ready_is_the_next_ready_job_and_counts_its_delay() -> None:
    engine = _engine()
    engine.update_queue("q", width=10, create=True, now=0.0)
    assert _figures(engine, "q", 0.0).head_ready is None
    engine.submit_many([NewJob("q", priority=1)], now=5.0)
    engine.submit_many([NewJob("q", priority=9)], now=7.0)  # goes first
    assert _figures(engine, "q", 8.0).head_ready == 7.0
    engine.submit_many([NewJob("q", priority=99, not_before=20.0)], now=8.0)
    assert _figures(engine, "q", 9.0).head_ready == 7.0  # scheduled: not pending yet
    engine.tick(now=21.0)
    assert _figures(engine, "q", 21.0).head_ready == 20.0  # from the end of its delay


def test_jobs_behind_their_ordering_key_are_blocked_not_head() -> None:
    engine = _engine()
    engine.update_queue("q", width=10, create=True, now=0.0)
    engine.submit_many([NewJob("q", ordering_key="k"), NewJob("q", ordering_key="k")], now=1.0)
    f = _figures(engine, "q", 2.0)
    assert (f.view.pending_count, f.blocked, f.head_ready) == (2, 1, 1.0)


def test_dead_and_failed_held_and_rate_limited() -> None:
    engine = _engine()
    policy = RetryPolicy(max_attempts=1, min_backoff=0.1, max_backoff=0.1)
    engine.update_queue("q", width=10, rate=Rate(1.0, 1), create=True, now=0.0)
    engine.update_queue("d", width=10, retry_policy=policy, create=True, now=0.0)
    worker = engine.connect("w", ["q", "d"], 10, now=0.0)
    engine.submit_many([NewJob("q"), NewJob("q"), NewJob("d")], now=0.0)
    leases = [lease for _, batch in engine.dispatch(now=0.0) for lease in batch]
    for lease in leases:
        engine.complete(worker, lease.job.id, lease.lease_id, JobFailure("no"), now=0.5)
    q, d = _figures(engine, "q", 0.5), _figures(engine, "d", 0.5)
    assert (d.dead, d.failed) == (1, 0)
    assert (q.dead, q.failed) == (0, 1)  # no policy: FAILED
    assert q.rate_limited  # its one token went to the first job
    assert not _figures(engine, "q", 2.0).rate_limited
