"""Plain Python values for what the dispatchd API returns.

The generated protobuf classes are awkward to hand to application code: unset timestamps read
as the 1970 epoch, unset messages read as empty defaults, and enums are bare ints. These frozen
dataclasses are what the clients and the worker return instead: ``None`` for "not set", aware
UTC datetimes, seconds as floats, and an :class:`enum.IntEnum` that tolerates states added to
the proto after this library was built.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from dispatchd_client.policies import (
    AdaptiveRate,
    Attempt,
    HttpTarget,
    JobOptions,
    KeyLimits,
    Rate,
    RateWindow,
    RetryPolicy,
)
from dispatchd_client.v1 import dispatcher_pb2 as pb

__all__ = [
    "Batch",
    "BatchCounts",
    "Job",
    "JobError",
    "JobProgress",
    "JobSpecLike",
    "JobState",
    "NewJob",
    "Queue",
    "ReceivedJob",
]


class JobState(enum.IntEnum):
    """Where a job is in its life; values equal the proto ``JobState`` numbers."""

    UNSPECIFIED = pb.JOB_STATE_UNSPECIFIED
    PENDING = pb.JOB_STATE_PENDING
    UNDERWAY = pb.JOB_STATE_UNDERWAY
    SUCCEEDED = pb.JOB_STATE_SUCCEEDED
    FAILED = pb.JOB_STATE_FAILED
    CANCELLED = pb.JOB_STATE_CANCELLED
    SCHEDULED = pb.JOB_STATE_SCHEDULED
    EXPIRED = pb.JOB_STATE_EXPIRED
    DEAD = pb.JOB_STATE_DEAD
    #: Waiting for its parent jobs to succeed (docs/workflows.md).
    WAITING = pb.JOB_STATE_WAITING

    @classmethod
    def _missing_(cls, value: object) -> JobState | None:
        # A newer server may send a state this client does not know; proto3 enums are open,
        # so degrade to UNSPECIFIED instead of failing the whole response.
        return cls.UNSPECIFIED if isinstance(value, int) else None

    @property
    def finished(self) -> bool:
        """True once the job can no longer change by itself (only RetryJob revives it)."""
        return self in _FINISHED


_FINISHED = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED, JobState.DEAD}
)


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _time(
    msg: pb.Job | pb.Delivery | pb.Queue | pb.JobProgress | pb.Batch | pb.JobEvent, name: str
) -> datetime.datetime | None:
    """An aware UTC datetime, or None when the field is unset (not the epoch).

    What ``Timestamp.ToDatetime(tzinfo=UTC)`` gives (nanos cut to microseconds), in one
    addition: that method's checks and time zone round trip were most of a worker's CPU
    per job, with five timestamps in each delivered job."""
    if not msg.HasField(name):
        return None
    ts: timestamp_pb2.Timestamp = getattr(msg, name)
    return _EPOCH + datetime.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def _seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


@dataclass(frozen=True)
class JobError:
    """A failure reported by a worker.

    ``retryable`` defaults to True because the worker cannot usually tell a transient failure
    from a permanent one; handlers opt out by raising :class:`~dispatchd_client.PermanentError`.
    """

    message: str
    retryable: bool = True
    code: str = ""

    @classmethod
    def from_proto(cls, msg: pb.JobError) -> JobError:
        return cls(message=msg.message, retryable=msg.retryable, code=msg.code)

    def to_proto(self) -> pb.JobError:
        return pb.JobError(message=self.message, retryable=self.retryable, code=self.code)


@dataclass(frozen=True)
class JobProgress:
    """What a worker last reported about a job (docs/workflows.md)."""

    #: 0-100, or None when the report had no number.
    percent: int | None
    message: str
    report_time: datetime.datetime | None

    @classmethod
    def from_proto(cls, msg: pb.JobProgress) -> JobProgress:
        percent = msg.percent if msg.HasField("percent") else None
        report_time = _time(msg, "report_time")
        return cls(percent, msg.message, report_time)


@dataclass(frozen=True, kw_only=True)
class Throttle(JobError):
    """A worker's answer "the provider throttles me" (a handler raises
    :class:`~dispatchd_client.Throttled`): hold ``scope`` ("queue" or "fairness_key") for
    ``retry_after`` seconds and put the job back. A JobError (code "Throttled") to
    after_job hooks, so hooks written for outputs and errors keep working; the stream sends
    it as JobResult.throttled."""

    message: str = ""
    code: str = "Throttled"
    retry_after: float = 1.0
    scope: str = "queue"

    def throttle_proto(self) -> pb.Throttled:
        msg = pb.Throttled(reason=self.message[:1024])
        msg.retry_after.FromNanoseconds(int(max(0.0, self.retry_after) * 1e9))
        key = self.scope == "fairness_key"
        msg.scope = pb.THROTTLE_SCOPE_FAIRNESS_KEY if key else pb.THROTTLE_SCOPE_QUEUE
        return msg


@dataclass(frozen=True, kw_only=True)
class Job:
    """A submitted job as the server knows it, at the moment of the call that returned it."""

    id: str
    queue: str
    payload: bytes = b""
    priority: int = 0
    state: JobState = JobState.UNSPECIFIED
    headers: dict[str, str] = field(default_factory=dict)
    #: Number of deliveries so far: 0 before the first dispatch, 1 during the first run.
    attempt: int = 0
    content_type: str = ""
    submit_time: datetime.datetime | None = None
    #: Time of the latest dispatch.
    dispatch_time: datetime.datetime | None = None
    first_dispatch_time: datetime.datetime | None = None
    finish_time: datetime.datetime | None = None
    lease_expire_time: datetime.datetime | None = None
    #: Output of a succeeded job.
    result: bytes = b""
    #: Error of a failed job; None otherwise.
    error: JobError | None = None
    #: Worker holding (or that last held) the job's lease.
    worker_id: str = ""
    not_before: datetime.datetime | None = None
    expire_time: datetime.datetime | None = None
    ordering_key: str = ""
    fairness_key: str = ""
    idempotency_key: str = ""
    #: Every delivery so far, oldest first.
    attempts: tuple[Attempt, ...] = ()
    #: The job's own retry policy (None: the queue's applies).
    retry_policy: RetryPolicy | None = None
    #: The batch it belongs to ("" none), its parents, and whether it runs after a failed one.
    batch_id: str = ""
    parent_ids: tuple[str, ...] = ()
    run_after_failed_parents: bool = False
    #: The latest progress its worker reported; None before any.
    progress: JobProgress | None = None
    #: Why the server cancelled it (a parent that did not succeed, CancelBatch), if it did.
    cancel_reason: str = ""
    #: Deliveries answered with a throttle signal (not counted in ``attempt``).
    throttle_count: int = 0
    #: Only on submit results: True when an earlier job with the same idempotency key was
    #: returned instead of a new one.
    duplicate: bool = False

    @classmethod
    def from_proto(cls, msg: pb.Job, duplicate: bool = False) -> Job:
        fields = _proto_fields(msg)
        fields["duplicate"] = duplicate
        job: Job = _built(cls, fields)
        return job


def _built(cls: type[Any], values: dict[str, Any]) -> Any:
    """``cls(**values)`` for a frozen dataclass without a ``__post_init__``: the same
    instance (every field set, defaults and default factories for the ones not given),
    filled by one dict update instead of one ``object.__setattr__`` per field, which was a
    third of a worker's decoding time per delivered job (30 fields)."""
    if hasattr(cls, "__post_init__"):  # a subclass that checks or derives: the real init
        return cls(**values)
    constants, factories = _defaults_of(cls)
    obj = object.__new__(cls)
    attrs = obj.__dict__
    attrs.update(constants)
    for name, factory in factories:
        if name not in values:
            attrs[name] = factory()
    attrs.update(values)
    return obj


