"""Records the engine keeps per job, lease and queue. Plain slotted classes: no protobuf."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from dispatchd.engine.policies import AdaptiveRate, KeyLimits, Rate, RateWindow, RetryPolicy
from dispatchd.engine.targets import HttpTarget

#: The one reserved header a job carries: stamped by the server on every job submitted
#: while auth is on (a client's own value of exactly this name is overwritten there).
SUBMITTER_HEADER = "dispatchd-submitter"

#: The headers of every job submitted without any: one shared empty dict rather than one
#: per job (64 bytes each, a million times over at depth). Never mutated: nothing writes
#: to a job's headers after admission (the engine copies a spec's non-empty headers).
NO_HEADERS: dict[str, str] = {}


def dedup_name(headers: Mapping[str, str], idempotency_key: str) -> str:
    """The name a queue remembers an idempotency key by: the key itself, or, on a job the
    server stamped with its submitter (auth on), the submitter and the key. So one
    tenant's key never answers with another tenant's job, and a key squatted by one
    tenant does not swallow another's submit."""
    owner = headers.get(SUBMITTER_HEADER, "") if idempotency_key else ""
    return f"{owner}\x00{idempotency_key}" if owner else idempotency_key


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
    WAITING = 9
    """Waiting for its parent jobs to succeed (engine/flows.py)."""

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


class NewJob(NamedTuple):
    """What a producer asks for; validated by the engine before anything is admitted.

    A NamedTuple rather than a frozen dataclass: one is made per submitted job, and a
    tuple is built in a third of the time. The engine copies ``headers`` when it admits
    the job, so the shared empty default is never changed."""

    queue: str
    payload: bytes = b""
    priority: int = 0
    headers: dict[str, str] = {}  # never mutated, see above
    content_type: str = ""
    retry_policy: RetryPolicy | None = None
    not_before: float | None = None
    """Absolute time; None or the past means now."""
    expire_at: float | None = None
    """Absolute time (the service folds ttl into it)."""
    ordering_key: str = ""
    fairness_key: str = ""
    idempotency_key: str = ""
    fairness_weight: int = 0
    batch_id: str = ""
    """The batch (of this queue) it joins; engine/flows.py."""
    parent_ids: tuple[str, ...] = ()
    """Jobs of the same queue that must succeed first; engine/flows.py."""
    run_after_failed_parents: bool = False


Progress = tuple[int | None, str, float]
"""A worker's progress report as a job keeps it: (percent or None, message, time)."""


class JobFailure(NamedTuple):
    """An error a worker (or the HTTP pusher) reported for one attempt."""

    message: str
    retryable: bool = True
    code: str = ""
    retry_after: float | None = None
    """Seconds from the failure before the next attempt may start (an HTTP Retry-After):
    a floor under the retry policy's backoff, never a way around max_attempts."""


