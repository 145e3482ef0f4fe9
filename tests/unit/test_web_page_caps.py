"""What one dashboard page renders is bounded, whatever the job holds: a job with 1,000
attempts, a 1 MiB result or a long error makes a page of a few dozen KiB that says how
much it left out."""

from __future__ import annotations

from dispatchd.engine import JobFailure, JobState
from dispatchd.engine.model import AttemptRecord, JobRecord, QueueSettings, QueueView
from dispatchd.web.pages import job_page, queue_page

PAGE_BOUND = 128 * 1024


def _job(attempts: int, result: bytes, error: str) -> JobRecord:
    failure = JobFailure(error, True, "E")
    return JobRecord(
        id="01JOB",
        queue="q",
        payload=b"p" * (1 << 20),
        priority=0,
        headers={f"h{i}": "v" * 200 for i in range(64)},
        content_type="",
        seq=1,
        submit_time=1.0,
        state=JobState.DEAD,
        attempt=attempts,
        result=result,
        error=failure,
        attempts=tuple(
            AttemptRecord(n, f"w{n}", 1.0, 2.0, failure) for n in range(1, attempts + 1)
        ),
    )


def test_a_job_page_is_bounded_and_says_what_it_left_out() -> None:
    page = job_page(_job(1000, b"r" * (1 << 20), "e" * 4096), "csrf").decode()
    assert len(page) < PAGE_BOUND
    assert "1000 attempts; the last 50 are shown" in page
    assert "<td>1000</td>" in page  # the newest attempt is among them
    assert "first 4096 of 1048576 bytes" in page  # the result
    assert "first 1024 of 4096 characters" in page  # the error


def test_dead_job_rows_cut_long_errors() -> None:
    page = queue_page(_queue(), [], "", [], [_job(1, b"", "e" * 4096)], "csrf").decode()
    dead = page[page.index("id=dead") :]
    assert "e" * 200 + " <em>(first 200 of 4096 characters)</em>" in dead
    assert "e" * 201 not in dead


def _queue() -> QueueView:
    return QueueView("q", QueueSettings(width=1), 0, 0, 0)
