"""One named queue: its pending index, its leases, its finished jobs, its settings."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from sortedcontainers import SortedList

from dispatchd.engine.model import (
    FINISHED_STATES,
    FinishedJob,
    JobRecord,
    JobState,
    LeaseRecord,
    QueueSettings,
)
from dispatchd.engine.workers import WorkerRecord


class FinishedIndex:
    """Finished jobs of one queue and state in finish order. Eviction takes the globally
    oldest finished job, which is always the head here, so a list with a moving head
    does it in O(1); a page starts with one bisect."""

    __slots__ = ("_head", "_items")

    def __init__(self) -> None:
        self._items: list[tuple[int, str]] = []
        self._head = 0

    def __len__(self) -> int:
        return len(self._items) - self._head

    def append(self, finish_seq: int, job_id: str) -> None:
        self._items.append((finish_seq, job_id))

    def discard(self, finish_seq: int, job_id: str) -> None:
        items, head = self._items, self._head
        if head < len(items) and items[head] == (finish_seq, job_id):
            self._head += 1
            if self._head > 1024 and self._head * 2 > len(items):
                del items[: self._head]
                self._head = 0
            return
        i = bisect_left(items, (finish_seq, job_id), head)
        if i < len(items) and items[i] == (finish_seq, job_id):
            del items[i]

    def after(self, finish_seq: int | None) -> Iterator[tuple[int, str]]:
        items = self._items
        start = self._head
        if finish_seq is not None:
            start = bisect_left(items, (finish_seq + 1,), start)
        for i in range(start, len(items)):
            yield items[i]


class QueueState:
    """Pending jobs sit in a sorted index keyed (-priority, seq, id): the first entry is
    the next to dispatch, removal (cancel, reprioritize) is O(log n), and a page of
    jobs in dispatch order starts with one bisect."""

    __slots__ = ("_rr", "finished", "leases", "name", "pending", "settings", "subscribers")

    def __init__(self, name: str, settings: QueueSettings) -> None:
        self.name = name
        self.settings = settings
        self.pending: SortedList = SortedList()
        self.leases: dict[str, LeaseRecord] = {}
        self.finished: dict[JobState, FinishedIndex] = {s: FinishedIndex() for s in FINISHED_STATES}
        self.subscribers: list[WorkerRecord] = []
        self._rr = 0

    def can_dispatch(self) -> bool:
        s = self.settings
        return bool(self.pending) and not s.paused and len(self.leases) < s.width

    def add_pending(self, job: JobRecord) -> None:
        self.pending.add(job.pending_key)

    def remove_pending(self, job: JobRecord) -> None:
        self.pending.remove(job.pending_key)

    def pop_next_id(self) -> str:
        entry: tuple[int, int, str] = self.pending.pop(0)
        return entry[2]

    def next_worker(self) -> WorkerRecord | None:
        """Round-robin over subscribers with a free credit, so one busy worker cannot
        starve the others of this queue's jobs."""
        subs = self.subscribers
        n = len(subs)
        for i in range(n):
            idx = (self._rr + i) % n
            worker = subs[idx]
            if worker.free_credits > 0:
                self._rr = (idx + 1) % n
                return worker
        return None

    def record_finished(self, job: FinishedJob) -> None:
        self.finished[job.state].append(job.finish_seq, job.id)

    def forget_finished(self, job: FinishedJob) -> None:
        self.finished[job.state].discard(job.finish_seq, job.id)

    def underway_count(self) -> int:
        return len(self.leases)
