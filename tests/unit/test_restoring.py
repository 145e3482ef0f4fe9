"""embedded/restoring.py builds a journal row's record on a fast path for plain jobs: it
must make exactly the record convert.job_from_pb makes, for plain jobs and for every
other kind (which it hands to job_from_pb)."""

from __future__ import annotations

from dataclasses import astuple

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from dispatchd import convert
from dispatchd.embedded.restoring import restored_job
from dispatchd.engine.model import NO_HEADERS
from dispatchd_client.v1 import dispatcher_pb2 as pb

ID = "01JAAAAAAAAAAAAAAAAAAAAAAA"
PAYLOAD = b"\x00payload\xff" * 10


def _stamp(ns: int) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(ns)
    return t


PLAIN = [
    pb.Job(id=ID, queue="q", state=pb.JOB_STATE_PENDING, submit_time=_stamp(1_700_000_000_123)),
    pb.Job(
        id=ID,
        queue="q",
        priority=-7,
        state=pb.JOB_STATE_UNDERWAY,
        headers={"traceparent": "00-ab", "k": "v"},
        attempt=3,
        submit_time=_stamp(1_700_000_000_999_999_999),
        content_type="application/json",
        ordering_key="o",
        fairness_key="f",
        idempotency_key="i",
    ),
    pb.Job(id=ID, queue="q"),  # no state, no submit time: what job_from_pb makes of it
    pb.Job(id=ID, queue="q", state=99),  # type: ignore[arg-type]  # a state it does not know
]
FULL = [
    pb.Job(id=ID, queue="q", state=pb.JOB_STATE_PENDING, worker_id="w", result=b"r"),
    pb.Job(id=ID, queue="q", dispatch_time=_stamp(5), first_dispatch_time=_stamp(4)),
    pb.Job(id=ID, queue="q", not_before=_stamp(9), expire_time=_stamp(10)),
    pb.Job(id=ID, queue="q", error=pb.JobError(message="m", retryable=True, code="c")),
    pb.Job(
        id=ID,
        queue="q",
        retry_policy=pb.RetryPolicy(max_attempts=4, min_backoff=Duration(seconds=2)),
    ),
    pb.Job(
        id=ID,
        queue="q",
        attempts=[pb.Attempt(number=1, worker_id="w", http_status=503)],
        throttle_count=2,
    ),
    pb.Job(
        id=ID,
        queue="q",
        state=pb.JOB_STATE_WAITING,
        batch_id="b",
        parent_ids=["p1", "p2"],
        run_after_failed_parents=True,
        cancel_reason="why",
        progress_dropped_count=3,
        progress=pb.JobProgress(percent=50, message="half", report_time=_stamp(7)),
    ),
]


@pytest.mark.parametrize("status", PLAIN + FULL)
def test_the_record_is_the_one_job_from_pb_makes(status: pb.Job) -> None:
    with_payload = pb.Job()
    with_payload.CopyFrom(status)
    with_payload.payload = PAYLOAD
    expected = convert.job_from_pb(with_payload)
    got = restored_job(status, PAYLOAD)
    assert astuple(got) == astuple(expected)
    assert type(got.state) is type(expected.state)


@pytest.mark.parametrize("status", PLAIN)
def test_a_plain_job_keeps_the_payload_object_and_shares_empty_headers(status: pb.Job) -> None:
    got = restored_job(status, PAYLOAD)
    assert got.payload is PAYLOAD
    assert (got.headers is NO_HEADERS) == (not status.headers)
