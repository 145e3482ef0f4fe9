"""Dispatch policies as client-side values: rates, retry policies, key limits, attempts,
slots, and the optional arguments of submit and update_queue."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypedDict

from google.protobuf import duration_pb2, timestamp_pb2

from dispatchd_client.v1 import dispatcher_pb2 as pb

__all__ = [
    "Attempt",
    "HttpTarget",
    "JobOptions",
    "KeyLimits",
    "QueueChanges",
    "Rate",
    "RetryPolicy",
    "Slot",
]


def _seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(datetime.timedelta(seconds=seconds))
    return d


def _time(ts: timestamp_pb2.Timestamp) -> datetime.datetime:
    return ts.ToDatetime(tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Rate:
    """A token bucket: ``per_second`` dispatches a second, ``burst`` saved up at most
    (0: the server picks max(1, ceil(per_second)))."""

    per_second: float
    burst: int = 0

    def to_proto(self) -> pb.Rate:
        return pb.Rate(per_second=self.per_second, burst=self.burst)

    @classmethod
    def from_proto(cls, msg: pb.Rate) -> Rate:
        return cls(msg.per_second, msg.burst)


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt n+1 waits min(max_backoff, min_backoff * multiplier**(n-1)) seconds, +/-
    jitter of that. ``max_attempts`` counts the first attempt too."""

    max_attempts: int = 3
    min_backoff: float = 1.0
    max_backoff: float = 300.0
    multiplier: float = 2.0
    jitter: float = 0.0

    def to_proto(self) -> pb.RetryPolicy:
        return pb.RetryPolicy(
            max_attempts=self.max_attempts,
            min_backoff=_duration(self.min_backoff),
            max_backoff=_duration(self.max_backoff),
            multiplier=self.multiplier,
            jitter=self.jitter,
        )

    @classmethod
    def from_proto(cls, msg: pb.RetryPolicy) -> RetryPolicy:
        return cls(
            msg.max_attempts,
            _seconds(msg.min_backoff),
            _seconds(msg.max_backoff),
            msg.multiplier,
            msg.jitter,
        )


@dataclass(frozen=True)
class KeyLimits:
    """Bounds per fairness key (0: none)."""

    max_in_flight_per_key: int = 0
    per_key_rate: float = 0.0
    per_key_burst: int = 0
    #: Quotas per key over several windows (``used`` is not reported per key).
    per_key_windows: tuple[RateWindow, ...] = ()

    def to_proto(self) -> pb.KeyLimits:
        return pb.KeyLimits(
            max_in_flight_per_key=self.max_in_flight_per_key,
            per_key_rate=self.per_key_rate,
            per_key_burst=self.per_key_burst,
            per_key_windows=[w.to_proto() for w in self.per_key_windows],
        )

    @classmethod
    def from_proto(cls, msg: pb.KeyLimits) -> KeyLimits:
        windows = tuple(RateWindow.from_proto(w) for w in msg.per_key_windows)
        return cls(msg.max_in_flight_per_key, msg.per_key_rate, msg.per_key_burst, windows)


@dataclass(frozen=True)
class RateWindow:
    """A quota: at most ``limit`` dispatches in each window of ``period`` seconds (windows
    fixed and aligned to the epoch: a day's starts at 00:00 UTC). ``used`` and
    ``window_start`` are what the server counted, on answers."""

    limit: int
    period: float
    used: int = 0
    window_start: datetime.datetime | None = None

    def to_proto(self) -> pb.RateWindow:
        return pb.RateWindow(limit=self.limit, period=_duration(self.period))

    @classmethod
    def from_proto(cls, msg: pb.RateWindow) -> RateWindow:
        start = None
        if msg.HasField("window_start"):
            start = msg.window_start.ToDatetime(tzinfo=datetime.UTC)
        period = msg.period.seconds + msg.period.nanos / 1e9
        return cls(msg.limit, period, msg.used, start)


@dataclass(frozen=True)
class AdaptiveRate:
    """AIMD of a queue's rate on throttle signals: each signal multiplies the effective rate
    by ``decrease`` (not below ``floor``), each ``quiet_interval`` seconds without one adds
    ``increase`` per second (0: 5 % of the configured rate), never above the configured rate.
    """

    floor: float
    decrease: float = 0.5
    increase: float = 0.0
    quiet_interval: float = 1.0

    def to_proto(self) -> pb.AdaptiveRate:
        msg = pb.AdaptiveRate(floor=self.floor, decrease=self.decrease, increase=self.increase)
        msg.quiet_interval.CopyFrom(_duration(self.quiet_interval))
        return msg

    @classmethod
    def from_proto(cls, msg: pb.AdaptiveRate) -> AdaptiveRate:
        quiet = msg.quiet_interval.seconds + msg.quiet_interval.nanos / 1e9
        return cls(msg.floor, msg.decrease, msg.increase, quiet)


