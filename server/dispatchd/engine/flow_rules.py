"""The rules of workflows, shared by both backends: progress reports, batches and dependencies
(docs/workflows.md). The Redis backend makes the same decisions in lua/progress.lua,
lua/batch.lua and lua/includes/flows.lua, with the same rules and words (this module's
checks and texts are shared by both).

Rules both backends keep:

- Progress: a worker reports on a lease it holds; a report within PROGRESS_INTERVAL of the
  job's last stored one is dropped (counted on the job): a chatty worker costs one write
  per job per interval at most. Progress is advisory and not journaled on its own (the
  next journaled change of the job carries it).
- Batches live in one queue (a Redis hash tag): their jobs and their callback jobs are of
  that queue, so the transition that finishes the last job and the callback submission are
  one decision (one engine call here, one script on Redis) — exactly once. Counts: total,
  active (not final), and one count per final state.
- Dependencies: parents are jobs of the same queue that exist when the child is submitted
  (a cycle cannot be built: a job's parents are older than it). The child is WAITING (no
  index, no width) until every parent succeeded; a parent that ends otherwise cancels it
  (and so its own children), unless ``run_after_failed_parents``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from dispatchd.engine.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Reason,
)
from dispatchd.engine.model import JobState, NewJob

#: Seconds between two stored progress reports of one job; reports in between are dropped.
PROGRESS_INTERVAL = 0.2
MAX_PROGRESS_MESSAGE = 1_000
MAX_PARENTS = 100
MAX_BATCH_DESCRIPTION = 1_000
BATCH_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Headers a callback job carries: the batch id and its counts when it completed.
BATCH_HEADER = "dispatchd-batch-id"
COUNT_HEADER = "dispatchd-batch-"  # + total, succeeded, failed, cancelled, expired, dead
#: Why a child was cancelled, for Job.cancel_reason (both backends say it so).
PARENT_FAILED = "parent {parent} ended {state}"
BATCH_CANCELLED = "its batch {batch} was cancelled"
_FINAL_COUNTS = (
    ("succeeded", JobState.SUCCEEDED),
    ("failed", JobState.FAILED),
    ("cancelled", JobState.CANCELLED),
    ("expired", JobState.EXPIRED),
    ("dead", JobState.DEAD),
)


class BatchView(NamedTuple):
    """A batch as both backends hand it to the service layer."""

    queue: str
    batch_id: str
    description: str
    closed: bool
    create_time: float
    complete_time: float | None
    on_success: NewJob | None
    on_complete: NewJob | None
    on_success_job_id: str
    on_complete_job_id: str
    total: int
    active: int
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    dead: int = 0

    @property
    def complete(self) -> bool:
        return self.closed and self.active == 0


@dataclass(slots=True, eq=False)
class BatchRecord:
    queue: str
    batch_id: str
    description: str
    create_time: float
    on_success: NewJob | None = None
    on_complete: NewJob | None = None
    closed: bool = False
    complete_time: float | None = None
    on_success_job_id: str = ""
    on_complete_job_id: str = ""
    total: int = 0
    finals: dict[JobState, int] = field(default_factory=dict)
    live: set[str] = field(default_factory=set)

    def view(self) -> BatchView:
        f = self.finals
        return BatchView(
            self.queue,
            self.batch_id,
            self.description,
            self.closed,
            self.create_time,
            self.complete_time,
            self.on_success,
            self.on_complete,
            self.on_success_job_id,
            self.on_complete_job_id,
            self.total,
            len(self.live),
            *(f.get(state, 0) for _, state in _FINAL_COUNTS),
        )


def callback_headers(view: BatchView) -> dict[str, str]:
    """What a callback job carries besides its own headers (docs/workflows.md)."""
    counts = dict(
        zip(("succeeded", "failed", "cancelled", "expired", "dead"), view[12:], strict=True)
    )
    out = {BATCH_HEADER: view.batch_id, COUNT_HEADER + "total": str(view.total)}
    out.update({COUNT_HEADER + name: str(n) for name, n in counts.items()})
    return out


# ---- checks shared by both backends ---------------------------------------------------


def check_progress(percent: int | None, message: str) -> None:
    if percent is not None and not 0 <= percent <= 100:
        raise InvalidArgument(f"percent must be 0-100, got {percent}", field="percent")
    if len(message) > MAX_PROGRESS_MESSAGE:
        raise InvalidArgument(
            f"progress message of {len(message)} characters exceeds {MAX_PROGRESS_MESSAGE}",
            field="message",
        )


def check_batch_id(batch_id: str, what: str = "batch_id") -> None:
    if not BATCH_ID.fullmatch(batch_id):
        raise InvalidArgument(
            f"{what} must be 1-128 characters of [A-Za-z0-9._:-], got {batch_id[:140]!r}",
            field=what,
        )


def check_flow_fields(specs: Sequence[NewJob], job_id_check: object = None) -> None:
    """The shape of every job's batch id and parents (what exists is checked later)."""
    for i, spec in enumerate(specs):
        if not spec.batch_id and not spec.parent_ids:
            continue  # most jobs: nothing to check (this runs for every submitted job)
        try:
            if spec.batch_id:
                check_batch_id(spec.batch_id)
            if len(spec.parent_ids) > MAX_PARENTS:
                raise InvalidArgument(
                    f"at most {MAX_PARENTS} parent_ids, got {len(spec.parent_ids)}",
                    field="parent_ids",
                )
            if len(set(spec.parent_ids)) != len(spec.parent_ids):
                raise InvalidArgument("parent_ids name a job twice", field="parent_ids")
        except InvalidArgument as e:
            where = f"jobs[{i}]" if len(specs) > 1 else ""
            raise (e.under(where, label=True) if where else e) from None