class AttemptRecord(NamedTuple):
    """One delivery and how it ended (error None: it succeeded or was cancelled)."""

    number: int
    worker_id: str
    dispatch_time: float
    finish_time: float
    error: JobFailure | None
    http_status: int = 0
    """Status code of an HTTP push attempt; 0 when there was no response (or no HTTP)."""
    latency: float | None = None
    """Seconds the HTTP push call took, as the pusher measured it."""


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
    not_before: float | None = None
    expire_at: float | None = None
    ordering_key: str = ""
    fairness_key: str = ""
    idempotency_key: str = ""
    fairness_weight: int = 0
    retry_policy: RetryPolicy | None = None
    attempts: tuple[AttemptRecord, ...] = ()
    """A tuple, grown by a copy at the end of each attempt (a few per job): a pending job
    that never ran shares the empty tuple instead of holding its own empty list."""
    budget_start: int = 0
    """attempt count when the retry budget started (RetryJob gives a fresh budget)."""
    in_lane: bool = False
    pending_entry: tuple[int, int, str] | None = None
    """The key this job is filed under in its queue's pending index while PENDING: kept so
    that taking it out needs no new tuple, and finds it even after a reprioritize. Its
    lane's heap holds the same tuple (engine/lanes.py): an entry there is live while it is
    still this object, so the heap costs a pointer per job, not a tuple of its own."""
    throttle_count: int = 0
    """Deliveries answered with a throttle signal (engine/throttling.py): not attempts."""
    # ---- workflows (engine/flows.py) ----
    batch_id: str = ""
    parent_ids: tuple[str, ...] = ()
    run_after_failed_parents: bool = False
    progress: Progress | None = None
    progress_dropped: int = 0
    cancel_reason: str = ""
    waiting_on: set[str] | None = None
    """While WAITING: the parents that have not succeeded yet."""

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
    not_before: float | None
    expire_at: float | None
    ordering_key: str
    fairness_key: str
    idempotency_key: str
    retry_policy: RetryPolicy | None
    attempts: tuple[AttemptRecord, ...]
    throttle_count: int = 0
    # Workflows (engine/flows.py); appended last so pack/unpack pass them through as is.
    batch_id: str = ""
    parent_ids: tuple[str, ...] = ()
    run_after_failed_parents: bool = False
    progress: Progress | None = None
    progress_dropped: int = 0
    cancel_reason: str = ""

    @property
    def state(self) -> JobState:
        return JobState(self.state_code)

    @property
    def lease(self) -> None:
        return None

    def pack(self) -> tuple[object, ...]:
        """The stored form: an exact tuple of atomic values, which CPython's collector
        untracks at its first pass over it, then the attempts' fields flat after the
        job's own. Nesting is kept to what most jobs leave empty (headers, error, retry
        policy, parents: atomic values in a tuple, one level): a pass untracks a tuple only
        once what it holds is untracked, and it visits a container before its contents, so
        every level costs one more pass. With the attempts as tuples in a tuple, finished
        jobs reached the oldest generation still tracked, and a full collection over the
        100,000 of them took 50-100 ms (the dispatch latency's p99)."""
        error = None if self.error is None else tuple(self.error)
        policy = None if self.retry_policy is None else _policy_tuple(self.retry_policy)
        attempts: list[object] = []
        for a in self.attempts:
            attempts += a[:4]
            attempts += _NO_FAILURE if a.error is None else (True, *a.error)
            attempts += a[5:]
        headers: list[str] = []
        for item in self.headers.items():
            headers += item
        return (
            *self[:4],
            tuple(headers),
            *self[5:13],
            error,
            *self[14:21],
            policy,
            len(self.attempts),
            *self[23:],  # throttle_count, then the workflow fields: atomic values
            *attempts,
        )

    @staticmethod
    def index_fields(raw: tuple[Any, ...]) -> tuple[str, str, int, float, int, str]:
        """(id, queue, state_code, finish_time, finish_seq, dedup name) of a packed job,
        without unpacking the rest: what eviction needs, for every job that finishes once
        the retention bound is reached."""
        key = raw[20]
        if key:
            key = dedup_name(_headers(raw[4]), key)
        return raw[0], raw[1], raw[7], raw[11], raw[15], key

    @classmethod
    def unpack(cls, raw: tuple[Any, ...]) -> FinishedJob:
        headers = _headers(raw[4])
        error = None if raw[13] is None else JobFailure(*raw[13])
        policy = None if raw[21] is None else RetryPolicy(*raw[21])
        flat = raw[_PACKED_FIELDS:]
        attempts = tuple(
            _attempt(flat[i : i + _ATTEMPT_WIDTH]) for i in range(0, len(flat), _ATTEMPT_WIDTH)
        )
        return cls._make(
            (
                *raw[:4],
                headers,
                *raw[5:13],
                error,
                *raw[14:21],
                policy,
                attempts,
                *raw[23:_PACKED_FIELDS],
            )
        )

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
            job.not_before,
            job.expire_at,
            job.ordering_key,
            job.fairness_key,
            job.idempotency_key,
            job.retry_policy,
            job.attempts,
            job.throttle_count,
            job.batch_id,
            job.parent_ids,
            job.run_after_failed_parents,
            job.progress,
            job.progress_dropped,
            job.cancel_reason,
        )


#: Fields of a packed job before its attempts' (FinishedJob's own).
_PACKED_FIELDS = len(FinishedJob._fields)
#: The failure fields of a packed attempt that has none: (has failure, *JobFailure).
_NO_FAILURE = (False, "", True, "", None)
#: Fields per attempt in a packed job: number, worker, two times, the failure, the rest.
_ATTEMPT_WIDTH = 4 + len(_NO_FAILURE) + 2


def _attempt(f: tuple[Any, ...]) -> AttemptRecord:
    error = JobFailure(*f[5:9]) if f[4] else None
    return AttemptRecord(f[0], f[1], f[2], f[3], error, *f[9:])


