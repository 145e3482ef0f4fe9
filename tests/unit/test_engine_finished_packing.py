"""The packed form of finished jobs: a round trip keeps every field, and CPython's
collector stops tracking it at its first pass (a full collection over 100,000 finished
jobs still tracked was the dispatch latency's p99)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from dispatchd.engine import JobState
from dispatchd.engine.model import AttemptRecord, FinishedJob, JobFailure
from dispatchd.engine.policies import RetryPolicy


def _finished(headers: dict[str, str], attempts: int, policy: RetryPolicy | None) -> FinishedJob:
    tries = tuple(
        AttemptRecord(
            n + 1,
            f"w-{n}",
            10.0 + n,
            11.0 + n,
            JobFailure("boom", True, "E", 2.5) if n < attempts - 1 else None,
            503 if n == 0 else 0,
            0.25 if n == 0 else None,
        )
        for n in range(attempts)
    )
    last_error = JobFailure("boom", False, "E") if attempts > 1 else None
    return FinishedJob(
        "01JOB", "q", b"payload", 3, headers, "text/plain", 1.0, int(JobState.SUCCEEDED),
        attempts, 10.0, 10.0, 12.0, b"out", last_error, "w-0", 77, None, None, "",
        "key", "idem", policy, tries, 1, "batch", ("p1",), True, (50, "half", 11.5), 2, "",
    )  # fmt: skip


@pytest.fixture
def collector_paused() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("attempts", [1, 3])
@pytest.mark.parametrize("headers", [{}, {"a": "1", "b": "2"}])
def test_round_trip_keeps_every_field(headers: dict[str, str], attempts: int) -> None:
    job = _finished(headers, attempts, RetryPolicy(max_attempts=5) if attempts > 1 else None)
    assert FinishedJob.unpack(job.pack()) == job
    _, _, state, finish_time, finish_seq, key = FinishedJob.index_fields(job.pack())
    assert (state, finish_time, finish_seq) == (int(JobState.SUCCEEDED), 12.0, 77)
    assert key  # the dedup name, read from the packed headers


def test_a_plain_finished_job_is_untracked_by_one_young_collection(
    collector_paused: None,
) -> None:
    job = _finished({}, 1, None)
    kept = [job._replace(id=f"j{i}").pack() for i in range(1_000)]
    gc.collect(0)
    assert not any(gc.is_tracked(p) for p in kept)


def test_a_retried_job_with_headers_is_untracked_by_two_collections(
    collector_paused: None,
) -> None:
    job = _finished({"a": "1"}, 3, RetryPolicy(max_attempts=5))
    kept = [job._replace(id=f"j{i}").pack() for i in range(1_000)]
    gc.collect(0)
    gc.collect(1)
    assert not any(gc.is_tracked(p) for p in kept)