@dataclass(frozen=True)
class Attempt:
    """One delivery of a job and how it ended (error None: it did not fail)."""

    number: int
    worker_id: str
    dispatch_time: datetime.datetime
    finish_time: datetime.datetime
    error_message: str = ""
    error_code: str = ""
    failed: bool = False
    #: HTTP push only: the endpoint's status code (0: no response came).
    http_status: int = 0
    #: HTTP push only: seconds the call took.
    latency: float | None = None

    @classmethod
    def from_proto(cls, msg: pb.Attempt) -> Attempt:
        return cls(
            number=msg.number,
            worker_id=msg.worker_id,
            dispatch_time=_time(msg.dispatch_time),
            finish_time=_time(msg.finish_time),
            error_message=msg.error.message,
            error_code=msg.error.code,
            failed=msg.HasField("error"),
            http_status=msg.http_status,
            latency=_seconds(msg.latency) if msg.HasField("latency") else None,
        )


@dataclass(frozen=True)
class HttpTarget:
    """The server calls ``method url`` once per attempt of each job of the queue, with the
    payload as the body (see docs/http-push.md).

    ``success_codes`` empty means 200-299. ``signing_secret`` and ``headers`` are
    write-only (header values often hold credentials): the server never returns them, and
    a queue read back has ``signing_enabled`` and ``header_names`` instead. Setting a
    target replaces the previous one whole, so give the secret and headers again with
    every change. ``keep_response_body``: a success keeps the response body as the job's
    result (else the result is empty). The server refuses targets on loopback, private
    and metadata addresses unless its ``--http-allow-cidr`` lists them.
    """

    url: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    success_codes: tuple[int, ...] = ()
    signing_secret: str = ""
    keep_response_body: bool = False
    #: Output only: whether the server holds a signing secret for this target.
    signing_enabled: bool = False
    #: Output only: the names of the headers the server sends (their values stay there).
    header_names: tuple[str, ...] = ()

    def to_proto(self) -> pb.HttpTarget:
        return pb.HttpTarget(
            url=self.url,
            method=self.method,
            headers=self.headers,
            timeout=_duration(self.timeout),
            success_codes=self.success_codes,
            signing_secret=self.signing_secret,
            keep_response_body=self.keep_response_body,
        )

    @classmethod
    def from_proto(cls, msg: pb.HttpTarget) -> HttpTarget:
        return cls(
            url=msg.url,
            method=msg.method,
            headers=dict(msg.headers),
            timeout=_seconds(msg.timeout),
            success_codes=tuple(msg.success_codes),
            keep_response_body=msg.keep_response_body,
            signing_enabled=msg.signing_enabled,
            header_names=tuple(msg.header_names),
        )


@dataclass(frozen=True)
class Slot:
    """A unit of a queue's width held through acquire_slot; renew it before expire_time."""

    slot_id: str
    queue: str
    holder: str
    expire_time: datetime.datetime

    @classmethod
    def from_proto(cls, msg: pb.Slot) -> Slot:
        return cls(msg.slot_id, msg.queue, msg.holder, _time(msg.expire_time))


class JobOptions(TypedDict, total=False):
    """Optional arguments of ``submit`` (and fields of NewJob)."""

    delay: float
    """Seconds from now before the job may run (state SCHEDULED until then)."""
    not_before: datetime.datetime
    """Absolute time before which the job may not run (aware datetime)."""
    ttl: float
    """Seconds from submit after which a job not yet dispatched expires."""
    expire_at: datetime.datetime
    """Absolute expiry time (aware datetime)."""
    ordering_key: str
    """Jobs with the same key run one at a time, in submit order."""
    fairness_key: str
    """Jobs are shared fairly among fairness keys (e.g. a tenant id)."""
    fairness_weight: int
    """Weight of this job's fairness key (0 means 1)."""
    idempotency_key: str
    """A repeated submit with this key returns the first job (job.duplicate is True)."""
    retry_policy: RetryPolicy
    """Overrides the queue's retry policy."""
    batch_id: str
    """The batch (of this queue) the job joins; made on first use (docs/workflows.md)."""
    parent_ids: Sequence[str]
    """Jobs of the same queue that must succeed first: the job is WAITING until then."""
    run_after_failed_parents: bool
    """Run once every parent is final even if one did not succeed (default: cancelled)."""


