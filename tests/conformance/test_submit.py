"""Submitting: all of a batch or none (bad input, max_pending), idempotency keys (within a
batch, across submits, the dedup window), and queues created on first use."""

from __future__ import annotations

import random

import pytest

from dispatchd.engine import (
    EngineLimits,
    InvalidArgument,
    JobState,
    NewJob,
    ResourceExhausted,
    Unavailable,
)
from tests.conformance.harness import Driver


def keyed(key: str, queue: str = "q", payload: bytes = b"") -> NewJob:
    return NewJob(queue, payload=payload, idempotency_key=key)


async def test_a_submitted_job_waits_with_what_it_was_given(driver: Driver) -> None:
    spec = NewJob("q", b"payload", 3, {"h": "v"}, "text/plain")
    [(job, repeated)] = await driver.submit_many([spec])
    assert not repeated
    seen = await driver.job(job.id)
    assert (seen.state, seen.queue, seen.payload, seen.priority) == (
        JobState.PENDING,
        "q",
        b"payload",
        3,
    )
    assert (seen.headers, seen.content_type, seen.attempt) == ({"h": "v"}, "text/plain", 0)
    assert seen.submit_time == driver.clock.now


async def test_a_queue_is_created_on_first_use_with_the_default_settings(driver: Driver) -> None:
    await driver.add("fresh")
    view = await driver.queue("fresh")
    assert (view.settings.width, view.settings.lease_seconds, view.settings.paused) == (
        10,
        30.0,
        False,
    )
    await driver.add("a")
    assert [v.name for v in await driver.backend.list_queues()] == ["a", "fresh"]


async def test_one_bad_job_admits_none_of_the_batch(driver: Driver) -> None:
    with pytest.raises(InvalidArgument, match=r"jobs\[1\]"):
        await driver.backend.submit([NewJob("q"), NewJob("bad name"), NewJob("q")])
    with pytest.raises(InvalidArgument):
        await driver.backend.submit([])
    assert await driver.backend.list_queues() == []


@pytest.mark.parametrize("limits", [EngineLimits(max_payload_bytes=8)])
async def test_a_payload_over_the_cap_is_refused(driver: Driver) -> None:
    await driver.add(payload=b"x" * 8)
    with pytest.raises(ResourceExhausted, match="payload is 9 bytes"):
        await driver.backend.submit([NewJob("q", b"x" * 9)])
    assert await driver.counts() == (1, 0, 0)


# ---- idempotency ---------------------------------------------------------------------------


async def test_a_repeated_key_returns_the_existing_job(driver: Driver) -> None:
    [(first, rep1)] = await driver.submit_many([keyed("order-1", payload=b"a")])
    driver.clock.advance(1.0)
    [(second, rep2)] = await driver.submit_many([keyed("order-1", payload=b"other")])
    assert (rep1, rep2) == (False, True)
    assert second.id == first.id
    assert (await driver.job(first.id)).payload == b"a"
    assert await driver.counts() == (1, 0, 0)


async def test_a_key_repeated_within_one_batch(driver: Driver) -> None:
    out = await driver.submit_many([keyed("a"), keyed("a"), keyed("b"), keyed("a"), NewJob("q")])
    assert [repeated for _, repeated in out] == [False, True, False, True, False]
    ids = [job.id for job, _ in out]
    assert ids[0] == ids[1] == ids[3]
    assert len(set(ids)) == 3
    assert await driver.counts() == (3, 0, 0)


async def test_a_batch_mixing_known_and_new_keys(driver: Driver) -> None:
    [old] = await driver.submit(keyed("a"))
    out = await driver.submit_many([keyed("b"), keyed("a"), keyed("b")])
    assert [r for _, r in out] == [False, True, True]
    assert out[1][0].id == old.id
    assert out[0][0].id == out[2][0].id


async def test_keys_are_per_queue_and_the_empty_key_never_repeats(driver: Driver) -> None:
    a, b = await driver.submit(keyed("k", "a"), keyed("k", "b"))
    assert a.id != b.id
    out = await driver.submit_many([NewJob("q"), NewJob("q")])
    assert [r for _, r in out] == [False, False]