_DEFAULTS: dict[type[Any], tuple[dict[str, Any], list[tuple[str, Callable[[], Any]]]]] = {}


def _defaults_of(cls: type[Any]) -> tuple[dict[str, Any], list[tuple[str, Callable[[], Any]]]]:
    known = _DEFAULTS.get(cls)
    if known is None:
        constants: dict[str, Any] = {}
        factories: list[tuple[str, Callable[[], Any]]] = []
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                constants[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                factories.append((f.name, f.default_factory))
        known = _DEFAULTS[cls] = (constants, factories)
    return known


def _proto_fields(msg: pb.Job) -> dict[str, Any]:
    """The :class:`Job` fields of ``msg`` (but ``duplicate``) as keyword arguments."""
    return dict(
        id=msg.id,
        queue=msg.queue,
        payload=msg.payload,
        priority=msg.priority,
        state=JobState(msg.state),
        headers=dict(msg.headers) if msg.headers else {},
        attempt=msg.attempt,
        content_type=msg.content_type,
        submit_time=_time(msg, "submit_time"),
        dispatch_time=_time(msg, "dispatch_time"),
        first_dispatch_time=_time(msg, "first_dispatch_time"),
        finish_time=_time(msg, "finish_time"),
        lease_expire_time=_time(msg, "lease_expire_time"),
        result=msg.result,
        error=JobError.from_proto(msg.error) if msg.HasField("error") else None,
        worker_id=msg.worker_id,
        not_before=_time(msg, "not_before"),
        expire_time=_time(msg, "expire_time"),
        ordering_key=msg.ordering_key,
        fairness_key=msg.fairness_key,
        idempotency_key=msg.idempotency_key,
        attempts=tuple([Attempt.from_proto(a) for a in msg.attempts]) if msg.attempts else (),
        retry_policy=(
            RetryPolicy.from_proto(msg.retry_policy) if msg.HasField("retry_policy") else None
        ),
        batch_id=msg.batch_id,
        parent_ids=tuple(msg.parent_ids) if msg.parent_ids else (),
        run_after_failed_parents=msg.run_after_failed_parents,
        progress=JobProgress.from_proto(msg.progress) if msg.HasField("progress") else None,
        cancel_reason=msg.cancel_reason,
        throttle_count=msg.throttle_count,
    )


def _job_fields(job: Job) -> dict[str, Any]:
    """The :class:`Job` fields of ``job`` as keyword arguments (to build a subclass or strip
    one back to a plain Job)."""
    return {f.name: getattr(job, f.name) for f in dataclasses.fields(Job)}


@dataclass(frozen=True, kw_only=True)
class ReceivedJob(Job):
    """A job delivered to this worker: the :class:`Job` plus its lease.

    ``cancelled`` is a :class:`threading.Event` rather than an :class:`asyncio.Event` because
    sync handlers run in worker threads and must be able to poll it; async handlers are
    cancelled as tasks as well, so they rarely need to look at it.
    """

    #: Identifies this delivery; results carrying an older lease id are ignored by the server.
    lease_id: str
    cancelled: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)
    #: Where report_progress sends (set by the worker's session); None: nowhere.
    progress_sink: Callable[[str, str, int | None, str], None] | None = field(
        default=None, compare=False, repr=False
    )

    def report_progress(self, percent: int | None = None, message: str = "") -> None:
        """Tells the server how far this job is (0-100 and/or a short message, at most
        1,000 characters); shown as ``Job.progress``. Safe from a sync handler's thread.
        The server keeps at most one report per job per 200 ms and drops the rest, so call it
        as often as is convenient."""
        if percent is not None and not 0 <= percent <= 100:
            raise ValueError(f"percent must be 0-100, got {percent}")
        if len(message) > 1000:
            raise ValueError("progress message is limited to 1,000 characters")
        if self.progress_sink is not None:
            self.progress_sink(self.id, self.lease_id, percent, message)

    @property
    def is_cancelled(self) -> bool:
        """True once the server cancelled the job or the worker gave up on it."""
        return self.cancelled.is_set()

    @classmethod
    def from_delivery(
        cls,
        delivery: pb.Delivery,
        progress_sink: Callable[[str, str, int | None, str], None] | None = None,
    ) -> ReceivedJob:
        """The job of ``delivery``; ``progress_sink`` is where report_progress sends (the
        worker's session passes its own: given here rather than by a ``replace`` after, a
        second construction that cost most of the decoding again)."""
        fields = _proto_fields(delivery.job)
        fields["progress_sink"] = progress_sink
        # The delivery's own lease expiry is authoritative; the embedded job may predate it.
        lease_expire = _time(delivery, "lease_expire_time")
        if lease_expire is not None:
            fields["lease_expire_time"] = lease_expire
        fields["lease_id"] = delivery.lease_id
        job: ReceivedJob = _built(cls, fields)
        return job

    def as_job(self) -> Job:
        """The plain :class:`Job` part, e.g. to store or compare without the lease."""
        return Job(**_job_fields(self))


