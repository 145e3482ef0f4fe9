"""Journal rows back into engine records at start-up, a million times over.

Most stored jobs are plain pending ones: id, queue, state, submit time, maybe a priority,
headers, content type or keys. ``restored_job`` builds those straight from the fields the
status message holds (``ListFields``: one call that names only what is set) and takes the
payload as SQLite handed it over, instead of reading every field of the message one by one
and copying the payload into the message and out again (convert.job_from_pb, which cost
most of a start-up). Any other field set, one this fast path does not know included, goes
through convert.job_from_pb as before: both make the same record.
"""

from __future__ import annotations

from typing import Any

from dispatchd import convert
from dispatchd.engine.model import NO_HEADERS, JobRecord, JobState
from dispatchd_client.v1 import dispatcher_pb2 as pb

_PLAIN = (
    "id",
    "queue",
    "priority",
    "state",
    "headers",
    "attempt",
    "submit_time",
    "content_type",
    "ordering_key",
    "fairness_key",
    "idempotency_key",
)
# Each plain field's place in the values below, by its descriptor: ListFields hands back
# the same descriptor objects every time, so a dict lookup finds it without reading its
# name or number.
_PLACE = {pb.Job.DESCRIPTOR.fields_by_name[name]: i for i, name in enumerate(_PLAIN)}
_ZEROS = ("", "", 0, 0, None, 0, None, "", "", "", "")
_STATES = {int(s): s for s in JobState}


def restored_job(msg: pb.Job, payload: bytes) -> JobRecord:
    """The record of one journal row: its status message (without payload) and payload.
    The engine assigns the sequence number (as for convert.job_from_pb)."""
    values: list[Any] = list(_ZEROS)
    place = _PLACE.get
    for f, v in msg.ListFields():
        i = place(f)
        if i is None:  # anything else (a run, a policy, a workflow field): the full way
            msg.payload = payload
            return convert.job_from_pb(msg)
        values[i] = v
    job_id, queue, priority, state, headers, attempt, stamp, content_type, *keys = values
    ordering_key, fairness_key, idempotency_key = keys
    return JobRecord(
        id=job_id,
        queue=queue,
        payload=payload,
        priority=priority,
        headers=NO_HEADERS if headers is None else dict(headers.items()),
        content_type=content_type,
        seq=0,
        submit_time=0.0 if stamp is None else stamp.seconds + stamp.nanos / 1e9,
        state=_STATES.get(state, JobState.PENDING),
        attempt=attempt,
        ordering_key=ordering_key,
        fairness_key=fairness_key,
        idempotency_key=idempotency_key,
    )
