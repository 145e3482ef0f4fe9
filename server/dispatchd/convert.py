"""Engine records <-> protobuf messages. Shared by the service layer and the snapshot store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from dispatchd.engine import (
    AttemptRecord,
    HttpTarget,
    InvalidArgument,
    JobFailure,
    JobRecord,
    JobState,
    JobView,
    NewJob,
    QueueSettings,
    QueueView,
)
from dispatchd.engine.policies import AdaptiveRate, KeyLimits, Rate, RateWindow, RetryPolicy
from dispatchd.engine.throttling import DEFAULT_MAX_BOUNCES
from dispatchd_client.v1 import dispatcher_pb2 as pb

#: (period, window start, dispatches counted) of each quota window (QueueView.window_usage).
WindowUsage = tuple[tuple[float, float, int], ...]
#: (fairness key, its WindowUsage) of the keys with per-key quota counts.
KeyWindowUsage = tuple[tuple[str, WindowUsage], ...]


def timestamp(t: float) -> Timestamp:
    ns = int(t * 1e9)
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def duration(s: float) -> Duration:
    ns = int(s * 1e9)
    return Duration(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def duration_seconds(d: Duration) -> float:
    return d.seconds + d.nanos / 1e9


MAX_TTL_SECONDS = 366 * 86_400.0


def retry_policy(msg: pb.RetryPolicy, what: str = "retry_policy") -> RetryPolicy:
    return RetryPolicy.of(
        msg.max_attempts,
        duration_seconds(msg.min_backoff) if msg.HasField("min_backoff") else 1.0,
        duration_seconds(msg.max_backoff) if msg.HasField("max_backoff") else 0.0,
        msg.multiplier,
        msg.jitter,
        what,
    )


def new_job(spec: pb.JobSpec, now: float) -> NewJob:
    """Validates what only the wire form can get wrong; the engine checks the rest."""
    expire_at = seconds(spec.expire_at) if spec.HasField("expire_at") else None
    if spec.HasField("ttl"):
        ttl = duration_seconds(spec.ttl)
        if not 0 < ttl <= MAX_TTL_SECONDS:
            raise InvalidArgument(
                f"ttl must be more than 0 s and at most 366 days, got {ttl:g} s", field="ttl"
            )
        expire_at = now + ttl if expire_at is None else min(expire_at, now + ttl)
    return NewJob(
        queue=spec.queue,
        payload=spec.payload,
        priority=spec.priority,
        headers=dict(spec.headers) if spec.headers else {},
        content_type=spec.content_type,
        retry_policy=(retry_policy(spec.retry_policy) if spec.HasField("retry_policy") else None),
        not_before=seconds(spec.not_before) if spec.HasField("not_before") else None,
        expire_at=expire_at,
        ordering_key=spec.ordering_key,
        fairness_key=spec.fairness_key,
        idempotency_key=spec.idempotency_key,
        fairness_weight=spec.fairness_weight,
        batch_id=spec.batch_id,
        parent_ids=tuple(spec.parent_ids) if spec.parent_ids else (),
        run_after_failed_parents=spec.run_after_failed_parents,
    )


def new_jobs(specs: Sequence[pb.JobSpec], now: float) -> list[NewJob]:
    """A SubmitBatch's jobs; an error names the job as ``jobs[i]`` (its field path, and
    its message when there are several jobs), like the engine's own checks."""
    try:
        return [new_job(s, now) for s in specs]
    except InvalidArgument:
        pass
    for i, spec in enumerate(specs):  # only on the failure path: find which job it was
        try:
            new_job(spec, now)
        except InvalidArgument as e:
            raise e.under(f"jobs[{i}]", label=len(specs) > 1) from None
    raise AssertionError("unreachable: a job failed once and then passed")


def _fill_policy(msg: pb.RetryPolicy, p: RetryPolicy) -> None:
    msg.max_attempts = p.max_attempts
    msg.min_backoff.CopyFrom(duration(p.min_backoff))
    msg.max_backoff.CopyFrom(duration(p.max_backoff))
    msg.multiplier = p.multiplier
    msg.jitter = p.jitter


def _fill_error(msg: pb.JobError, e: JobFailure) -> None:
    msg.message = e.message
    msg.retryable = e.retryable
    msg.code = e.code


def set_time(ts: Timestamp, t: float) -> None:
    ns = int(t * 1e9)
    ts.seconds = ns // 1_000_000_000
    ts.nanos = ns % 1_000_000_000


