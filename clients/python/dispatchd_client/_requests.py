"""What each client call sends, how it may be retried, and how its answer is read.

:class:`~dispatchd_client.Client` and :class:`~dispatchd_client.AsyncClient` differ only in how
they wait (blocking vs ``await``). Everything else -- building the request message, choosing the
deadline, deciding whether UNAVAILABLE may be retried, turning the response into library types --
lives here as one :class:`Rpc` value per call, so the two clients cannot drift apart.
"""

from __future__ import annotations

import datetime
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar, cast

import grpc
from google.protobuf import duration_pb2, field_mask_pb2
from google.protobuf.message import Message

from dispatchd_client._tracing import trace_headers, with_trace_headers
from dispatchd_client.errors import status_code_of
from dispatchd_client.policies import (
    JobOptions,
    QueueChanges,
    Slot,
    apply_job_options,
    apply_queue_changes,
)
from dispatchd_client.schedules import Overlap, Schedule, ScheduleFiring
from dispatchd_client.types import Batch, Job, JobSpecLike, JobState, NewJob, Queue
from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc

T = TypeVar("T")

DEFAULT_TARGET = "127.0.0.1:50051"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Big enough for the server's largest payloads and for 10,000-job batches.
#: Seconds of quiet after which a client pings the server while a call is open (a Work
#: stream, a WaitJob), and gives the connection up when no answer comes within
#: KEEPALIVE_TIMEOUT: a worker behind a dead connection notices and reconnects.
KEEPALIVE_TIME = 20.0
KEEPALIVE_TIMEOUT = 10.0


def keepalive_options(every: float, timeout: float) -> tuple[tuple[str, int], ...]:
    return (
        ("grpc.keepalive_time_ms", int(every * 1000)),
        ("grpc.keepalive_timeout_ms", int(timeout * 1000)),
        # A ping sent into a dead connection waits a minute for its answer without this.
        ("grpc.http2.ping_timeout_ms", int(timeout * 1000)),
        # A quiet stream sends no data: ping it anyway (by default pings stop after two).
        ("grpc.http2.max_pings_without_data", 0),
    )


CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    *keepalive_options(KEEPALIVE_TIME, KEEPALIVE_TIMEOUT),
)
#: First delay before retrying an idempotent read that failed with UNAVAILABLE.
RETRY_BASE_DELAY = 0.05
#: WaitJob's call deadline exceeds its server-side timeout by this much, so the server's
#: "timed out, here is the job as it is" answer wins the race against DEADLINE_EXCEEDED.
WAIT_DEADLINE_MARGIN = 5.0
#: The server caps WaitJob at one hour; an unbounded wait gets that long.
MAX_WAIT = 3600.0


def new_stub(channel: grpc.Channel | grpc.aio.Channel) -> object:
    """The generated stub, typed as ``object``: calls go through :meth:`Rpc.method` by name
    (the generated module is untyped), and the result is read by the Rpc's typed parser."""
    return pb_grpc.DispatcherServiceStub(channel)


def with_timeout(rpc: Rpc[T], timeout: float | None) -> Rpc[T]:
    """``rpc`` with a per-call deadline of ``timeout`` seconds (None: as it is)."""
    if timeout is None:
        return rpc
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    return replace(rpc, timeout=timeout)


def backoff_delay(attempt: int, *, base: float, cap: float | None = None) -> float:
    """Exponential backoff with "equal jitter": between half and all of ``base * 2**attempt``.

    The jitter keeps many clients that lost the same server from retrying in lockstep; the
    lower bound keeps the delay from collapsing to zero.
    """
    delay = base * (2.0 ** min(attempt, 30))
    if cap is not None:
        delay = min(delay, cap)
    return random.uniform(delay / 2, delay)