@pytest.mark.parametrize("phase", ["pending", "scheduled", "underway", "succeeded", "failed"])
async def test_a_key_is_known_while_its_job_is(driver: Driver, phase: str) -> None:
    not_before = driver.at(100.0) if phase == "scheduled" else None
    [job] = await driver.submit(NewJob("q", idempotency_key="k", not_before=not_before))
    if phase in ("underway", "succeeded", "failed"):
        w = await driver.connect()
        if phase == "succeeded":
            await w.ok(w.oldest())
        elif phase == "failed":
            await w.fail(w.oldest())
    [(again, repeated)] = await driver.submit_many([keyed("k")])
    assert repeated
    assert again.id == job.id
    assert again.state is (await driver.state(job))


async def finished_at(driver: Driver, offset: float) -> str:
    [job] = await driver.submit(keyed("k"))
    w = await driver.connect()
    await driver.advance_to(offset)
    await w.ok(w.oldest())
    await w.disconnect()
    return job.id


async def test_a_key_is_remembered_for_the_dedup_window_after_its_job_finished(
    driver: Driver,
) -> None:
    await driver.update(dedup_window=10.0)
    first = await finished_at(driver, 5.0)
    driver.clock.now = driver.at(15.0)  # the window's edge: still known
    [(job, repeated)] = await driver.submit_many([keyed("k")])
    assert (job.id, repeated) == (first, True)
    driver.clock.now = driver.at(15.001)
    [(job, repeated)] = await driver.submit_many([keyed("k")])
    assert not repeated
    assert job.id != first
    [(again, repeated)] = await driver.submit_many([keyed("k")])  # the new job owns the key
    assert (again.id, repeated) == (job.id, True)


async def test_a_dedup_window_change_applies_to_keys_already_known(driver: Driver) -> None:
    first = await finished_at(driver, 5.0)
    driver.clock.now = driver.at(5000.0)  # the default window is a day
    [(job, repeated)] = await driver.submit_many([keyed("k")])
    assert (job.id, repeated) == (first, True)
    await driver.update(dedup_window=60.0)
    [(job, repeated)] = await driver.submit_many([keyed("k")])
    assert not repeated


async def test_a_purged_job_no_longer_holds_its_key(driver: Driver) -> None:
    first = await finished_at(driver, 1.0)
    assert await driver.backend.purge_jobs("q", JobState.SUCCEEDED) == 1
    [(job, repeated)] = await driver.submit_many([keyed("k")])
    assert not repeated
    assert job.id != first


# ---- max_pending ---------------------------------------------------------------------------


async def test_a_submit_over_max_pending_is_refused_naming_queue_and_bound(
    driver: Driver,
) -> None:
    await driver.update("jobs", max_pending=3)
    await driver.submit(*[NewJob("jobs")] * 3)
    with pytest.raises(ResourceExhausted) as refused:
        await driver.backend.submit([NewJob("jobs")])
    assert "'jobs'" in str(refused.value)
    assert "max_pending of 3" in str(refused.value)
    assert await driver.counts("jobs") == (3, 0, 0)


async def test_max_pending_admits_all_of_a_batch_or_none(driver: Driver) -> None:
    await driver.update(max_pending=5)
    await driver.submit(*[NewJob("q")] * 3)
    before = await driver.listed(JobState.UNSPECIFIED)
    with pytest.raises(ResourceExhausted):
        await driver.backend.submit([NewJob("q", b"%d" % i) for i in range(3)])
    assert await driver.listed(JobState.UNSPECIFIED) == before
    assert len(await driver.submit(*[NewJob("q")] * 2)) == 2  # exactly up to the bound


async def test_max_pending_admits_none_of_a_batch_across_queues(driver: Driver) -> None:
    if driver.name == "redis-cluster":
        pytest.skip("a Cluster admits a batch per slot: test_a_cluster_batch_fails_per_slot")
    await driver.update("small", max_pending=1)
    with pytest.raises(ResourceExhausted, match="small"):
        await driver.backend.submit(
            [NewJob("big"), NewJob("big"), NewJob("small"), NewJob("small")]
        )
    assert [q.name for q in await driver.backend.list_queues()] == ["small"]
    assert await driver.counts("small") == (0, 0, 0)


