"""The rules coalesced submits follow, shared by the asyncio and the threaded coalescer.

Both clients gather concurrent ``submit()`` calls into SubmitBatch round trips; they differ only
in how callers wait (futures on one event loop, or threads taking turns). What a batch may hold,
which request carries it, and how a refused batch is split so that only the culprit's caller
fails live here, once, so the two cannot drift apart.

SubmitBatch is all-or-nothing on the server, so a refused batch admitted nothing and may be
resent safely. :func:`culprit` reads the refusal's error details (never its message):

- a refusal whose field violation names ``jobs[i]`` (validation, payload cap): send
  ``jobs[:i]`` again as a batch (they passed validation), ``jobs[i]`` alone as a plain Submit
  (so its caller gets the exact error a lone submit would), and the rest again by the same
  rule -- in that order, so jobs of equal priority keep their call order;
- a refusal that depends on the jobs but names none (a queue's max_pending, a message over
  gRPC's size cap): resend every job alone, in call order;
- an error that says nothing about the jobs (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, auth,
  ...) goes to every caller of the batch, never retried: the batch may have been admitted, and
  a resend could enqueue the jobs twice.
"""

from __future__ import annotations

import re

import grpc

from dispatchd_client import _requests as rq
from dispatchd_client.errors import DispatchdError
from dispatchd_client.types import Job
from dispatchd_client.v1 import dispatcher_pb2 as pb

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_JOBS",
    "ONE_BY_ONE",
    "Metadata",
    "alone_call",
    "batch_call",
    "culprit",
    "miscounted",
    "own_copy",
]

#: Jobs per SubmitBatch. The server accepts 10,000; beyond a thousand the round trip is
#: already amortized and a bigger batch only delays its first caller.
MAX_BATCH_JOBS = 1_000
#: Payload bytes per SubmitBatch, well under the 64 MiB channel message cap.
MAX_BATCH_BYTES = 16 << 20
#: :func:`culprit`'s answer for a refusal that depends on the jobs but names none.
ONE_BY_ONE = -1
#: Refusals that depend on the jobs themselves: resending the others can succeed.
_PER_JOB_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
_JOB_FIELD = re.compile(r"jobs\[(\d+)\]")

Metadata = tuple[tuple[str, str], ...] | None


def batch_call(specs: list[pb.JobSpec], metadata: Metadata) -> rq.Rpc[list[Job]]:
    """The SubmitBatch carrying coalesced jobs; ``metadata`` is the first caller's (each job
    keeps its own caller's trace context in its headers)."""
    return rq.Rpc(
        "SubmitBatch",
        pb.SubmitBatchRequest(jobs=specs),
        rq.parse_submitted_batch,
        metadata=metadata,
    )


def alone_call(spec: pb.JobSpec, metadata: Metadata) -> rq.Rpc[Job]:
    """The plain Submit for one job: a batch of one, or a culprit resent on its own."""
    return rq.Rpc("Submit", pb.SubmitRequest(job=spec), rq.parse_submitted, metadata=metadata)


def culprit(error: DispatchdError, size: int) -> int | None:
    """How to settle a batch of ``size`` jobs refused with ``error``: the index of the job it
    names, :data:`ONE_BY_ONE` to resend every job alone, or None to fail every caller."""
    if error.code not in _PER_JOB_CODES:
        return None
    for field, _ in error.field_violations:
        match = _JOB_FIELD.match(field)
        if match:
            index = int(match.group(1))
            return index if 0 <= index < size else ONE_BY_ONE
    return ONE_BY_ONE


def own_copy(error: DispatchdError) -> DispatchdError:
    """A copy of a batch-wide error for one of its callers, so tracebacks do not pile up on
    one shared exception object."""
    own = error.copy()
    own.__cause__ = error.__cause__
    return own


def miscounted(sent: int, answered: int) -> DispatchdError:
    """What every caller of a batch gets when the answer does not hold one job per job sent
    (a broken server or proxy): which jobs were admitted is unknown."""
    return DispatchdError(
        grpc.StatusCode.INTERNAL,
        f"SubmitBatch of {sent} jobs was answered with {answered}; "
        "these jobs may or may not have been admitted",
    )