@dataclass(frozen=True, slots=True)
class Rpc(Generic[T]):
    """One unary call ready to send: stub method name, request, and response parser."""

    method: str
    request: Message
    parse: Callable[[Any], T]
    #: Safe to send twice. Only idempotent calls are retried on UNAVAILABLE: a Submit that
    #: reached the server before the connection dropped would otherwise create a duplicate job.
    idempotent: bool = False
    #: Call deadline in seconds when it must differ from the client's default.
    timeout: float | None = None
    #: gRPC metadata to send (the caller's trace context on submits).
    metadata: tuple[tuple[str, str], ...] | None = None

    def deadline(self, default: float | None) -> float | None:
        return self.timeout if self.timeout is not None else default

    def should_retry(self, error: grpc.RpcError, attempt: int, retries: int) -> bool:
        """Whether failed attempt number ``attempt`` (0-based) may be followed by another."""
        return (
            self.idempotent
            and attempt < retries
            and status_code_of(error) == grpc.StatusCode.UNAVAILABLE
        )


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(datetime.timedelta(seconds=seconds))
    return d


def _encode_payload(payload: bytes | str, content_type: str) -> tuple[bytes, str]:
    """Text goes over the wire as UTF-8 and says so, unless the caller named a type."""
    if isinstance(payload, str):
        return payload.encode("utf-8"), content_type or TEXT_CONTENT_TYPE
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload), content_type
    raise TypeError(f"payload must be bytes or str, not {type(payload).__name__}")


def job_spec(
    queue: str,
    payload: bytes | str = b"",
    *,
    priority: int = 0,
    headers: Mapping[str, str] | None = None,
    content_type: str = "",
    options: JobOptions | None = None,
) -> pb.JobSpec:
    data, ctype = _encode_payload(payload, content_type)
    spec = pb.JobSpec(
        queue=queue, payload=data, priority=priority, headers=headers or {}, content_type=ctype
    )
    return apply_job_options(spec, options or {})


def _to_spec(spec: JobSpecLike, context: Mapping[str, str]) -> pb.JobSpec:
    """The JobSpec to send, carrying the trace ``context`` (a given JobSpec is copied
    before it gets one, never changed)."""
    if isinstance(spec, pb.JobSpec):
        if not context or "traceparent" in spec.headers:
            return spec
        traced = pb.JobSpec()
        traced.CopyFrom(spec)
        for key, value in context.items():
            traced.headers.setdefault(key, value)
        return traced
    if isinstance(spec, NewJob):
        return job_spec(
            spec.queue,
            spec.payload,
            priority=spec.priority,
            headers=with_trace_headers(spec.headers, context),
            content_type=spec.content_type,
            options=spec.options,
        )
    raise TypeError(f"expected NewJob or JobSpec, not {type(spec).__name__}")


def _metadata(context: Mapping[str, str]) -> tuple[tuple[str, str], ...] | None:
    return tuple(context.items()) if context else None


# Response parsers: typed against the response each RPC returns.


def _job(resp: pb.GetJobResponse | pb.WaitJobResponse | pb.RetryJobResponse) -> Job:
    return Job.from_proto(resp.job)


def parse_submitted(resp: pb.SubmitResponse) -> Job:
    return Job.from_proto(resp.job, duplicate=resp.duplicate)


def _changed_job(resp: pb.CancelJobResponse | pb.ReprioritizeJobResponse) -> Job:
    return Job.from_proto(resp.job)


def _slot(resp: pb.AcquireSlotResponse | pb.RenewSlotResponse) -> Slot:
    return Slot.from_proto(resp.slot)


def _purged(resp: pb.PurgeJobsResponse) -> int:
    return resp.purged_count


def _forgotten(resp: pb.DeleteQueueResponse) -> int:
    return resp.forgotten_count


def _nothing(resp: pb.ReleaseSlotResponse) -> None:
    return None


def parse_submitted_batch(resp: pb.SubmitBatchResponse) -> list[Job]:
    dups = list(resp.duplicates) or [False] * len(resp.jobs)
    return [Job.from_proto(j, duplicate=d) for j, d in zip(resp.jobs, dups, strict=False)]


def _page(resp: pb.ListJobsResponse) -> tuple[list[Job], str]:
    return [Job.from_proto(j) for j in resp.jobs], resp.next_page_token


def _queue(
    resp: pb.GetQueueResponse
    | pb.UpdateQueueResponse
    | pb.PauseQueueResponse
    | pb.ResumeQueueResponse,
) -> Queue:
    return Queue.from_proto(resp.queue)


def _queues(resp: pb.ListQueuesResponse) -> list[Queue]:
    return [Queue.from_proto(q) for q in resp.queues]


def _drain_counts(resp: pb.DrainResponse) -> tuple[int, int]:
    return resp.pending_count, resp.underway_count