def fill_job(msg: pb.Job, job: JobView, with_payload: bool = True) -> pb.Job:
    """Fills a fresh ``msg`` in place (cheaper than building sub-messages and copying
    them); fields at their zero value are left unset, so ``msg`` must start empty."""
    msg.id = job.id
    msg.queue = job.queue
    if with_payload:
        msg.payload = job.payload
    # Zeros are proto3's defaults: a fresh message already holds them, and each field set
    # crosses into protobuf's C code (this runs for every submit answer and delivery).
    if job.priority:
        msg.priority = job.priority
    msg.state = int(job.state)  # type: ignore[assignment]
    if job.headers:
        msg.headers.update(job.headers)
    if job.attempt:
        msg.attempt = job.attempt
    set_time(msg.submit_time, job.submit_time)
    if job.content_type:
        msg.content_type = job.content_type
    _fill_run_fields(msg, job)
    _fill_policy_fields(msg, job)
    if job.batch_id or job.parent_ids or job.progress is not None or job.cancel_reason:
        _fill_flow_fields(msg, job)
    return msg


def _fill_flow_fields(msg: pb.Job, job: JobView) -> None:
    """Workflow fields (engine/flows.py): batch, parents, progress, why it was cancelled."""
    msg.batch_id = job.batch_id
    msg.parent_ids.extend(job.parent_ids)
    msg.run_after_failed_parents = job.run_after_failed_parents
    msg.cancel_reason = job.cancel_reason
    msg.progress_dropped_count = job.progress_dropped
    if job.progress is not None:
        percent, message, at = job.progress
        if percent is not None:
            msg.progress.percent = percent
        msg.progress.message = message
        set_time(msg.progress.report_time, at)


def _fill_run_fields(msg: pb.Job, job: JobView) -> None:
    """What a job gets once it ran or finished: worker, times, result or error, lease."""
    if job.result:
        msg.result = job.result
    if job.worker_id:
        msg.worker_id = job.worker_id
    if job.dispatch_time is not None:
        set_time(msg.dispatch_time, job.dispatch_time)
    if job.first_dispatch_time is not None:
        set_time(msg.first_dispatch_time, job.first_dispatch_time)
    if job.finish_time is not None:
        set_time(msg.finish_time, job.finish_time)
    if job.error is not None:
        _fill_error(msg.error, job.error)
    if job.lease is not None and job.state is JobState.UNDERWAY:
        set_time(msg.lease_expire_time, job.lease.deadline)


def _fill_policy_fields(msg: pb.Job, job: JobView) -> None:
    if job.not_before is not None:
        set_time(msg.not_before, job.not_before)
    if job.expire_at is not None:
        set_time(msg.expire_time, job.expire_at)
    if job.ordering_key:
        msg.ordering_key = job.ordering_key
    if job.fairness_key:
        msg.fairness_key = job.fairness_key
    if job.idempotency_key:
        msg.idempotency_key = job.idempotency_key
    if job.retry_policy is not None:
        _fill_policy(msg.retry_policy, job.retry_policy)
    if job.throttle_count:
        msg.throttle_count = job.throttle_count
    for a in job.attempts:
        am = msg.attempts.add(number=a.number, worker_id=a.worker_id)
        set_time(am.dispatch_time, a.dispatch_time)
        set_time(am.finish_time, a.finish_time)
        if a.error is not None:
            _fill_error(am.error, a.error)
        if a.http_status:
            am.http_status = a.http_status
        if a.latency is not None:
            am.latency.CopyFrom(duration(a.latency))


def job_to_pb(job: JobView, with_payload: bool = True) -> pb.Job:
    return fill_job(pb.Job(), job, with_payload)


