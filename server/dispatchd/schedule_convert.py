"""Schedule records <-> protobuf messages: requests, answers, and the stored form (journal,
snapshot, Redis), which is the same Schedule message with its state fields filled."""

from __future__ import annotations

import math

from dispatchd import convert
from dispatchd.engine.errors import InvalidArgument
from dispatchd.engine.schedule_spec import SpecRecord
from dispatchd.engine.schedules import (
    CatchupMode,
    Firing,
    FiringCause,
    FiringOutcome,
    JobTemplate,
    Overlap,
    SchedulePolicy,
    ScheduleRecord,
)
from dispatchd_client.v1 import dispatcher_pb2 as pb

NEXT_FIRES_SHOWN = 10
NEXT_FIRES_LISTED = 3


def _whole_seconds(d: object, what: str) -> int:
    seconds = convert.duration_seconds(d)  # type: ignore[arg-type]
    if seconds != math.floor(seconds):
        raise InvalidArgument(f"{what} must be whole seconds, got {seconds:g} s", field=what)
    return int(seconds)


def spec_from_pb(msg: pb.ScheduleSpec) -> SpecRecord:
    intervals = tuple(
        (
            _whole_seconds(i.every, f"intervals[{n}].every"),
            _whole_seconds(i.offset, f"intervals[{n}].offset"),
        )
        for n, i in enumerate(msg.intervals)
    )
    return SpecRecord(
        cron_expressions=tuple(msg.cron_expressions),
        intervals=intervals,
        time_zone=msg.time_zone,
        start=convert.seconds(msg.start_time) if msg.HasField("start_time") else None,
        end=convert.seconds(msg.end_time) if msg.HasField("end_time") else None,
        jitter=convert.duration_seconds(msg.jitter),
    )


def spec_to_pb(spec: SpecRecord) -> pb.ScheduleSpec:
    msg = pb.ScheduleSpec(cron_expressions=spec.cron_expressions, time_zone=spec.time_zone)
    for every, offset in spec.intervals:
        msg.intervals.add(every=convert.duration(every), offset=convert.duration(offset))
    if spec.start is not None:
        msg.start_time.CopyFrom(convert.timestamp(spec.start))
    if spec.end is not None:
        msg.end_time.CopyFrom(convert.timestamp(spec.end))
    if spec.jitter:
        msg.jitter.CopyFrom(convert.duration(spec.jitter))
    return msg


def template_from_pb(msg: pb.JobSpec) -> JobTemplate:
    ttl = convert.duration_seconds(msg.ttl) if msg.HasField("ttl") else None
    if ttl is not None and not 0 < ttl <= convert.MAX_TTL_SECONDS:
        raise InvalidArgument(
            f"ttl must be more than 0 s and at most 366 days, got {ttl:g} s", field="ttl"
        )
    bare = pb.JobSpec()
    bare.CopyFrom(msg)
    bare.ClearField("ttl")
    return JobTemplate(convert.new_job(bare, 0.0), ttl)


def template_to_pb(t: JobTemplate) -> pb.JobSpec:
    job = t.job
    msg = pb.JobSpec(
        queue=job.queue,
        payload=job.payload,
        priority=job.priority,
        headers=job.headers,
        content_type=job.content_type,
        ordering_key=job.ordering_key,
        fairness_key=job.fairness_key,
        fairness_weight=job.fairness_weight,
    )
    if job.retry_policy is not None:
        p = job.retry_policy
        msg.retry_policy.CopyFrom(
            pb.RetryPolicy(
                max_attempts=p.max_attempts,
                min_backoff=convert.duration(p.min_backoff),
                max_backoff=convert.duration(p.max_backoff),
                multiplier=p.multiplier,
                jitter=p.jitter,
            )
        )
    if t.ttl is not None:
        msg.ttl.CopyFrom(convert.duration(t.ttl))
    return msg


def _enum(value: int, kind: type[Overlap] | type[CatchupMode], default: int, what: str) -> int:
    if value == 0:
        return default
    if value not in kind._value2member_map_:
        raise InvalidArgument(f"unknown {what} {value}", field=what)
    return value


def overlap_of(value: int, what: str = "overlap") -> Overlap | None:
    """A request's overlap override; None when UNSPECIFIED."""
    return None if value == 0 else Overlap(_enum(value, Overlap, 0, what))