# One builder per client method.


def submit(
    queue: str,
    payload: bytes | str,
    *,
    priority: int,
    headers: Mapping[str, str] | None,
    content_type: str,
    options: JobOptions | None = None,
) -> Rpc[Job]:
    """Submit, carrying the current trace context in the job's headers and the metadata."""
    context = trace_headers()
    spec = job_spec(
        queue,
        payload,
        priority=priority,
        headers=with_trace_headers(headers, context),
        content_type=content_type,
        options=options,
    )
    return Rpc("Submit", pb.SubmitRequest(job=spec), parse_submitted, metadata=_metadata(context))


def submit_batch(specs: Iterable[JobSpecLike]) -> Rpc[list[Job]]:
    """SubmitBatch; every job carries the current trace context, as with submit."""
    context = trace_headers()
    request = pb.SubmitBatchRequest(jobs=[_to_spec(s, context) for s in specs])
    return Rpc("SubmitBatch", request, parse_submitted_batch, metadata=_metadata(context))


def get_job(job_id: str) -> Rpc[Job]:
    return Rpc("GetJob", pb.GetJobRequest(job_id=job_id), _job, idempotent=True)


def wait_job(job_id: str, timeout: float | None) -> Rpc[Job]:
    """WaitJob with the server-side ``timeout`` set and a call deadline just past it."""
    request = pb.WaitJobRequest(job_id=job_id)
    if timeout is None:
        wait = MAX_WAIT
    else:
        if timeout < 0:
            raise ValueError("timeout must be >= 0")
        wait = timeout
        request.timeout.CopyFrom(_duration(timeout))
    return Rpc("WaitJob", request, _job, idempotent=True, timeout=wait + WAIT_DEADLINE_MARGIN)


#: Longest pause between two tries of a WaitJob the server could not take (UNAVAILABLE).
WAIT_RETRY_CAP = 1.0


@dataclass(slots=True)
class WaitAttempts:
    """A wait that outlives a server restart: a WaitJob answered UNAVAILABLE (the server
    restarting, a drain handing over, a replica going away) is sent again, with backoff,
    each time for the time that is left, until the caller's own timeout has passed."""

    job_id: str
    timeout: float | None
    until: float
    """time.monotonic() when the caller's timeout has passed."""
    sent: int = 0

    @classmethod
    def of(cls, job_id: str, timeout: float | None) -> WaitAttempts:
        wait = MAX_WAIT if timeout is None else timeout
        if wait < 0:
            raise ValueError("timeout must be >= 0")
        return cls(job_id, timeout, time.monotonic() + wait)

    def rpc(self) -> Rpc[Job]:
        """The first try asks for the caller's timeout as given; a later one for what is
        left of it."""
        self.sent += 1
        if self.sent == 1:
            return wait_job(self.job_id, self.timeout)
        return wait_job(self.job_id, max(0.0, self.until - time.monotonic()))

    def retry_delay(self, attempt: int) -> float | None:
        """How long to pause before the next try, or None: the time is up."""
        left = self.until - time.monotonic()
        if left <= 0:
            return None
        return min(backoff_delay(attempt, base=RETRY_BASE_DELAY, cap=WAIT_RETRY_CAP), left)


def cancel_job(job_id: str) -> Rpc[Job]:
    return Rpc("CancelJob", pb.CancelJobRequest(job_id=job_id), _changed_job)


def reprioritize_job(job_id: str, priority: int) -> Rpc[Job]:
    request = pb.ReprioritizeJobRequest(job_id=job_id, priority=priority)
    return Rpc("ReprioritizeJob", request, _changed_job)


def list_jobs_page(
    queue: str, state: JobState | None, page_size: int, page_token: str
) -> Rpc[tuple[list[Job], str]]:
    """One page of ListJobs; the clients loop while the returned token is non-empty."""
    request = pb.ListJobsRequest(
        queue=queue,
        state=cast(pb.JobState, int(state or JobState.UNSPECIFIED)),
        page_size=page_size,
        page_token=page_token,
    )
    return Rpc("ListJobs", request, _page, idempotent=True)


def get_queue(name: str) -> Rpc[Queue]:
    return Rpc("GetQueue", pb.GetQueueRequest(name=name), _queue, idempotent=True)


