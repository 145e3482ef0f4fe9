"""Engine records <-> protobuf messages. Shared by the service layer and the snapshot store."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from dispatchd.engine import (
    JobFailure,
    JobRecord,
    JobState,
    JobView,
    NewJob,
    QueueSettings,
    QueueView,
)
from dispatchd_client.v1 import dispatcher_pb2 as pb


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


def new_job(spec: pb.JobSpec) -> NewJob:
    return NewJob(
        queue=spec.queue,
        payload=spec.payload,
        priority=spec.priority,
        headers=dict(spec.headers),
        content_type=spec.content_type,
    )


def set_time(ts: Timestamp, t: float) -> None:
    ns = int(t * 1e9)
    ts.seconds = ns // 1_000_000_000
    ts.nanos = ns % 1_000_000_000


def fill_job(msg: pb.Job, job: JobView, with_payload: bool = True) -> pb.Job:
    """Fills ``msg`` in place (cheaper than building sub-messages and copying them)."""
    msg.id = job.id
    msg.queue = job.queue
    if with_payload:
        msg.payload = job.payload
    msg.priority = job.priority
    msg.state = int(job.state)  # type: ignore[assignment]
    if job.headers:
        msg.headers.update(job.headers)
    msg.attempt = job.attempt
    set_time(msg.submit_time, job.submit_time)
    if job.result:
        msg.result = job.result
    if job.worker_id:
        msg.worker_id = job.worker_id
    if job.content_type:
        msg.content_type = job.content_type
    if job.dispatch_time is not None:
        set_time(msg.dispatch_time, job.dispatch_time)
    if job.first_dispatch_time is not None:
        set_time(msg.first_dispatch_time, job.first_dispatch_time)
    if job.finish_time is not None:
        set_time(msg.finish_time, job.finish_time)
    if job.error is not None:
        e = msg.error
        e.message = job.error.message
        e.retryable = job.error.retryable
        e.code = job.error.code
    if job.lease is not None and job.state is JobState.UNDERWAY:
        set_time(msg.lease_expire_time, job.lease.deadline)
    return msg


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
    if msg.HasField("error"):
        job.error = JobFailure(msg.error.message, msg.error.retryable, msg.error.code)
    return job


def queue_to_pb(view: QueueView) -> pb.Queue:
    return pb.Queue(
        name=view.name,
        width=view.settings.width,
        paused=view.settings.paused,
        pending_count=view.pending_count,
        underway_count=view.underway_count,
        lease_duration=duration(view.settings.lease_seconds),
        worker_count=view.worker_count,
    )


def settings_from_pb(msg: pb.Queue) -> QueueSettings:
    return QueueSettings(
        width=msg.width,
        paused=msg.paused,
        lease_seconds=duration_seconds(msg.lease_duration),
    )