def job_from_pb(msg: pb.Job) -> JobRecord:
    """For restoring a snapshot: the engine assigns the sequence number."""
    job = JobRecord(
        id=msg.id,
        queue=msg.queue,
        payload=msg.payload,
        priority=msg.priority,
        headers=dict(msg.headers),
        content_type=msg.content_type,
        seq=0,
        submit_time=seconds(msg.submit_time),
        state=JobState(msg.state) if msg.state in JobState._value2member_map_ else JobState.PENDING,
        attempt=msg.attempt,
        worker_id=msg.worker_id,
        result=msg.result,
    )
    if msg.HasField("dispatch_time"):
        job.dispatch_time = seconds(msg.dispatch_time)
    if msg.HasField("first_dispatch_time"):
        job.first_dispatch_time = seconds(msg.first_dispatch_time)
    if msg.HasField("finish_time"):
        job.finish_time = seconds(msg.finish_time)
    if msg.HasField("error"):
        job.error = _failure(msg.error)
    if msg.HasField("not_before"):
        job.not_before = seconds(msg.not_before)
    if msg.HasField("expire_time"):
        job.expire_at = seconds(msg.expire_time)
    job.ordering_key = msg.ordering_key
    job.fairness_key = msg.fairness_key
    job.idempotency_key = msg.idempotency_key
    job.batch_id = msg.batch_id
    job.parent_ids = tuple(msg.parent_ids)
    job.run_after_failed_parents = msg.run_after_failed_parents
    job.cancel_reason = msg.cancel_reason
    job.progress_dropped = msg.progress_dropped_count
    if msg.HasField("progress"):
        p = msg.progress
        percent = p.percent if p.HasField("percent") else None
        job.progress = (percent, p.message, seconds(p.report_time))
    job.throttle_count = msg.throttle_count
    if msg.HasField("retry_policy"):
        job.retry_policy = retry_policy(msg.retry_policy)
    job.attempts = tuple(
        AttemptRecord(
            a.number,
            a.worker_id,
            seconds(a.dispatch_time),
            seconds(a.finish_time),
            _failure(a.error) if a.HasField("error") else None,
            a.http_status,
            duration_seconds(a.latency) if a.HasField("latency") else None,
        )
        for a in msg.attempts
    )
    return job


def _failure(e: pb.JobError) -> JobFailure:
    return JobFailure(e.message, e.retryable, e.code)


def _fill_target(msg: pb.HttpTarget, t: HttpTarget, with_secrets: bool) -> None:
    """Header values are write-only like the signing secret (they often hold credentials):
    answers list the header names, the stored form keeps the values."""
    msg.url = t.url
    msg.method = t.method
    msg.timeout.CopyFrom(duration(t.timeout))
    msg.success_codes.extend(t.success_codes)
    msg.signing_enabled = bool(t.signing_secret)
    msg.keep_response_body = t.keep_response_body
    if with_secrets:
        msg.headers.update(t.headers)
        msg.signing_secret = t.signing_secret
    else:
        msg.header_names.extend(name for name, _ in t.headers)


def http_target(msg: pb.Queue) -> HttpTarget | None:
    """Validated like UpdateQueue input; an unset message is no target."""
    if not msg.HasField("http_target"):
        return None
    t = msg.http_target
    return HttpTarget.of(
        t.url,
        t.method,
        dict(t.headers),
        duration_seconds(t.timeout) if t.HasField("timeout") else None,
        t.success_codes,
        t.signing_secret,
        t.keep_response_body,
    )


def settings_to_pb(
    name: str,
    s: QueueSettings,
    with_secrets: bool = True,
    usage: WindowUsage = (),
    key_usage: KeyWindowUsage = (),
) -> pb.Queue:
    """The stored form (snapshot, journal) keeps secrets; responses leave them out. ``usage``
    (the quota windows' counts) is both shown and stored."""
    msg = pb.Queue(
        name=name,
        width=s.width,
        paused=s.paused,
        lease_duration=duration(s.lease_seconds),
        max_pending=s.max_pending,
        dedup_window=duration(s.dedup_window),
        max_throttle_bounces=s.max_throttle_bounces,
    )
    if s.rate is not None:
        msg.rate.per_second = s.rate.per_second
        msg.rate.burst = s.rate.burst
    if s.retry_policy is not None:
        _fill_policy(msg.retry_policy, s.retry_policy)
    if s.key_limits is not None:
        kl = s.key_limits
        msg.key_limits.max_in_flight_per_key = kl.max_in_flight_per_key
        if kl.per_key_rate is not None:
            msg.key_limits.per_key_rate = kl.per_key_rate.per_second
            msg.key_limits.per_key_burst = kl.per_key_rate.burst
    if s.http_target is not None:
        _fill_target(msg.http_target, s.http_target, with_secrets)
    if s.adaptive is not None:
        a = s.adaptive
        msg.adaptive.floor = a.floor
        msg.adaptive.decrease = a.decrease
        msg.adaptive.increase = a.increase
        msg.adaptive.quiet_interval.CopyFrom(duration(a.quiet))
    _fill_windows(msg.windows, s.windows, usage)
    if s.key_limits is not None:
        _fill_windows(msg.key_limits.per_key_windows, s.key_limits.windows, ())
    for key, counts in key_usage:  # the stored form only: answers never pass any
        k = msg.key_window_counts.add(fairness_key=key)
        _fill_windows(k.windows, s.key_limits.windows if s.key_limits else (), counts)
    return msg