def list_queues() -> Rpc[list[Queue]]:
    return Rpc("ListQueues", pb.ListQueuesRequest(), _queues, idempotent=True)


def update_queue(
    name: str,
    *,
    width: int | None,
    paused: bool | None,
    lease_duration: float | None,
    create: bool,
    changes: QueueChanges | None = None,
) -> Rpc[Queue]:
    """UpdateQueue touching only the settings given.

    An empty update_mask means "set width, paused and lease_duration" to the server, which
    would silently zero the settings the caller left out; so at least one setting is required.
    """
    queue = pb.Queue(name=name)
    paths: list[str] = apply_queue_changes(queue, changes or {})
    if width is not None:
        queue.width = width
        paths.append("width")
    if paused is not None:
        queue.paused = paused
        paths.append("paused")
    if lease_duration is not None:
        queue.lease_duration.CopyFrom(_duration(lease_duration))
        paths.append("lease_duration")
    if not paths:
        raise ValueError("update_queue needs at least one setting to change")
    request = pb.UpdateQueueRequest(
        queue=queue, update_mask=field_mask_pb2.FieldMask(paths=paths), allow_missing=create
    )
    return Rpc("UpdateQueue", request, _queue)


def pause_queue(name: str) -> Rpc[Queue]:
    return Rpc("PauseQueue", pb.PauseQueueRequest(name=name), _queue)


def resume_queue(name: str, width: int | None) -> Rpc[Queue]:
    request = pb.ResumeQueueRequest(name=name)
    if width is not None:
        request.width = width
    return Rpc("ResumeQueue", request, _queue)


def drain(grace: float | None) -> Rpc[tuple[int, int]]:
    request = pb.DrainRequest()
    if grace is not None:
        request.grace.CopyFrom(_duration(grace))
    return Rpc("Drain", request, _drain_counts)


def retry_job(job_id: str) -> Rpc[Job]:
    return Rpc("RetryJob", pb.RetryJobRequest(job_id=job_id), _job)


def purge_jobs(queue: str, state: JobState | None) -> Rpc[int]:
    request = pb.PurgeJobsRequest(
        queue=queue, state=cast(pb.JobState, int(state or JobState.UNSPECIFIED))
    )
    return Rpc("PurgeJobs", request, _purged)


def delete_queue(name: str) -> Rpc[int]:
    return Rpc("DeleteQueue", pb.DeleteQueueRequest(name=name), _forgotten)


def acquire_slot(
    queue: str, holder: str, ttl: float, priority: int, timeout: float | None
) -> Rpc[Slot]:
    """AcquireSlot blocks until granted: its call deadline is how long to wait."""
    request = pb.AcquireSlotRequest(
        queue=queue, holder=holder, ttl=_duration(ttl), priority=priority
    )
    return Rpc("AcquireSlot", request, _slot, timeout=timeout)


def renew_slot(slot_id: str, ttl: float | None) -> Rpc[Slot]:
    request = pb.RenewSlotRequest(slot_id=slot_id)
    if ttl is not None:
        request.ttl.CopyFrom(_duration(ttl))
    return Rpc("RenewSlot", request, _slot)


def release_slot(slot_id: str) -> Rpc[None]:
    return Rpc("ReleaseSlot", pb.ReleaseSlotRequest(slot_id=slot_id), _nothing)


# ---- schedules ------------------------------------------------------------------------


def _schedule(
    resp: pb.CreateScheduleResponse
    | pb.GetScheduleResponse
    | pb.UpdateScheduleResponse
    | pb.PauseScheduleResponse
    | pb.ResumeScheduleResponse,
) -> Schedule:
    return Schedule.from_proto(resp.schedule)


def _schedule_page(resp: pb.ListSchedulesResponse) -> tuple[list[Schedule], str]:
    return [Schedule.from_proto(s) for s in resp.schedules], resp.next_page_token


def _deleted(resp: pb.DeleteScheduleResponse) -> None:
    return None


def _fired(resp: pb.TriggerScheduleResponse) -> ScheduleFiring:
    return ScheduleFiring.from_proto(resp.firing)


def _backfilled(resp: pb.BackfillScheduleResponse) -> list[ScheduleFiring]:
    return [ScheduleFiring.from_proto(f) for f in resp.firings]


