"""WatchEvents as an iterator (docs/workflows.md): job lifecycle events as they happen.

    async for item in client.watch(queues=["emails"]):
        if isinstance(item, EventsMissed):
            log.warning("missed events: %s", item.message)
        else:
            print(item.kind.name, item.job_id)

The iterator follows the stream's resume tokens: when the stream breaks (a server restart,
a network blip) it reconnects with the last token it saw, so within the server's window
nothing is missed; beyond it the server says so with an :class:`EventsMissed`, which the
iterator passes on. ``item.resume_token`` lets a later run go on where this one stopped.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass

from dispatchd_client.types import BatchCounts, JobError, JobProgress, _time
from dispatchd_client.v1 import dispatcher_pb2 as pb

__all__ = ["EventKind", "EventsMissed", "JobEvent", "watch_request"]


class EventKind(enum.IntEnum):
    """What happened; values equal the proto ``JobEventKind`` numbers."""

    UNSPECIFIED = 0
    SUBMITTED = 1
    DISPATCHED = 2
    PROGRESS = 3
    SUCCEEDED = 4
    FAILED = 5
    RETRIED = 6
    DEAD = 7
    EXPIRED = 8
    CANCELLED = 9
    BATCH_COMPLETE = 10
    REQUEUED = 11

    @classmethod
    def _missing_(cls, value: object) -> EventKind | None:
        return cls.UNSPECIFIED if isinstance(value, int) else None


@dataclass(frozen=True, kw_only=True)
class JobEvent:
    resume_token: str
    kind: EventKind
    time: datetime.datetime | None
    queue: str
    job_id: str = ""
    batch_id: str = ""
    attempt: int = 0
    worker_id: str = ""
    progress: JobProgress | None = None
    error: JobError | None = None
    batch_counts: BatchCounts | None = None

    @classmethod
    def from_proto(cls, e: pb.JobEvent) -> JobEvent:
        return cls(
            resume_token=e.resume_token,
            kind=EventKind(e.kind),
            time=_time(e, "time"),
            queue=e.queue,
            job_id=e.job_id,
            batch_id=e.batch_id,
            attempt=e.attempt,
            worker_id=e.worker_id,
            progress=JobProgress.from_proto(e.progress) if e.HasField("progress") else None,
            error=JobError.from_proto(e.error) if e.HasField("error") else None,
            batch_counts=(
                BatchCounts.from_proto(e.batch_counts) if e.HasField("batch_counts") else None
            ),
        )


@dataclass(frozen=True)
class EventsMissed:
    """Events this watch will not see: ``reason`` RESUME_TOO_OLD or FELL_BEHIND."""

    reason: str
    resume_token: str
    message: str


def watch_request(
    queues: tuple[str, ...],
    job_ids: tuple[str, ...],
    batch_ids: tuple[str, ...],
    kinds: tuple[EventKind, ...],
    resume_token: str,
) -> pb.WatchEventsRequest:
    return pb.WatchEventsRequest(
        queues=queues,
        job_ids=job_ids,
        batch_ids=batch_ids,
        kinds=[int(k) for k in kinds],  # type: ignore[misc]
        resume_token=resume_token,
    )


def item_of(resp: pb.WatchEventsResponse) -> JobEvent | EventsMissed:
    if resp.WhichOneof("kind") == "missed":
        m = resp.missed
        return EventsMissed(m.reason, m.resume_token, m.message)
    return JobEvent.from_proto(resp.event)
