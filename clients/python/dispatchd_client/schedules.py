"""Recurring schedules as client-side values: what a schedule fires at, what it did, and the
requests of the schedule calls (shared by Client and AsyncClient, like _requests)."""

from __future__ import annotations

import datetime
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

from dispatchd_client.types import NewJob
from dispatchd_client.v1 import dispatcher_pb2 as pb

__all__ = [
    "CatchupMode",
    "FiringCause",
    "FiringOutcome",
    "Interval",
    "Overlap",
    "Schedule",
    "ScheduleFiring",
    "ScheduleSpec",
]


class Overlap(enum.IntEnum):
    """What a tick does while earlier jobs of its schedule are unfinished."""

    UNSPECIFIED = pb.SCHEDULE_OVERLAP_POLICY_UNSPECIFIED
    SKIP = pb.SCHEDULE_OVERLAP_POLICY_SKIP
    ALLOW = pb.SCHEDULE_OVERLAP_POLICY_ALLOW
    BUFFER_ONE = pb.SCHEDULE_OVERLAP_POLICY_BUFFER_ONE

    @classmethod
    def _missing_(cls, value: object) -> Overlap | None:
        return cls.UNSPECIFIED if isinstance(value, int) else None


class CatchupMode(enum.IntEnum):
    """Which missed ticks fire after downtime: ALL (oldest first) or LATEST."""

    UNSPECIFIED = pb.SCHEDULE_CATCHUP_MODE_UNSPECIFIED
    ALL = pb.SCHEDULE_CATCHUP_MODE_ALL
    LATEST = pb.SCHEDULE_CATCHUP_MODE_LATEST

    @classmethod
    def _missing_(cls, value: object) -> CatchupMode | None:
        return cls.UNSPECIFIED if isinstance(value, int) else None


class FiringOutcome(enum.IntEnum):
    UNSPECIFIED = pb.FIRING_OUTCOME_UNSPECIFIED
    SUBMITTED = pb.FIRING_OUTCOME_SUBMITTED
    SKIPPED = pb.FIRING_OUTCOME_SKIPPED
    DUPLICATE = pb.FIRING_OUTCOME_DUPLICATE
    REFUSED = pb.FIRING_OUTCOME_REFUSED
    MISSED = pb.FIRING_OUTCOME_MISSED

    @classmethod
    def _missing_(cls, value: object) -> FiringOutcome | None:
        return cls.UNSPECIFIED if isinstance(value, int) else None


class FiringCause(enum.IntEnum):
    UNSPECIFIED = pb.FIRING_CAUSE_UNSPECIFIED
    SCHEDULED = pb.FIRING_CAUSE_SCHEDULED
    TRIGGERED = pb.FIRING_CAUSE_TRIGGERED
    BACKFILL = pb.FIRING_CAUSE_BACKFILL

    @classmethod
    def _missing_(cls, value: object) -> FiringCause | None:
        return cls.UNSPECIFIED if isinstance(value, int) else None


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(datetime.timedelta(seconds=seconds))
    return d


def _seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def _timestamp(t: datetime.datetime) -> timestamp_pb2.Timestamp:
    if t.tzinfo is None:
        raise ValueError("use an aware datetime (e.g. datetime.now(timezone.utc))")
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(t)
    return ts