@dataclass(frozen=True, kw_only=True)
class Queue:
    """One queue's settings and counts."""

    name: str
    #: Max jobs underway at once across all workers; 0 dispatches nothing.
    width: int = 0
    paused: bool = False
    pending_count: int = 0
    #: Leases held, including cancelled jobs whose worker has not answered yet.
    underway_count: int = 0
    #: How long a delivery's lease lasts without a heartbeat, in seconds.
    lease_duration: float = 0.0
    #: Workers connected that serve this queue.
    worker_count: int = 0
    #: Dispatch rate limit; None means unlimited.
    rate: Rate | None = None
    #: Default retry policy of the queue's jobs; None means no retries.
    retry_policy: RetryPolicy | None = None
    key_limits: KeyLimits | None = None
    #: Most pending + scheduled jobs; 0 means no bound.
    max_pending: int = 0
    #: Jobs waiting for their not_before time (delayed, or a retry's backoff).
    scheduled_count: int = 0
    #: Seconds an idempotency key is remembered after its job finished.
    dedup_window: float = 0.0
    #: Slots held through acquire_slot (they count in underway_count).
    slot_count: int = 0
    #: The HTTP endpoint the server delivers this queue's jobs to; None: workers do.
    http_target: HttpTarget | None = None
    #: While a throttle signal holds the whole queue: when the hold ends (else None).
    throttled_until: datetime.datetime | None = None
    #: Why the queue is held, while it is.
    throttle_reason: str = ""
    #: Throttle signals one job may answer with before one counts as a failed attempt.
    max_throttle_bounces: int = 0
    #: Fairness keys held by a key-scoped throttle signal now.
    throttled_key_count: int = 0
    #: AIMD of the rate on throttle signals; None: the rate is fixed.
    adaptive: AdaptiveRate | None = None
    #: The rate in force now (below ``rate`` after throttle signals when adaptive); 0: none.
    effective_rate: float = 0.0
    #: Quotas over several windows, each with what the current window used.
    windows: tuple[RateWindow, ...] = ()

    @classmethod
    def from_proto(cls, msg: pb.Queue) -> Queue:
        return cls(
            name=msg.name,
            width=msg.width,
            paused=msg.paused,
            pending_count=msg.pending_count,
            underway_count=msg.underway_count,
            lease_duration=_seconds(msg.lease_duration),
            worker_count=msg.worker_count,
            rate=Rate.from_proto(msg.rate) if msg.HasField("rate") else None,
            retry_policy=(
                RetryPolicy.from_proto(msg.retry_policy) if msg.HasField("retry_policy") else None
            ),
            key_limits=KeyLimits.from_proto(msg.key_limits) if msg.HasField("key_limits") else None,
            max_pending=msg.max_pending,
            scheduled_count=msg.scheduled_count,
            dedup_window=_seconds(msg.dedup_window),
            slot_count=msg.slot_count,
            http_target=(
                HttpTarget.from_proto(msg.http_target) if msg.HasField("http_target") else None
            ),
            throttled_until=_time(msg, "throttled_until"),
            throttle_reason=msg.throttle_reason,
            max_throttle_bounces=msg.max_throttle_bounces,
            throttled_key_count=msg.throttled_key_count,
            adaptive=AdaptiveRate.from_proto(msg.adaptive) if msg.HasField("adaptive") else None,
            effective_rate=msg.effective_rate,
            windows=tuple(RateWindow.from_proto(w) for w in msg.windows),
        )


