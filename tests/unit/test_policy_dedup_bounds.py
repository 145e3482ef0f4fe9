"""Idempotency keys (within a batch too, and the dedup window) and max_pending."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from dispatchd.engine import (
    Engine,
    EngineLimits,
    EngineObserver,
    InvalidArgument,
    JobFailure,
    JobRecord,
    JobState,
    NewJob,
    ResourceExhausted,
)
from dispatchd.engine.limits import SUBMITTER_HEADER

from .engine_helpers import Connect, Pump, ok


class SubmitLog(EngineObserver):
    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def jobs_submitted(self, jobs: Sequence[JobRecord]) -> None:
        self.batches.append([j.id for j in jobs])


@pytest.fixture
def log(engine: Engine) -> SubmitLog:
    engine.observer = SubmitLog()
    assert isinstance(engine.observer, SubmitLog)
    return engine.observer


def keyed(key: str, queue: str = "q", payload: bytes = b"") -> NewJob:
    return NewJob(queue, payload=payload, idempotency_key=key)


def all_ids(engine: Engine, queue: str = "q") -> list[str]:
    jobs, _ = engine.list_jobs(queue, JobState.UNSPECIFIED, 1000, "")
    return [j.id for j in jobs]


# ---- idempotency ----------------------------------------------------------------------


def test_second_submit_returns_the_existing_job(engine: Engine, log: SubmitLog) -> None:
    [(first, rep1)] = engine.submit_many([keyed("order-1", payload=b"a")], 0.0)
    [(second, rep2)] = engine.submit_many([keyed("order-1", payload=b"other")], 1.0)
    assert (rep1, rep2) == (False, True)
    assert second is first
    assert second.payload == b"a"
    assert engine.get_queue("q").pending_count == 1
    assert log.batches == [[first.id]]  # nothing new announced


def test_repeated_key_within_one_batch(engine: Engine, log: SubmitLog) -> None:
    out = engine.submit_many([keyed("a"), keyed("a"), keyed("b"), keyed("a"), NewJob("q")], 0.0)
    flags = [repeated for _, repeated in out]
    jobs = [job for job, _ in out]
    assert flags == [False, True, False, True, False]
    assert jobs[0] is jobs[1] is jobs[3]
    assert len({j.id for j in jobs}) == 3
    assert engine.get_queue("q").pending_count == 3
    assert log.batches == [[jobs[0].id, jobs[2].id, jobs[4].id]]


def test_batch_mixes_known_and_new_keys(engine: Engine) -> None:
    [old] = engine.submit([keyed("a")], 0.0)
    out = engine.submit_many([keyed("b"), keyed("a"), keyed("b")], 1.0)
    assert [r for _, r in out] == [False, True, True]
    assert out[1][0] is old
    assert out[0][0] is out[2][0]


def test_keys_are_per_queue(engine: Engine) -> None:
    a, b = engine.submit([keyed("k", "a"), keyed("k", "b")], 0.0)
    assert a.id != b.id


def stamped(key: str, submitter: str, payload: bytes = b"") -> NewJob:
    """A job as the auth interceptor hands it over: stamped with its submitter."""
    return NewJob("q", payload=payload, headers={SUBMITTER_HEADER: submitter}, idempotency_key=key)


def test_keys_are_per_submitter_when_jobs_are_stamped(engine: Engine) -> None:
    [(a, _)] = engine.submit_many([stamped("k", "tenant-a", b"a")], 0.0)
    [(b, dup)] = engine.submit_many([stamped("k", "tenant-b", b"b")], 1.0)
    assert not dup
    assert b.id != a.id
    assert b.payload == b"b"
    [(again, dup)] = engine.submit_many([stamped("k", "tenant-a")], 2.0)
    assert dup
    assert again.id == a.id
    # An unstamped submit (auth off) has its own name for the key too.
    [(plain, dup)] = engine.submit_many([keyed("k")], 3.0)
    assert not dup
    assert plain.id not in (a.id, b.id)


@pytest.mark.parametrize("limits", [EngineLimits(finished_retention_seconds=10.0)])
def test_a_stamped_key_is_forgotten_with_its_job(
    engine: Engine, connect: Connect, pump: Pump
) -> None:
    [job] = engine.submit([stamped("k", "tenant-a")], 0.0)
    connect()
    [lease] = pump(0.0)
    ok(engine, lease, 1.0)
    engine.tick(12.0)  # evicted: its key goes with it
    [(fresh, dup)] = engine.submit_many([stamped("k", "tenant-a")], 12.0)
    assert not dup
    assert fresh.id != job.id


def test_restored_jobs_keep_their_submitters_keys(engine: Engine) -> None:
    [a] = engine.submit([stamped("k", "tenant-a")], 0.0)
    restored = Engine(rng=random.Random(1))
    restored.restore([], engine.unfinished_jobs(), 1.0)
    [(again, dup)] = restored.submit_many([stamped("k", "tenant-a")], 2.0)
    assert dup
    assert again.id == a.id
    [(other, dup)] = restored.submit_many([stamped("k", "tenant-b")], 2.0)
    assert not dup
    assert other.id != a.id


def test_empty_key_never_deduplicates(engine: Engine) -> None:
    out = engine.submit_many([NewJob("q"), NewJob("q")], 0.0)
    assert [r for _, r in out] == [False, False]


def test_key_too_long_is_refused(engine: Engine) -> None:
    with pytest.raises(InvalidArgument, match="idempotency_key"):
        engine.submit([keyed("x" * 257)], 0.0)


@pytest.mark.parametrize("phase", ["pending", "scheduled", "underway", "succeeded", "failed"])
def test_key_is_known_while_the_job_is(
    engine: Engine, connect: Connect, pump: Pump, phase: str
) -> None:
    not_before = 100.0 if phase == "scheduled" else None
    [job] = engine.submit([NewJob("q", idempotency_key="k", not_before=not_before)], 0.0)
    if phase in ("underway", "succeeded", "failed"):
        connect()
        [lease] = pump(0.0)
        if phase == "succeeded":
            ok(engine, lease, 1.0)
        elif phase == "failed":
            engine.complete(lease.worker, job.id, lease.lease_id, JobFailure("x"), 1.0)
    [(again, repeated)] = engine.submit_many([keyed("k")], 2.0)
    assert repeated
    assert again.id == job.id
    assert again.state is engine.get_job(job.id).state


def finished_at(engine: Engine, connect: Connect, pump: Pump, t: float) -> str:
    [job] = engine.submit([keyed("k")], 0.0)
    connect()
    [lease] = pump(0.0)
    ok(engine, lease, t)
    return job.id


def test_dedup_window_after_finish(engine: Engine, connect: Connect, pump: Pump) -> None:
    engine.update_queue("q", dedup_window=10.0, create=True)
    first = finished_at(engine, connect, pump, 5.0)
    [(job, repeated)] = engine.submit_many([keyed("k")], 15.0)  # window edge: still known
    assert repeated
    assert job.id == first
    [(job, repeated)] = engine.submit_many([keyed("k")], 15.001)
    assert not repeated
    assert job.id != first
    # The new job now owns the key.
    [(again, repeated)] = engine.submit_many([keyed("k")], 16.0)
    assert repeated
    assert again is job


def test_dedup_window_change_applies_to_known_keys(
    engine: Engine, connect: Connect, pump: Pump
) -> None:
    first = finished_at(engine, connect, pump, 5.0)
    [(job, repeated)] = engine.submit_many([keyed("k")], 5000.0)  # default: one day
    assert repeated
    assert job.id == first
    engine.update_queue("q", dedup_window=60.0)
    [(job, repeated)] = engine.submit_many([keyed("k")], 5000.0)
    assert not repeated


@pytest.mark.parametrize("limits", [EngineLimits(finished_retention_seconds=10.0)])
def test_evicted_job_no_longer_deduplicates(engine: Engine, connect: Connect, pump: Pump) -> None:
    first = finished_at(engine, connect, pump, 1.0)
    engine.tick(12.0)
    [(job, repeated)] = engine.submit_many([keyed("k")], 12.0)
    assert not repeated
    assert job.id != first


def test_purged_job_no_longer_deduplicates(engine: Engine, connect: Connect, pump: Pump) -> None:
    first = finished_at(engine, connect, pump, 1.0)
    assert engine.purge("q", JobState.SUCCEEDED) == 1
    [(job, repeated)] = engine.submit_many([keyed("k")], 2.0)
    assert not repeated
    assert job.id != first


def test_dedup_window_validation(engine: Engine) -> None:
    engine.update_queue("q", dedup_window=30.0, create=True)
    for bad in (-1.0, 8 * 86_400.0, 30):  # an int is not a duration here
        with pytest.raises(InvalidArgument):
            engine.update_queue("q", dedup_window=bad, width=1)
    s = engine.get_queue("q").settings
    assert (s.dedup_window, s.width) == (30.0, 10)


# ---- max_pending --------------------------------------------------------------------------


def test_submit_over_max_pending_is_refused_with_queue_and_bound(
    engine: Engine, log: SubmitLog
) -> None:
    engine.update_queue("jobs", max_pending=3, create=True)
    engine.submit([NewJob("jobs")] * 3, 0.0)
    with pytest.raises(ResourceExhausted) as info:
        engine.submit([NewJob("jobs")], 0.0)
    message = str(info.value)
    assert "'jobs'" in message
    assert "max_pending of 3" in message
    assert engine.get_queue("jobs").pending_count == 3
    assert len(log.batches) == 1


def test_no_partial_batch(engine: Engine, log: SubmitLog) -> None:
    engine.update_queue("q", max_pending=5, create=True)
    engine.submit([NewJob("q")] * 3, 0.0)
    before = all_ids(engine)
    with pytest.raises(ResourceExhausted):
        engine.submit([NewJob("q", payload=b"%d" % i) for i in range(3)], 1.0)
    assert all_ids(engine) == before
    assert len(log.batches) == 1
    assert len(engine.submit([NewJob("q")] * 2, 1.0)) == 2  # exactly up to the bound


def test_no_partial_batch_across_queues(engine: Engine) -> None:
    engine.update_queue("small", max_pending=1, create=True)
    with pytest.raises(ResourceExhausted, match="small"):
        engine.submit([NewJob("big"), NewJob("big"), NewJob("small"), NewJob("small")], 0.0)
    assert [q.name for q in engine.list_queues()] == ["small"]  # "big" was not even created
    assert engine.get_queue("small").pending_count == 0


def test_no_partial_batch_keeps_keys_unclaimed(engine: Engine) -> None:
    engine.update_queue("q", max_pending=1, create=True)
    with pytest.raises(ResourceExhausted):
        engine.submit([keyed("a"), keyed("b")], 0.0)
    [(job, repeated)] = engine.submit_many([keyed("b")], 0.0)
    assert not repeated
    assert all_ids(engine) == [job.id]


def test_repeats_do_not_count_toward_max_pending(engine: Engine) -> None:
    engine.update_queue("q", max_pending=3, create=True)
    engine.submit([keyed("a")], 0.0)
    out = engine.submit_many([keyed("a"), keyed("b"), keyed("b"), keyed("c"), keyed("c")], 0.0)
    assert [r for _, r in out] == [True, False, True, False, True]
    assert engine.get_queue("q").pending_count == 3
    [(job, repeated)] = engine.submit_many([keyed("b")], 0.0)  # full, but known: fine
    assert repeated
    assert job is out[1][0]


def test_underway_and_finished_jobs_do_not_count(
    engine: Engine, connect: Connect, pump: Pump
) -> None:
    engine.update_queue("q", max_pending=2, create=True)
    engine.submit([NewJob("q")] * 2, 0.0)
    connect(credits=1)
    [lease] = pump(0.0)
    engine.submit([NewJob("q")], 0.0)  # one pending + one new
    with pytest.raises(ResourceExhausted):
        engine.submit([NewJob("q")], 0.0)
    ok(engine, lease, 1.0)
    with pytest.raises(ResourceExhausted):
        engine.submit([NewJob("q")], 1.0)  # still two waiting
    pump(1.0)
    engine.submit([NewJob("q")], 1.0)


def test_lowering_max_pending_keeps_what_is_there(engine: Engine) -> None:
    engine.submit([NewJob("q")] * 5, 0.0)
    engine.update_queue("q", max_pending=2)
    assert engine.get_queue("q").pending_count == 5
    with pytest.raises(ResourceExhausted):
        engine.submit([NewJob("q")], 0.0)
    engine.update_queue("q", max_pending=0)  # no bound
    engine.submit([NewJob("q")] * 100, 0.0)


def test_max_pending_validation(engine: Engine) -> None:
    engine.update_queue("q", max_pending=4, create=True)
    for bad in (-1, 2_000_000_000, 4.0):
        with pytest.raises(InvalidArgument):
            engine.update_queue("q", max_pending=bad)
    assert engine.get_queue("q").settings.max_pending == 4


def test_random_batches_are_all_or_nothing(engine: Engine) -> None:
    rng = random.Random(5)
    engine.update_queue("q", max_pending=50, create=True)
    waiting = 0
    known: set[str] = set()  # cancelled jobs keep their keys too (within the window)
    for _ in range(200):
        batch = [keyed(f"k{rng.randrange(120)}") for _ in range(rng.randint(1, 8))]
        fresh = {s.idempotency_key for s in batch} - known
        if waiting + len(fresh) > 50:
            with pytest.raises(ResourceExhausted):
                engine.submit_many(batch, 0.0)
        else:
            out = engine.submit_many(batch, 0.0)
            assert sum(not r for _, r in out) == len(fresh)
            waiting += len(fresh)
            known |= fresh
        assert engine.get_queue("q").pending_count == waiting
        if rng.random() < 0.3 and waiting:
            pending, _ = engine.list_jobs("q", JobState.PENDING, 1000, "")
            engine.cancel(pending[rng.randrange(len(pending))].id, 0.0)
            waiting -= 1