def create_schedule(schedule: pb.Schedule) -> Rpc[Schedule]:
    return Rpc("CreateSchedule", pb.CreateScheduleRequest(schedule=schedule), _schedule)


def get_schedule(schedule_id: str) -> Rpc[Schedule]:
    return Rpc("GetSchedule", pb.GetScheduleRequest(id=schedule_id), _schedule, idempotent=True)


def list_schedules_page(page_size: int, page_token: str) -> Rpc[tuple[list[Schedule], str]]:
    request = pb.ListSchedulesRequest(page_size=page_size, page_token=page_token)
    return Rpc("ListSchedules", request, _schedule_page, idempotent=True)


def update_schedule(request: pb.UpdateScheduleRequest) -> Rpc[Schedule]:
    return Rpc("UpdateSchedule", request, _schedule)


def delete_schedule(schedule_id: str) -> Rpc[None]:
    return Rpc("DeleteSchedule", pb.DeleteScheduleRequest(id=schedule_id), _deleted)


def pause_schedule(schedule_id: str, note: str) -> Rpc[Schedule]:
    return Rpc("PauseSchedule", pb.PauseScheduleRequest(id=schedule_id, note=note), _schedule)


def resume_schedule(schedule_id: str, note: str | None) -> Rpc[Schedule]:
    request = pb.ResumeScheduleRequest(id=schedule_id)
    if note is not None:
        request.note = note
    return Rpc("ResumeSchedule", request, _schedule)


def trigger_schedule(schedule_id: str, overlap: Overlap | None) -> Rpc[ScheduleFiring]:
    request = pb.TriggerScheduleRequest(
        id=schedule_id, overlap=cast(pb.ScheduleOverlapPolicy, int(overlap or 0))
    )
    return Rpc("TriggerSchedule", request, _fired)


def backfill_schedule(request: pb.BackfillScheduleRequest) -> Rpc[list[ScheduleFiring]]:
    return Rpc("BackfillSchedule", request, _backfilled)


# ---- batches (docs/workflows.md) ------------------------------------------------------


def _batch(
    resp: pb.CreateBatchResponse
    | pb.GetBatchResponse
    | pb.WaitBatchResponse
    | pb.CloseBatchResponse
    | pb.CancelBatchResponse,
) -> Batch:
    return Batch.from_proto(resp.batch)


def _callback(spec: JobSpecLike | None) -> pb.JobSpec | None:
    return None if spec is None else _to_spec(spec, {})


def create_batch(
    queue: str,
    batch_id: str,
    description: str,
    on_success: JobSpecLike | None,
    on_complete: JobSpecLike | None,
) -> Rpc[Batch]:
    batch = pb.Batch(queue=queue, batch_id=batch_id, description=description)
    success, complete = _callback(on_success), _callback(on_complete)
    if success is not None:
        batch.on_success.CopyFrom(success)
    if complete is not None:
        batch.on_complete.CopyFrom(complete)
    return Rpc("CreateBatch", pb.CreateBatchRequest(batch=batch), _batch)


def get_batch(queue: str, batch_id: str) -> Rpc[Batch]:
    request = pb.GetBatchRequest(queue=queue, batch_id=batch_id)
    return Rpc("GetBatch", request, _batch, idempotent=True)


def wait_batch(queue: str, batch_id: str, timeout: float | None) -> Rpc[Batch]:
    """WaitBatch with the server-side ``timeout`` set and a call deadline just past it."""
    request = pb.WaitBatchRequest(queue=queue, batch_id=batch_id)
    wait = MAX_WAIT if timeout is None else timeout
    if timeout is not None:
        if timeout < 0:
            raise ValueError("timeout must be >= 0")
        request.timeout.CopyFrom(_duration(timeout))
    return Rpc("WaitBatch", request, _batch, idempotent=True, timeout=wait + WAIT_DEADLINE_MARGIN)


def close_batch(queue: str, batch_id: str) -> Rpc[Batch]:
    request = pb.CloseBatchRequest(queue=queue, batch_id=batch_id)
    return Rpc("CloseBatch", request, _batch, idempotent=True)


def cancel_batch(queue: str, batch_id: str) -> Rpc[Batch]:
    return Rpc("CancelBatch", pb.CancelBatchRequest(queue=queue, batch_id=batch_id), _batch)