def policy_from_pb(msg: pb.SchedulePolicies) -> SchedulePolicy:
    window = SchedulePolicy().catchup_window
    if msg.HasField("catchup_window"):
        window = convert.duration_seconds(msg.catchup_window)
    return SchedulePolicy(
        overlap=Overlap(_enum(msg.overlap, Overlap, Overlap.SKIP, "overlap")),
        catchup_window=window,
        catchup_mode=CatchupMode(
            _enum(msg.catchup_mode, CatchupMode, CatchupMode.ALL, "catchup_mode")
        ),
    )


def policy_to_pb(p: SchedulePolicy) -> pb.SchedulePolicies:
    return pb.SchedulePolicies(
        overlap=int(p.overlap),  # type: ignore[arg-type]
        catchup_window=convert.duration(p.catchup_window),
        catchup_mode=int(p.catchup_mode),  # type: ignore[arg-type]
    )


def firing_to_pb(f: Firing) -> pb.ScheduleFiring:
    return pb.ScheduleFiring(
        tick_time=convert.timestamp(f.tick),
        fire_time=convert.timestamp(f.fire_time),
        job_id=f.job_id,
        outcome=int(f.outcome),  # type: ignore[arg-type]
        message=f.message,
        cause=int(f.cause),  # type: ignore[arg-type]
    )


def firing_from_pb(msg: pb.ScheduleFiring) -> Firing:
    return Firing(
        tick=convert.seconds(msg.tick_time),
        fire_time=convert.seconds(msg.fire_time),
        job_id=msg.job_id,
        outcome=FiringOutcome(msg.outcome),
        cause=FiringCause(msg.cause or FiringCause.SCHEDULED),
        message=msg.message,
    )


def definition_from_pb(msg: pb.Schedule) -> ScheduleRecord:
    """A request's schedule (its definition), every field converted and checked for what
    only the wire form can get wrong; the engine checks the rest. Errors name fields
    relative to the Schedule message."""
    try:
        spec = spec_from_pb(msg.spec)
    except InvalidArgument as e:
        raise e.under("spec") from None
    try:
        template = template_from_pb(msg.template)
    except InvalidArgument as e:
        raise e.under("template") from None
    try:
        policy = policy_from_pb(msg.policies)
    except InvalidArgument as e:
        raise e.under("policies") from None
    try:
        return ScheduleRecord(
            id=msg.id,
            spec=spec,
            template=template,
            policy=policy,
            paused=msg.paused,
            note=msg.note,
        )
    except InvalidArgument as e:  # the spec's time zone, read as it compiles
        raise e.under("spec") from None


def schedule_to_pb(
    rec: ScheduleRecord, *, next_fires: int = NEXT_FIRES_SHOWN, recent: int = 10
) -> pb.Schedule:
    """An answer's Schedule (next_fires > 0), or the stored form (next_fires=0)."""
    msg = pb.Schedule(
        id=rec.id,
        spec=spec_to_pb(rec.spec),
        template=template_to_pb(rec.template),
        policies=policy_to_pb(rec.policy),
        paused=rec.paused,
        note=rec.note,
        create_time=convert.timestamp(rec.create_time),
        update_time=convert.timestamp(rec.update_time),
        owner=rec.owner,
        submitted_count=rec.submitted,
        skipped_count=rec.skipped,
        missed_count=rec.missed,
        refused_count=rec.refused,
        last_tick_time=convert.timestamp(rec.cursor),
        latest_job_ids=rec.latest_jobs,
    )
    msg.recent_firings.extend(firing_to_pb(f) for f in rec.recent[:recent])
    if next_fires:
        msg.next_fire_times.extend(convert.timestamp(t) for t in rec.next_fire_times(next_fires))
    return msg


def schedule_from_stored(msg: pb.Schedule) -> ScheduleRecord:
    """The stored form back, state included (journal, snapshot, Redis)."""
    rec = definition_from_pb(msg)
    rec.create_time = convert.seconds(msg.create_time)
    rec.update_time = convert.seconds(msg.update_time)
    rec.owner = msg.owner
    rec.submitted = msg.submitted_count
    rec.skipped = msg.skipped_count
    rec.missed = msg.missed_count
    rec.refused = msg.refused_count
    rec.cursor = convert.seconds(msg.last_tick_time)
    rec.latest_jobs = list(msg.latest_job_ids)
    rec.recent = [firing_from_pb(f) for f in msg.recent_firings]
    return rec
