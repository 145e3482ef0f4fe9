"""Workflow records (engine/flows.py) <-> protobuf: batches and their callback specs.
Shared by the service layer, the journal and the snapshot."""

from __future__ import annotations

from dispatchd.convert import _fill_policy, new_job, set_time, timestamp
from dispatchd.engine import NewJob
from dispatchd.engine.flows import BatchView
from dispatchd.engine.model import SUBMITTER_HEADER
from dispatchd.observability.events import Event, Missed
from dispatchd_client.v1 import dispatcher_pb2 as pb


def spec_to_pb(spec: NewJob) -> pb.JobSpec:
    """A callback's NewJob as the JobSpec it came from (check_callback refused the times,
    so nothing is lost)."""
    msg = pb.JobSpec(
        queue=spec.queue,
        payload=spec.payload,
        priority=spec.priority,
        headers=spec.headers,
        content_type=spec.content_type,
        ordering_key=spec.ordering_key,
        fairness_key=spec.fairness_key,
        fairness_weight=spec.fairness_weight,
    )
    if spec.retry_policy is not None:
        _fill_policy(msg.retry_policy, spec.retry_policy)
    return msg


def callback_of(msg: pb.Batch, field: str, queue: str, now: float) -> NewJob | None:
    """A batch's callback, its queue defaulting to the batch's."""
    if not msg.HasField(field):
        return None
    spec: pb.JobSpec = getattr(msg, field)
    job = new_job(spec, now)
    return job._replace(queue=spec.queue or queue)


def batch_to_pb(view: BatchView, *, with_callbacks: bool = True) -> pb.Batch:
    msg = pb.Batch(
        queue=view.queue,
        batch_id=view.batch_id,
        description=view.description,
        closed=view.closed,
        complete=view.complete,
        on_success_job_id=view.on_success_job_id,
        on_complete_job_id=view.on_complete_job_id,
        counts=pb.BatchCounts(
            total=view.total,
            active=view.active,
            succeeded=view.succeeded,
            failed=view.failed,
            cancelled=view.cancelled,
            expired=view.expired,
            dead=view.dead,
        ),
    )
    msg.create_time.CopyFrom(timestamp(view.create_time))
    if view.complete_time is not None:
        set_time(msg.complete_time, view.complete_time)
    if with_callbacks:
        if view.on_success is not None:
            msg.on_success.CopyFrom(spec_to_pb(view.on_success))
        if view.on_complete is not None:
            msg.on_complete.CopyFrom(spec_to_pb(view.on_complete))
    return msg


def public_batch(view: BatchView) -> pb.Batch:
    """The batch as a client sees it: the server's submitter stamp is not echoed."""
    msg = batch_to_pb(view)
    for cb in (msg.on_success, msg.on_complete):
        cb.headers.pop(SUBMITTER_HEADER, None)
    return msg


def batch_from_pb(msg: pb.Batch) -> BatchView:
    """A stored batch (journal, snapshot)."""
    c = msg.counts
    return BatchView(
        queue=msg.queue,
        batch_id=msg.batch_id,
        description=msg.description,
        closed=msg.closed,
        create_time=msg.create_time.seconds + msg.create_time.nanos / 1e9,
        complete_time=(
            msg.complete_time.seconds + msg.complete_time.nanos / 1e9
            if msg.HasField("complete_time")
            else None
        ),
        on_success=callback_of(msg, "on_success", msg.queue, 0.0),
        on_complete=callback_of(msg, "on_complete", msg.queue, 0.0),
        on_success_job_id=msg.on_success_job_id,
        on_complete_job_id=msg.on_complete_job_id,
        total=c.total,
        active=c.active,
        succeeded=c.succeeded,
        failed=c.failed,
        cancelled=c.cancelled,
        expired=c.expired,
        dead=c.dead,
    )


def event_to_pb(item: Event | Missed) -> pb.WatchEventsResponse:
    """One WatchEvents message: an event, or the news that some were missed."""
    if isinstance(item, Missed):
        missed = pb.EventsMissed(
            reason=item.reason, resume_token=item.resume_token, message=item.message
        )
        return pb.WatchEventsResponse(missed=missed)
    msg = pb.WatchEventsResponse()
    e = msg.event
    e.resume_token = item.token
    e.kind = int(item.kind)  # type: ignore[assignment]
    set_time(e.time, item.time)
    e.queue = item.queue
    e.job_id = item.job_id
    e.batch_id = item.batch_id
    e.attempt = item.attempt
    e.worker_id = item.worker_id
    if item.progress is not None:
        percent, message, at = item.progress
        if percent is not None:
            e.progress.percent = percent
        e.progress.message = message
        set_time(e.progress.report_time, at)
    if item.error is not None:
        e.error.message = item.error.message
        e.error.retryable = item.error.retryable
        e.error.code = item.error.code
    if item.counts is not None:
        c = e.batch_counts
        c.total, c.active, c.succeeded, c.failed, c.cancelled, c.expired, c.dead = item.counts
    return msg
