"""One named queue: its pending index, its leases, its finished jobs, its settings."""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterator, Mapping

from sortedcontainers import SortedList

from dispatchd.engine.lanes import FairReady
from dispatchd.engine.model import (
    FINISHED_STATES,
    FinishedJob,
    JobRecord,
    JobState,
    LeaseRecord,
    QueueSettings,
    SlotRecord,
    WorkerRecord,
    dedup_name,
)
from dispatchd.engine.policies import Aimd, KeyLimits, TokenBucket, WindowCounts


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
    """One named queue.

    - ``pending``: every PENDING job keyed (-priority, seq, id), for counts and listing
      in nominal dispatch order (priority, then age).
    - ``ready``: the PENDING jobs that may go next, by fairness key (lanes.FairReady).
      A job waiting behind an earlier job of its ordering key is pending but not ready.
    - ``chains``: per ordering key, its unfinished jobs in submit order; the head holds
      the key (pending, scheduled or underway) until it finishes.
    - ``scheduled``: SCHEDULED jobs keyed (due, seq, id).
    - ``waiting``: WAITING jobs (for their parents, engine/flows.py) keyed (seq, id), only
      so that ListJobs can list them in submit order.
    """

    __slots__ = (
        "aimd",
        "bucket",
        "chains",
        "dedup",
        "finished",
        "held_until",
        "hold_reason",
        "leases",
        "name",
        "pending",
        "ready",
        "ring_key",
        "scheduled",
        "settings",
        "slot_waiters",
        "slots",
        "subscribers",
        "waiting",
        "wake_due",
        "windows",
    )

    def __init__(
        self, name: str, settings: QueueSettings, jobs: Mapping[str, JobRecord], now: float
    ) -> None:
        self.name = name
        self.settings = settings
        self.pending: SortedList = SortedList()
        self.ready = FairReady(jobs)
        self.chains: dict[str, deque[JobRecord]] = {}
        self.scheduled: SortedList = SortedList()
        self.waiting: SortedList = SortedList()
        self.leases: dict[str, LeaseRecord] = {}
        self.slots: dict[str, SlotRecord] = {}
        self.slot_waiters: list[tuple[int, int, str]] = []  # (-priority, seq, request id)
        self.finished: dict[JobState, FinishedIndex] = {s: FinishedIndex() for s in FINISHED_STATES}
        self.subscribers: list[WorkerRecord] = []
        self.dedup: dict[str, str] = {}  # model.dedup_name -> job id
        self.bucket: TokenBucket | None = None
        self.aimd: Aimd | None = None  # the adaptive rate (settings.adaptive) over the bucket
        self.windows: WindowCounts | None = None  # its quotas' counts (settings.windows)
        self.ring_key: int | None = None  # its key in the engine's ready set, while in it
        self.wake_due: float | None = None  # when its rate lets it go again, if held by it
        # A throttle signal's hold of the whole queue (engine/throttling.py): while it
        # lasts the queue is out of the ready set, with a wake-up at its end.
        self.held_until: float | None = None
        self.hold_reason = ""
        self.apply_settings(settings, now)

    def apply_settings(self, settings: QueueSettings, now: float) -> None:
        self.settings = settings
        if settings.rate is None:
            self.bucket = None
        elif self.bucket is None:
            self.bucket = TokenBucket(settings.rate, now)
        else:
            self.bucket.reconfigure(settings.rate, now)
        self._configure_aimd(settings, now)
        if not settings.windows:
            self.windows = None
        elif self.windows is None:
            self.windows = WindowCounts(settings.windows)
        else:
            self.windows.reconfigure(settings.windows)
        self.ready.configure(settings.key_limits or KeyLimits(), now, settings.adaptive)

    def _configure_aimd(self, settings: QueueSettings, now: float) -> None:
        """An adaptive queue's effective rate survives a settings change, under the new
        ceiling; a queue without a rate has nothing to adapt."""
        if settings.adaptive is None or settings.rate is None:
            self.aimd = None
        elif self.aimd is None:
            self.aimd = Aimd(settings.adaptive, settings.rate.per_second, now)
        else:
            self.aimd.reconfigure(settings.adaptive, settings.rate.per_second)
            self.adapt(now)

    def adapt(self, now: float) -> None:
        """Sets the bucket to the adaptive rate in force at ``now`` (engine/policies.py Aimd):
        a cheap no-op for a queue that is not adaptive."""
        aimd, bucket, rate = self.aimd, self.bucket, self.settings.rate
        if aimd is None or bucket is None or rate is None:
            return
        current = aimd.rate(rate, now)
        if current.per_second != bucket.per_second or current.burst != bucket.burst:
            bucket.reconfigure(current, now)

    def effective_rate(self, now: float) -> float:
        """The rate in force at ``now``; 0 without a rate."""
        self.adapt(now)
        return 0.0 if self.bucket is None else self.bucket.per_second

    @property
    def underway(self) -> int:
        """Width in use: leases (cancelled ones still running included) and slots."""
        return len(self.leases) + len(self.slots)

    def waiting_count(self) -> int:
        return len(self.pending) + len(self.scheduled)

    def may_dispatch(self, now: float) -> bool:
        """Width, pause and rate allow one more, and a job is ready (worker aside)."""
        s = self.settings
        if s.paused or self.underway >= s.width or not self.ready.has_ready(now):
            return False
        if self.held_until is not None and self.held_until > now:
            return False
        if self.aimd is not None:
            self.adapt(now)
        if self.windows is not None and not self.windows.ready(now):
            return False
        return self.bucket is None or self.bucket.ready(now)

    def rate_wake(self, now: float) -> float:
        """When its rate and its quotas let it dispatch again (``now``: they do now)."""
        t = now
        if self.bucket is not None:
            t = self.bucket.next_time(now)
        if self.windows is not None:
            t = max(t, self.windows.next_time(now))
        return t

    def throttled_until(self, now: float) -> float | None:
        """When the queue's throttle hold ends, while one lasts."""
        until = self.held_until
        return until if until is not None and until > now else None

    def add_pending(self, job: JobRecord) -> None:
        key = job.pending_entry = (-job.priority, job.seq, job.id)
        self.pending.add(key)

    def remove_pending(self, job: JobRecord) -> None:
        key = job.pending_entry
        self.pending.remove(job.pending_key if key is None else key)
        job.pending_entry = None

    def has_free_worker(self) -> bool:
        return any(w.free_credits > 0 for w in self.subscribers)

    def record_finished(self, job: FinishedJob) -> None:
        self.finished[job.state].append(job.finish_seq, job.id)

    def forget_finished(self, job: FinishedJob) -> None:
        name = dedup_name(job.headers, job.idempotency_key)
        self.forget(job.state_code, job.finish_seq, job.id, name)

    def forget(self, state_code: int, finish_seq: int, job_id: str, dedup: str) -> None:
        """Takes a finished job out of the indexes (its stored form is the caller's);
        ``dedup`` is its key's model.dedup_name ('' without a key)."""
        self.finished[JobState(state_code)].discard(finish_seq, job_id)
        if dedup and self.dedup.get(dedup) == job_id:
            del self.dedup[dedup]