def _headers(flat: tuple[str, ...]) -> dict[str, str]:
    """A packed job's headers (key, value, key, value...) as the dict they came from."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _policy_tuple(p: RetryPolicy) -> tuple[Any, ...]:
    return (p.max_attempts, p.min_backoff, p.max_backoff, p.multiplier, p.jitter)


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


@dataclass(slots=True, eq=False)
class WorkerRecord:
    """One worker stream. ``key`` is unique per stream; ``worker_id`` is only a label,
    so a worker that reconnects before its old stream is noticed dead gets a new record."""

    key: int
    worker_id: str
    queues: tuple[str, ...]
    max_in_flight: int
    labels: dict[str, str]
    connect_time: float
    leases: dict[str, LeaseRecord] = field(default_factory=dict)
    draining: bool = False
    kind: str = "stream"
    """"stream" (a Work stream) or "http" (the server's own HTTP-push worker)."""
    lost: set[str] = field(default_factory=set)
    """Leases the server took back (expired) that the worker may still be running: each
    keeps one of its credits until the worker lets go of it (its late result, refused as
    stale, or a heartbeat that names its leases and leaves this one out). So a worker is
    never sent more jobs than the credit it declared."""
    silent: bool = False
    """A lease of this worker expired and it has not sent anything since: it gets no new
    job until it shows life (a heartbeat, a result, a credit)."""

    @property
    def free_credits(self) -> int:
        if self.draining or self.silent:
            return 0
        return self.max_in_flight - len(self.leases) - len(self.lost)

    def heard(self) -> None:
        """The worker sent something: it is alive."""
        self.silent = False

    def let_go(self, lease_id: str) -> None:
        self.lost.discard(lease_id)

    def still_holds(self, lease_ids: Iterable[str]) -> None:
        """A heartbeat named exactly the leases it holds: lost ones it left out are gone."""
        if self.lost:
            self.lost &= set(lease_ids)


@dataclass(slots=True, eq=False)
class SlotRecord:
    """A unit of a queue's width held through AcquireSlot, outside the worker stream."""

    slot_id: str
    queue: str
    holder: str
    ttl: float
    deadline: float
    seq: int


@dataclass(slots=True, eq=False)
class SlotRequest:
    """An AcquireSlot call waiting for width and rate."""

    request_id: str
    queue: str
    holder: str
    ttl: float
    priority: int
    seq: int
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """A queue's live-changeable settings; persisted in the snapshot."""

    width: int
    paused: bool = False
    lease_seconds: float = 30.0
    rate: Rate | None = None
    retry_policy: RetryPolicy | None = None
    key_limits: KeyLimits | None = None
    max_pending: int = 0
    """Most pending + scheduled jobs; 0 is no bound."""
    dedup_window: float = 86_400.0
    """Seconds an idempotency key is remembered after its job finished."""
    http_target: HttpTarget | None = None
    """When set, the server delivers the queue's jobs to this endpoint itself."""
    max_throttle_bounces: int = 20
    """Throttle signals one job may answer with before one counts as a failed attempt."""
    adaptive: AdaptiveRate | None = None
    """AIMD of the rate (and the per-key rate) on throttle signals; None: fixed rates."""
    windows: tuple[RateWindow, ...] = ()
    """Quotas over fixed windows (policies.RateWindow), all enforced; in period order."""


@dataclass(frozen=True, slots=True)
class QueueView:
    """A read-only picture of one queue for GetQueue/ListQueues."""

    name: str
    settings: QueueSettings
    pending_count: int
    underway_count: int
    worker_count: int
    scheduled_count: int = 0
    slot_count: int = 0
    throttled_until: float | None = None
    """While a throttle signal holds the whole queue: when the hold ends."""
    throttle_reason: str = ""
    throttled_key_count: int = 0
    """Fairness keys held by a key-scoped throttle signal now."""
    effective_rate: float = 0.0
    """The queue's rate in force now (below the configured one after throttle signals on
    an adaptive queue); 0 without a rate."""
    window_usage: tuple[tuple[float, float, int], ...] = ()
    """(period, window start, dispatches counted) of each of its windows now: shown, and
    stored (journal, snapshot) so a restart grants nothing twice."""
    key_window_usage: tuple[tuple[str, tuple[tuple[float, float, int], ...]], ...] = ()
    """The same per fairness key (per_key_windows), for the keys with counts: stored only."""


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """One queue's figures for /metrics (Backend.queue_figures): what an operator alerts
    on, the same on both backends."""

    view: QueueView
    head_ready: float | None
    """When the job at the head of the queue (the next ready job in dispatch order) could
    first run: its submit time, or the end of its delay or backoff. None: nothing ready."""
    blocked: int
    """Pending jobs that wait behind an earlier job of their ordering key."""
    dead: int
    """DEAD jobs the queue holds now (until --finished-retention lets them go)."""
    failed: int
    """FAILED jobs the queue holds now."""
    rate_limited: bool
    """The queue's rate has no token now (False for an unlimited queue)."""
    key_held: int = 0
    """Ready jobs whose fairness key is at its key limit: max_in_flight_per_key reached,
    or no per-key token now."""
    credit_free: bool = True
    """A connected worker serving the queue has a free credit (on Redis: as the replicas'
    fleet entries said at their last reaper pass)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A worker result that changed nothing, and why."""

    job_id: str
    lease_id: str
    reason: str