def check_callback(spec: NewJob, queue: str, what: str) -> None:
    """A callback is an ordinary job of the batch's queue, submitted when the batch
    completes: no times (they would count from CreateBatch), no key, batch or parents."""
    if spec.queue != queue:
        raise InvalidArgument(
            f"{what}.queue must be the batch's queue {queue!r} (or empty), got {spec.queue!r}",
            field=f"{what}.queue",
        )
    for name, bad in (
        ("not_before", spec.not_before is not None),
        ("expire_at", spec.expire_at is not None),
        ("idempotency_key", bool(spec.idempotency_key)),
        ("batch_id", bool(spec.batch_id)),
        ("parent_ids", bool(spec.parent_ids)),
    ):
        if bad:
            raise InvalidArgument(
                f"{what} may not set {name}: it is submitted when the batch completes",
                field=f"{what}.{name}",
            )


def check_description(description: str) -> None:
    if len(description) > MAX_BATCH_DESCRIPTION:
        raise InvalidArgument(
            f"description of {len(description)} characters exceeds {MAX_BATCH_DESCRIPTION}",
            field="description",
        )


def batch_not_found(queue: str, batch_id: str) -> NotFound:
    return NotFound(
        f"queue {queue!r} has no batch {batch_id!r}",
        reason=Reason.BATCH_NOT_FOUND,
        metadata={"queue": queue, "batch_id": batch_id},
    )


def batch_exists(queue: str, batch_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"queue {queue!r} has a batch {batch_id!r} already",
        reason=Reason.BATCH_EXISTS,
        metadata={"queue": queue, "batch_id": batch_id},
    )


def batch_closed(queue: str, batch_id: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"batch {batch_id!r} of queue {queue!r} is closed: it takes no new jobs",
        reason=Reason.BATCH_CLOSED,
        metadata={"queue": queue, "batch_id": batch_id},
    )


def parent_not_found(parent: str, queue: str, why: str) -> NotFound:
    return NotFound(
        f"parent job {parent!r} {why}; parents must be known jobs of the same queue ({queue!r})",
        field="parent_ids",
        reason=Reason.PARENT_NOT_FOUND,
        metadata={"parent_id": parent, "queue": queue},
    )