class QueueChanges(TypedDict, total=False):
    """Policy settings of ``update_queue``; a value of None clears the setting."""

    rate: Rate | None
    retry_policy: RetryPolicy | None
    key_limits: KeyLimits | None
    max_pending: int
    """Most pending + scheduled jobs (0: no bound)."""
    dedup_window: float
    """Seconds an idempotency key is remembered after its job finished."""
    http_target: HttpTarget | None
    """Deliver the queue's jobs to this HTTP endpoint (None: back to workers)."""
    max_throttle_bounces: int
    """Throttle signals one job may answer with before one counts as a failed attempt
    (1-10,000; 0: the default, 20)."""
    adaptive: AdaptiveRate | None
    """Adapt the rate to throttle signals (AIMD); None: the configured rate again."""
    windows: Sequence[RateWindow]
    """Quotas over several windows, all enforced (the whole list; empty clears)."""


def _timestamp(t: datetime.datetime) -> timestamp_pb2.Timestamp:
    if t.tzinfo is None:
        raise ValueError("use an aware datetime (e.g. datetime.now(timezone.utc))")
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(t)
    return ts


def apply_job_options(spec: pb.JobSpec, options: JobOptions) -> pb.JobSpec:
    """Sets the given options on ``spec`` (in place) and returns it."""
    unknown = set(options) - set(JobOptions.__annotations__)
    if unknown:
        raise TypeError(f"unknown job options: {', '.join(sorted(unknown))}")
    if "delay" in options and "not_before" in options:
        raise ValueError("give delay or not_before, not both")
    if "delay" in options:
        when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=options["delay"])
        spec.not_before.CopyFrom(_timestamp(when))
    if "not_before" in options:
        spec.not_before.CopyFrom(_timestamp(options["not_before"]))
    if "ttl" in options:
        spec.ttl.CopyFrom(_duration(options["ttl"]))
    if "expire_at" in options:
        spec.expire_at.CopyFrom(_timestamp(options["expire_at"]))
    if "batch_id" in options:
        spec.batch_id = options["batch_id"]
    if "parent_ids" in options:
        ids = options["parent_ids"]
        if isinstance(ids, str):
            raise TypeError("parent_ids is a sequence of job ids, not one string")
        spec.parent_ids.extend(ids)
    if "run_after_failed_parents" in options:
        spec.run_after_failed_parents = options["run_after_failed_parents"]
    if "retry_policy" in options:
        spec.retry_policy.CopyFrom(options["retry_policy"].to_proto())
    spec.ordering_key = options.get("ordering_key", "")
    spec.fairness_key = options.get("fairness_key", "")
    spec.fairness_weight = options.get("fairness_weight", 0)
    spec.idempotency_key = options.get("idempotency_key", "")
    return spec


def apply_queue_changes(queue: pb.Queue, changes: QueueChanges) -> list[str]:
    """Sets the given settings on ``queue``; returns their update_mask paths."""
    unknown = set(changes) - set(QueueChanges.__annotations__)
    if unknown:
        raise TypeError(f"unknown queue settings: {', '.join(sorted(unknown))}")
    rate = changes.get("rate")
    if rate is not None:
        queue.rate.CopyFrom(rate.to_proto())
    policy = changes.get("retry_policy")
    if policy is not None:
        queue.retry_policy.CopyFrom(policy.to_proto())
    limits = changes.get("key_limits")
    if limits is not None:
        queue.key_limits.CopyFrom(limits.to_proto())
    if "max_pending" in changes:
        queue.max_pending = changes["max_pending"]
    if "dedup_window" in changes:
        queue.dedup_window.CopyFrom(_duration(changes["dedup_window"]))
    target = changes.get("http_target")
    if target is not None:
        queue.http_target.CopyFrom(target.to_proto())
    if "max_throttle_bounces" in changes:
        queue.max_throttle_bounces = changes["max_throttle_bounces"]
    adaptive = changes.get("adaptive")
    if adaptive is not None:
        queue.adaptive.CopyFrom(adaptive.to_proto())
    queue.windows.extend(w.to_proto() for w in changes.get("windows", ()))
    return sorted(changes)
