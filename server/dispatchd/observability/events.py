"""Job lifecycle events for WatchEvents (docs/workflows.md), as an observer of the engine.

The embedded backend's EventHub keeps the last RING_SIZE events in a ring, each numbered
(its sequence number, with the process's epoch, is its resume token). A watcher is a cursor
into that ring, not a buffer: it reads the events after its cursor at its own pace, so a
consumer that stops reading holds no memory of its own (gRPC's flow control stops the
writes; the ring is the only store, and it is bounded). When the ring overwrote events a
watcher had not read yet, the watcher is told (FELL_BEHIND, with the last token it got) and
goes on with the oldest event there is; a resume token older than the ring, or of another
process (a restart), is told as RESUME_TOO_OLD. The Redis backend keeps the same events in
a stream per queue (redis/events.py) with the same vocabulary.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from dispatchd.engine import EngineObserver, FinishedJob, JobFailure, JobRecord, JobState
from dispatchd.engine import limits as lim
from dispatchd.engine.errors import InvalidArgument
from dispatchd.engine.flow_rules import BatchView, check_batch_id
from dispatchd.engine.model import LeaseRecord, Progress

#: Events the embedded server keeps for resuming watchers: at 5,000 jobs/s and about four
#: events a job, the last 10 s or so; about 200 bytes each, some 40 MB at most.
RING_SIZE = 200_000
#: Events a watcher takes from the ring before it yields to the loop.
READ_BATCH = 1_000
RESUME_TOO_OLD = "RESUME_TOO_OLD"
FELL_BEHIND = "FELL_BEHIND"
MAX_FILTER_ITEMS = 1_000


class EventKind(enum.IntEnum):
    """Mirrors dispatchd.v1.JobEventKind numerically."""

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


FINAL_KINDS = {
    JobState.SUCCEEDED: EventKind.SUCCEEDED,
    JobState.FAILED: EventKind.FAILED,
    JobState.DEAD: EventKind.DEAD,
    JobState.EXPIRED: EventKind.EXPIRED,
    JobState.CANCELLED: EventKind.CANCELLED,
}


class Event(NamedTuple):
    token: str
    kind: EventKind
    time: float
    queue: str
    job_id: str
    batch_id: str = ""
    attempt: int = 0
    worker_id: str = ""
    progress: Progress | None = None
    error: JobFailure | None = None
    counts: tuple[int, ...] | None = None
    """BATCH_COMPLETE: total, active, succeeded, failed, cancelled, expired, dead."""


class Missed(NamedTuple):
    """Events this watcher will not get (see EventsMissed in the proto)."""

    reason: str
    resume_token: str
    message: str


@dataclass(frozen=True, slots=True)
class EventFilter:
    queues: frozenset[str] = frozenset()
    job_ids: frozenset[str] = frozenset()
    batch_ids: frozenset[str] = frozenset()
    kinds: frozenset[EventKind] = frozenset()

    @classmethod
    def of(
        cls,
        queues: Sequence[str],
        job_ids: Sequence[str],
        batch_ids: Sequence[str],
        kinds: Sequence[int],
    ) -> EventFilter:
        for what, items in (("queues", queues), ("job_ids", job_ids), ("batch_ids", batch_ids)):
            if len(items) > MAX_FILTER_ITEMS:
                raise InvalidArgument(
                    f"at most {MAX_FILTER_ITEMS} {what}, got {len(items)}", field=what
                )
        for i, q in enumerate(queues):
            lim.check_queue_name(q, f"queues[{i}]")
        for i, b in enumerate(batch_ids):
            check_batch_id(b, f"batch_ids[{i}]")
        known = set(EventKind._value2member_map_) - {0}
        for i, k in enumerate(kinds):
            if k not in known:
                raise InvalidArgument(f"unknown event kind {k}", field=f"kinds[{i}]")
        return cls(
            frozenset(queues),
            frozenset(job_ids),
            frozenset(batch_ids),
            frozenset(EventKind(k) for k in kinds),
        )

    def match(self, ev: Event) -> bool:
        return (
            (not self.queues or ev.queue in self.queues)
            and (not self.job_ids or ev.job_id in self.job_ids)
            and (not self.batch_ids or ev.batch_id in self.batch_ids)
            and (not self.kinds or ev.kind in self.kinds)
        )


def bad_token(token: str) -> InvalidArgument:
    return InvalidArgument(
        f"resume_token {token[:80]!r} is not a token this server made", field="resume_token"
    )


class EventHub(EngineObserver):
    """The embedded backend's event ring and its watchers."""

    def __init__(self, clock: Callable[[], float], size: int = RING_SIZE) -> None:
        self._clock = clock
        self._size = size
        # Raw tuples (seq, kind, time, queue, job id, batch id, attempt, worker, progress,
        # error, counts): an Event (with its token) is built only when a watcher reads it.
        self._slots: list[tuple[Any, ...] | None] = [None] * size
        self._seq = 0  # the latest event's number; event n is in slot n % size
        self.epoch = secrets.token_hex(4)
        self._wakers: set[asyncio.Event] = set()
        self.closed = False
        self.recording = False
        """Set by the backend when it adds the hub to its observers (the first watch)."""

    # ---- recording (engine observer) ----------------------------------------------

    def _emit(
        self,
        kind: EventKind,
        queue: str,
        job_id: str,
        batch_id: str = "",
        attempt: int = 0,
        worker_id: str = "",
        progress: Progress | None = None,
        error: JobFailure | None = None,
        counts: tuple[int, ...] | None = None,
    ) -> None:
        self._seq = seq = self._seq + 1
        self._slots[seq % self._size] = (
            seq,
            kind,
            self._clock(),
            queue,
            job_id,
            batch_id,
            attempt,
            worker_id,
            progress,
            error,
            counts,
        )
        if self._wakers:
            for wake in self._wakers:
                wake.set()

    def jobs_submitted(self, jobs: Sequence[JobRecord]) -> None:
        emit, kind = self._emit, EventKind.SUBMITTED
        for job in jobs:
            emit(kind, job.queue, job.id, job.batch_id)

    def job_dispatched(self, lease: LeaseRecord) -> None:
        job = lease.job
        self._emit(
            EventKind.DISPATCHED, job.queue, job.id, job.batch_id, job.attempt, job.worker_id
        )

    def job_progress(self, job: JobRecord) -> None:
        self._emit(
            EventKind.PROGRESS,
            job.queue,
            job.id,
            job.batch_id,
            job.attempt,
            job.worker_id,
            progress=job.progress,
        )

    def job_finished(self, job: FinishedJob) -> None:
        error = job.error if job.state in (JobState.FAILED, JobState.DEAD) else None
        self._emit(
            FINAL_KINDS[job.state],
            job.queue,
            job.id,
            job.batch_id,
            job.attempt,
            job.worker_id,
            error=error,
        )

    def job_retrying(self, job: JobRecord, due: float) -> None:
        self._emit(
            EventKind.RETRIED,
            job.queue,
            job.id,
            job.batch_id,
            job.attempt,
            job.worker_id,
            error=job.error,
        )

    def job_requeued(self, job: JobRecord, reason: str) -> None:
        self._emit(
            EventKind.REQUEUED,
            job.queue,
            job.id,
            job.batch_id,
            job.attempt,
            job.worker_id,
            error=JobFailure(reason),
        )

    def batch_completed(self, batch: BatchView) -> None:
        self._emit(
            EventKind.BATCH_COMPLETE, batch.queue, "", batch.batch_id, counts=tuple(batch[10:])
        )

    # ---- watching -----------------------------------------------------------------

    @property
    def _oldest(self) -> int:
        """The number of the oldest event still in the ring."""
        return max(1, self._seq - self._size + 1)

    def _token(self, seq: int) -> str:
        return f"{self.epoch}-{seq}"

    def _start(self, token: str) -> tuple[int, Missed | None]:
        """The cursor a watch starts at (the last event it is past), and what it missed."""
        if not token:
            return self._seq, None
        epoch, sep, number = token.partition("-")
        if not sep or not number.isdigit() or len(epoch) != 8:
            raise bad_token(token)
        if epoch != self.epoch:
            missed = Missed(
                RESUME_TOO_OLD,
                token,
                "the token is of an earlier run of this server (it restarted): its events "
                "are gone; going on with the oldest event kept",
            )
            return self._oldest - 1, missed
        seq = min(int(number), self._seq)
        if seq < self._oldest - 1:
            lost = self._oldest - 1 - seq
            missed = Missed(
                RESUME_TOO_OLD,
                token,
                f"{lost} events after the token are gone: the server keeps the last "
                f"{self._size} events; going on with the oldest kept",
            )
            return self._oldest - 1, missed
        return seq, None

    def watch(self, flt: EventFilter, token: str) -> AsyncIterator[Event | Missed]:
        """Every event after ``token`` (now, when empty: this call's now) that ``flt``
        matches, as they come, until the hub closes. A bad token raises here."""
        cursor, missed = self._start(token)
        return self._follow(flt, cursor, missed)

    async def _follow(
        self, flt: EventFilter, cursor: int, missed: Missed | None
    ) -> AsyncIterator[Event | Missed]:
        if missed is not None:
            yield missed
        wake = asyncio.Event()
        self._wakers.add(wake)
        try:
            while not self.closed:
                if cursor >= self._seq:
                    wake.clear()
                    await wake.wait()
                    continue
                end = min(self._seq, cursor + READ_BATCH)
                while cursor < end:
                    seq = cursor + 1
                    raw = self._slots[seq % self._size]
                    if raw is None or raw[0] != seq:
                        # overwritten while this watcher was busy writing: it fell behind
                        lost = self._oldest - seq
                        yield Missed(
                            FELL_BEHIND,
                            self._token(cursor),
                            f"this stream read too slowly: {lost} events were dropped "
                            f"(the server keeps the last {self._size}); going on with the "
                            "oldest kept",
                        )
                        cursor = self._oldest - 1
                        break
                    cursor = seq
                    ev = Event(self._token(seq), *raw[1:])
                    if flt.match(ev):
                        yield ev
                await asyncio.sleep(0)  # let the loop run between batches
        finally:
            self._wakers.discard(wake)

    def close(self) -> None:
        """Ends every watch (the server stops)."""
        self.closed = True
        for wake in self._wakers:
            wake.set()