def _time(ts: timestamp_pb2.Timestamp) -> datetime.datetime:
    return ts.ToDatetime(tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Interval:
    """Fires at epoch + offset + n * every (whole seconds)."""

    every: float
    offset: float = 0.0


@dataclass(frozen=True)
class ScheduleSpec:
    """The instants a schedule fires at: the union of its cron expressions (5 fields, or 6
    with seconds first; read in ``time_zone``, an IANA name, UTC when empty) and intervals,
    between ``start`` and ``end``, each tick up to ``jitter`` seconds later."""

    cron: tuple[str, ...] = ()
    intervals: tuple[Interval, ...] = ()
    time_zone: str = ""
    start: datetime.datetime | None = None
    end: datetime.datetime | None = None
    jitter: float = 0.0

    @classmethod
    def of(
        cls,
        cron: str | Sequence[str] = (),
        *,
        every: float | None = None,
        offset: float = 0.0,
        time_zone: str = "",
        start: datetime.datetime | None = None,
        end: datetime.datetime | None = None,
        jitter: float = 0.0,
    ) -> ScheduleSpec:
        """``ScheduleSpec.of("0 3 * * *", time_zone="Europe/Berlin")`` or ``.of(every=60)``."""
        exprs = (cron,) if isinstance(cron, str) else tuple(cron)
        intervals = (Interval(every, offset),) if every is not None else ()
        return cls(exprs, intervals, time_zone, start, end, jitter)

    def to_proto(self) -> pb.ScheduleSpec:
        msg = pb.ScheduleSpec(cron_expressions=self.cron, time_zone=self.time_zone)
        for i in self.intervals:
            msg.intervals.add(every=_duration(i.every), offset=_duration(i.offset))
        if self.start is not None:
            msg.start_time.CopyFrom(_timestamp(self.start))
        if self.end is not None:
            msg.end_time.CopyFrom(_timestamp(self.end))
        if self.jitter:
            msg.jitter.CopyFrom(_duration(self.jitter))
        return msg

    @classmethod
    def from_proto(cls, msg: pb.ScheduleSpec) -> ScheduleSpec:
        return cls(
            cron=tuple(msg.cron_expressions),
            intervals=tuple(Interval(_seconds(i.every), _seconds(i.offset)) for i in msg.intervals),
            time_zone=msg.time_zone,
            start=_time(msg.start_time) if msg.HasField("start_time") else None,
            end=_time(msg.end_time) if msg.HasField("end_time") else None,
            jitter=_seconds(msg.jitter),
        )


@dataclass(frozen=True)
class ScheduleFiring:
    """One tick of a schedule and what it did."""

    tick_time: datetime.datetime
    fire_time: datetime.datetime
    job_id: str
    outcome: FiringOutcome
    cause: FiringCause
    message: str = ""

    @classmethod
    def from_proto(cls, msg: pb.ScheduleFiring) -> ScheduleFiring:
        return cls(
            _time(msg.tick_time),
            _time(msg.fire_time),
            msg.job_id,
            FiringOutcome(msg.outcome),
            FiringCause(msg.cause),
            msg.message,
        )


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """A schedule as the server knows it, with its next fire times and recent firings."""

    id: str
    spec: ScheduleSpec
    #: The job each tick submits (its queue, payload, headers, priority and policies).
    template: pb.JobSpec
    overlap: Overlap = Overlap.SKIP
    catchup_window: float = 3600.0
    catchup_mode: CatchupMode = CatchupMode.ALL
    paused: bool = False
    note: str = ""
    next_fire_times: tuple[datetime.datetime, ...] = ()
    #: Newest first.
    recent_firings: tuple[ScheduleFiring, ...] = ()
    create_time: datetime.datetime | None = None
    update_time: datetime.datetime | None = None
    owner: str = ""
    submitted_count: int = 0
    skipped_count: int = 0
    missed_count: int = 0
    refused_count: int = 0
    last_tick_time: datetime.datetime | None = None
    latest_job_ids: tuple[str, ...] = field(default=())

    @classmethod
    def from_proto(cls, msg: pb.Schedule) -> Schedule:
        p = msg.policies
        return cls(
            id=msg.id,
            spec=ScheduleSpec.from_proto(msg.spec),
            template=msg.template,
            overlap=Overlap(p.overlap),
            catchup_window=_seconds(p.catchup_window),
            catchup_mode=CatchupMode(p.catchup_mode),
            paused=msg.paused,
            note=msg.note,
            next_fire_times=tuple(_time(t) for t in msg.next_fire_times),
            recent_firings=tuple(ScheduleFiring.from_proto(f) for f in msg.recent_firings),
            create_time=_time(msg.create_time) if msg.HasField("create_time") else None,
            update_time=_time(msg.update_time) if msg.HasField("update_time") else None,
            owner=msg.owner,
            submitted_count=msg.submitted_count,
            skipped_count=msg.skipped_count,
            missed_count=msg.missed_count,
            refused_count=msg.refused_count,
            last_tick_time=_time(msg.last_tick_time) if msg.HasField("last_tick_time") else None,
            latest_job_ids=tuple(msg.latest_job_ids),
        )


def template_proto(job: NewJob | pb.JobSpec) -> pb.JobSpec:
    """A schedule's template: a NewJob (its options may hold ttl, not delay) or a JobSpec."""
    if isinstance(job, pb.JobSpec):
        return job
    from dispatchd_client._requests import job_spec

    if "delay" in job.options or "not_before" in job.options:
        raise ValueError("a schedule's template takes no delay or not_before")
    return job_spec(
        job.queue,
        job.payload,
        priority=job.priority,
        headers=job.headers,
        content_type=job.content_type,
        options=job.options,
    )


def schedule_proto(
    schedule_id: str,
    spec: ScheduleSpec,
    template: NewJob | pb.JobSpec,
    *,
    overlap: Overlap,
    catchup_window: float,
    catchup_mode: CatchupMode,
    paused: bool,
    note: str,
) -> pb.Schedule:
    return pb.Schedule(
        id=schedule_id,
        spec=spec.to_proto(),
        template=template_proto(template),
        policies=pb.SchedulePolicies(
            overlap=cast(pb.ScheduleOverlapPolicy, int(overlap)),
            catchup_window=_duration(catchup_window),
            catchup_mode=cast(pb.ScheduleCatchupMode, int(catchup_mode)),
        ),
        paused=paused,
        note=note,
    )


def update_request(
    schedule_id: str,
    *,
    spec: ScheduleSpec | None,
    template: NewJob | pb.JobSpec | None,
    overlap: Overlap | None,
    catchup_window: float | None,
    catchup_mode: CatchupMode | None,
    paused: bool | None,
    note: str | None,
) -> pb.UpdateScheduleRequest:
    """UpdateSchedule touching only what is given (at least one)."""
    msg = pb.Schedule(id=schedule_id)
    paths: list[str] = []
    if spec is not None:
        msg.spec.CopyFrom(spec.to_proto())
        paths.append("spec")
    if template is not None:
        msg.template.CopyFrom(template_proto(template))
        paths.append("template")
    if overlap is not None:
        msg.policies.overlap = cast(pb.ScheduleOverlapPolicy, int(overlap))
        paths.append("policies.overlap")
    if catchup_window is not None:
        msg.policies.catchup_window.CopyFrom(_duration(catchup_window))
        paths.append("policies.catchup_window")
    if catchup_mode is not None:
        msg.policies.catchup_mode = cast(pb.ScheduleCatchupMode, int(catchup_mode))
        paths.append("policies.catchup_mode")
    if paused is not None:
        msg.paused = paused
        paths.append("paused")
    if note is not None:
        msg.note = note
        paths.append("note")
    if not paths:
        raise ValueError("update_schedule needs at least one thing to change")
    return pb.UpdateScheduleRequest(schedule=msg, update_mask=field_mask_pb2.FieldMask(paths=paths))


def backfill_request(
    schedule_id: str,
    start: datetime.datetime,
    end: datetime.datetime,
    overlap: Overlap | None,
) -> pb.BackfillScheduleRequest:
    return pb.BackfillScheduleRequest(
        id=schedule_id,
        start_time=_timestamp(start),
        end_time=_timestamp(end),
        overlap=cast(pb.ScheduleOverlapPolicy, int(overlap or Overlap.UNSPECIFIED)),
    )