async def test_a_cluster_batch_fails_per_slot(driver: Driver) -> None:
    """On a Redis Cluster a batch over queues of several slots is one atomic script per
    slot: a part refused fails only its own jobs, and the error says which were admitted."""
    if driver.name != "redis-cluster":
        pytest.skip("one atomic batch on a single store: the test above")
    await driver.update("small", max_pending=1)
    with pytest.raises(ResourceExhausted, match=r"small.*jobs \[0, 2\] \(2 of them\)") as e:
        await driver.backend.submit(
            [NewJob("big"), NewJob("small"), NewJob("big"), NewJob("small"), NewJob("small")]
        )
    assert e.value.metadata["admitted"] == "2"
    assert await driver.counts("small") == (0, 0, 0)
    assert (await driver.counts("big"))[0] == 2
    # And when every part is admitted, the answer is in request order.
    jobs = await driver.backend.submit([NewJob(q) for q in ("c", "big", "d", "c", "e")])
    assert [j.queue for j, _ in jobs] == ["c", "big", "d", "c", "e"]


async def test_a_refused_batch_claims_none_of_its_keys(driver: Driver) -> None:
    await driver.update(max_pending=1)
    with pytest.raises(ResourceExhausted):
        await driver.backend.submit([keyed("a"), keyed("b")])
    [(job, repeated)] = await driver.submit_many([keyed("b")])
    assert not repeated
    assert await driver.listed(JobState.UNSPECIFIED) == [job.id]


async def test_repeats_do_not_count_toward_max_pending(driver: Driver) -> None:
    await driver.update(max_pending=3)
    await driver.submit(keyed("a"))
    out = await driver.submit_many([keyed("a"), keyed("b"), keyed("b"), keyed("c"), keyed("c")])
    assert [r for _, r in out] == [True, False, True, False, True]
    assert await driver.counts() == (3, 0, 0)
    [(job, repeated)] = await driver.submit_many([keyed("b")])  # full, but known: fine
    assert (job.id, repeated) == (out[1][0].id, True)


async def test_scheduled_jobs_count_toward_max_pending_underway_ones_do_not(
    driver: Driver,
) -> None:
    await driver.update(max_pending=2)
    await driver.add(not_before=driver.at(100.0))
    await driver.add()
    with pytest.raises(ResourceExhausted, match="max_pending"):
        await driver.backend.submit([NewJob("q", not_before=driver.at(50.0))])
    w = await driver.connect(credits=1)
    [lease] = w.take()  # the pending one is underway now
    await driver.add()
    with pytest.raises(ResourceExhausted):
        await driver.backend.submit([NewJob("q")])
    await w.ok(lease)
    await w.ok(w.oldest())
    await driver.add()


async def test_lowering_max_pending_keeps_what_is_there(driver: Driver) -> None:
    await driver.submit(*[NewJob("q")] * 5)
    await driver.update(max_pending=2)
    assert await driver.counts() == (5, 0, 0)
    with pytest.raises(ResourceExhausted):
        await driver.backend.submit([NewJob("q")])
    await driver.update(max_pending=0)  # no bound
    await driver.submit(*[NewJob("q")] * 50)


async def test_random_batches_under_max_pending_are_all_or_nothing(driver: Driver) -> None:
    rng = random.Random(5)
    await driver.update(max_pending=20)
    waiting = 0
    known: set[str] = set()
    for _ in range(60):
        batch = [keyed(f"k{rng.randrange(50)}") for _ in range(rng.randint(1, 6))]
        fresh = {s.idempotency_key for s in batch} - known
        if waiting + len(fresh) > 20:
            with pytest.raises(ResourceExhausted):
                await driver.backend.submit(batch)
        else:
            out = await driver.submit_many(batch)
            assert sum(not r for _, r in out) == len(fresh)
            waiting += len(fresh)
            known |= fresh
        assert (await driver.queue()).pending_count == waiting
        if rng.random() < 0.3 and waiting:
            pending = await driver.listed(JobState.PENDING)
            await driver.backend.cancel_job(pending[rng.randrange(len(pending))])
            waiting -= 1


async def test_a_draining_backend_refuses_submits(driver: Driver) -> None:
    await driver.add()
    await driver.backend.begin_drain(0.0)
    with pytest.raises(Unavailable):
        await driver.backend.submit([NewJob("q")])