@dataclass(frozen=True)
class NewJob:
    """A job to submit with :meth:`submit_batch`; fields mean the same as ``submit``'s
    arguments (a ``str`` payload is sent as UTF-8 text)."""

    queue: str
    payload: bytes | str = b""
    priority: int = 0
    headers: dict[str, str] | None = None
    content_type: str = ""
    #: submit's optional arguments (delay, ttl, ordering_key, idempotency_key, ...).
    options: JobOptions = field(default_factory=lambda: JobOptions())


#: What ``submit_batch`` accepts: :class:`NewJob` or an already-built proto ``JobSpec``.
JobSpecLike = NewJob | pb.JobSpec


@dataclass(frozen=True)
class BatchCounts:
    """A batch's jobs by where they are."""

    total: int = 0
    #: Not final yet: waiting, pending, scheduled or underway.
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    dead: int = 0

    @classmethod
    def from_proto(cls, msg: pb.BatchCounts) -> BatchCounts:
        return cls(
            msg.total,
            msg.active,
            msg.succeeded,
            msg.failed,
            msg.cancelled,
            msg.expired,
            msg.dead,
        )


@dataclass(frozen=True, kw_only=True)
class Batch:
    """A batch of one queue's jobs followed as one (docs/workflows.md)."""

    queue: str
    batch_id: str
    description: str = ""
    #: Takes no new jobs; its callbacks fire once every job is final.
    closed: bool = False
    #: Closed and every job final (the callbacks, if any, are submitted).
    complete: bool = False
    counts: BatchCounts = field(default_factory=BatchCounts)
    on_success_job_id: str = ""
    on_complete_job_id: str = ""
    create_time: datetime.datetime | None = None
    complete_time: datetime.datetime | None = None

    @classmethod
    def from_proto(cls, msg: pb.Batch) -> Batch:
        return cls(
            queue=msg.queue,
            batch_id=msg.batch_id,
            description=msg.description,
            closed=msg.closed,
            complete=msg.complete,
            counts=BatchCounts.from_proto(msg.counts),
            on_success_job_id=msg.on_success_job_id,
            on_complete_job_id=msg.on_complete_job_id,
            create_time=_time(msg, "create_time"),
            complete_time=_time(msg, "complete_time"),
        )
