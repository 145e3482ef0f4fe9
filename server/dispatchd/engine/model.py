"""Records the engine keeps per job, lease and queue. Plain slotted classes: no protobuf."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dispatchd.engine.workers import WorkerRecord


class JobState(enum.IntEnum):
    """Mirrors dispatchd.v1.JobState numerically so the service converts with int()."""

    UNSPECIFIED = 0
    PENDING = 1
    UNDERWAY = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLED = 5

    @property
    def finished(self) -> bool:
        return self >= JobState.SUCCEEDED


FINISHED_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True, slots=True)
class NewJob:
    """What a producer asks for; validated by the engine before anything is admitted."""

    queue: str
    payload: bytes = b""
    priority: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = ""


@dataclass(frozen=True, slots=True)
class JobFailure:
    """An error a worker reported for one attempt."""

    message: str
    retryable: bool = True
    code: str = ""


@dataclass(slots=True, eq=False)
class JobRecord:
    """One job. The service reads these to build responses and must not mutate them."""

    id: str
    queue: str
    payload: bytes
    priority: int
    headers: dict[str, str]
    content_type: str
    seq: int
    submit_time: float
    state: JobState = JobState.PENDING
    attempt: int = 0
    dispatch_time: float | None = None
    first_dispatch_time: float | None = None
    finish_time: float | None = None
    result: bytes = b""
    error: JobFailure | None = None
    worker_id: str = ""
    lease: LeaseRecord | None = None
    finish_seq: int = 0

    @property
    def pending_key(self) -> tuple[int, int, str]:
        """Sort key in the pending index: higher priority first, then submit order."""
        return (-self.priority, self.seq, self.id)


@dataclass(slots=True, eq=False)
class LeaseRecord:
    """A delivery to a worker. Only the holder of lease_id may finish the job (fencing)."""

    lease_id: str
    job: JobRecord
    worker: WorkerRecord
    deadline: float
    dispatch_seq: int
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """A queue's live-changeable settings; persisted in the snapshot."""

    width: int
    paused: bool = False
    lease_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class QueueView:
    """A read-only picture of one queue for GetQueue/ListQueues."""

    name: str
    settings: QueueSettings
    pending_count: int
    underway_count: int
    worker_count: int


@dataclass(frozen=True, slots=True)
class Rejection:
    """A worker result that changed nothing, and why."""

    job_id: str
    lease_id: str
    reason: str
