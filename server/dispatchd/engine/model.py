"""Records the engine keeps per job, lease and queue. Plain slotted classes: no protobuf."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

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
    SCHEDULED = 6
    EXPIRED = 7
    DEAD = 8

    @property
    def finished(self) -> bool:
        return self in _FINISHED


FINISHED_STATES = (
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.CANCELLED,
    JobState.EXPIRED,
    JobState.DEAD,
)
_FINISHED = frozenset(FINISHED_STATES)


@dataclass(frozen=True, slots=True)
class NewJob:
    """What a producer asks for; validated by the engine before anything is admitted."""

    queue: str
    payload: bytes = b""
    priority: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = ""


class JobFailure(NamedTuple):
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


class FinishedJob(NamedTuple):
    """A finished job, frozen. The engine stores it packed (see ``pack``) so that CPython's
    collector stops tracking it: the 100,000 finished jobs kept for GetJob then add
    nothing to the pause of a full collection (as JobRecords they added about 100 ms)."""

    id: str
    queue: str
    payload: bytes
    priority: int
    headers: dict[str, str]
    content_type: str
    submit_time: float
    state_code: int  # an int, not the enum member: an enum would keep the tuple tracked
    attempt: int
    dispatch_time: float | None
    first_dispatch_time: float | None
    finish_time: float
    result: bytes
    error: JobFailure | None
    worker_id: str
    finish_seq: int

    @property
    def state(self) -> JobState:
        return JobState(self.state_code)

    @property
    def lease(self) -> None:
        return None

    def pack(self) -> tuple[object, ...]:
        """The stored form: an exact tuple holding only atomic values and exact tuples,
        which CPython's collector untracks (a dict or a NamedTuple inside would keep it
        tracked, even an empty one)."""
        error = None if self.error is None else tuple(self.error)
        return (*self[:4], tuple(self.headers.items()), *self[5:13], error, *self[14:])

    @classmethod
    def unpack(cls, raw: tuple[object, ...]) -> FinishedJob:
        headers = dict(raw[4])  # type: ignore[call-overload]
        error = None if raw[13] is None else JobFailure(*raw[13])  # type: ignore[misc]
        return cls._make((*raw[:4], headers, *raw[5:13], error, *raw[14:]))

    @classmethod
    def of(cls, job: JobRecord, finish_time: float, finish_seq: int) -> FinishedJob:
        return cls(
            job.id,
            job.queue,
            job.payload,
            job.priority,
            job.headers,
            job.content_type,
            job.submit_time,
            int(job.state),
            job.attempt,
            job.dispatch_time,
            job.first_dispatch_time,
            finish_time,
            job.result,
            job.error,
            job.worker_id,
            finish_seq,
        )


JobView = JobRecord | FinishedJob
"""What read APIs return: a live job record or a finished job."""


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