def _fill_windows(into: Any, windows: tuple[RateWindow, ...], usage: WindowUsage) -> None:
    counted = {period: (start, n) for period, start, n in usage}
    for w in windows:
        wm = into.add(limit=w.limit, period=duration(w.period))
        if w.period in counted:
            start, wm.used = counted[w.period]
            set_time(wm.window_start, start)


def queue_to_pb(view: QueueView) -> pb.Queue:
    msg = settings_to_pb(view.name, view.settings, with_secrets=False, usage=view.window_usage)
    msg.pending_count = view.pending_count
    msg.underway_count = view.underway_count
    msg.worker_count = view.worker_count
    msg.scheduled_count = view.scheduled_count
    msg.slot_count = view.slot_count
    if view.throttled_until is not None:
        set_time(msg.throttled_until, view.throttled_until)
        msg.throttle_reason = view.throttle_reason
    msg.throttled_key_count = view.throttled_key_count
    msg.effective_rate = view.effective_rate
    return msg


def windows(msg: pb.Queue) -> tuple[RateWindow, ...]:
    """Validated like UpdateQueue input (their counts are output only: window_usage)."""
    return RateWindow.several(
        [
            RateWindow.of(w.limit, duration_seconds(w.period), f"windows[{i}]")
            for i, w in enumerate(msg.windows)
        ]
    )


def window_usage(msg: pb.Queue) -> WindowUsage:
    """The quota counts a stored queue kept (journal, snapshot)."""
    return _usage(msg.windows)


def key_window_usage(msg: pb.Queue) -> KeyWindowUsage:
    """The per-key quota counts a stored queue kept."""
    return tuple((k.fairness_key, _usage(k.windows)) for k in msg.key_window_counts)


def _usage(windows: Any) -> WindowUsage:
    return tuple(
        (duration_seconds(w.period), seconds(w.window_start), w.used)
        for w in windows
        if w.HasField("window_start")
    )


def adaptive(msg: pb.Queue) -> AdaptiveRate | None:
    """Validated like UpdateQueue input; an unset message is no adaptation."""
    if not msg.HasField("adaptive"):
        return None
    a = msg.adaptive
    quiet = duration_seconds(a.quiet_interval) if a.HasField("quiet_interval") else 1.0
    return AdaptiveRate.of(a.floor, a.decrease, a.increase, quiet)


def max_throttle_bounces(msg: pb.Queue) -> int:
    """0 on the wire is the default (proto3 cannot tell unset from 0)."""
    return msg.max_throttle_bounces or DEFAULT_MAX_BOUNCES


def rate(msg: pb.Queue) -> Rate | None:
    return Rate.of(msg.rate.per_second, msg.rate.burst) if msg.HasField("rate") else None


def key_limits(msg: pb.Queue) -> KeyLimits | None:
    if not msg.HasField("key_limits"):
        return None
    k = msg.key_limits
    quotas = tuple(
        RateWindow.of(w.limit, duration_seconds(w.period), f"key_limits.per_key_windows[{i}]")
        for i, w in enumerate(k.per_key_windows)
    )
    return KeyLimits.of(k.max_in_flight_per_key, k.per_key_rate, k.per_key_burst, quotas)


def settings_from_pb(msg: pb.Queue) -> QueueSettings:
    """For restoring a snapshot (validated like UpdateQueue input)."""
    return QueueSettings(
        width=msg.width,
        paused=msg.paused,
        lease_seconds=duration_seconds(msg.lease_duration),
        rate=rate(msg),
        retry_policy=retry_policy(msg.retry_policy) if msg.HasField("retry_policy") else None,
        key_limits=key_limits(msg),
        max_pending=msg.max_pending,
        dedup_window=(
            duration_seconds(msg.dedup_window) if msg.HasField("dedup_window") else 86_400.0
        ),
        http_target=http_target(msg),
        max_throttle_bounces=max_throttle_bounces(msg),
        adaptive=adaptive(msg),
        windows=windows(msg),
    )
