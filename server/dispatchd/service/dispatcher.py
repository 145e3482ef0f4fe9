"""DispatcherService: each unary RPC validates, calls the engine, and converts back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from dispatchd import convert
from dispatchd.engine import Engine, EngineError, JobState, JobView
from dispatchd.engine.errors import InvalidArgument
from dispatchd.service.pump import DispatchPump
from dispatchd.service.sessions import WorkStream
from dispatchd.service.slot_rpcs import SlotRpcs, translating
from dispatchd.service.waiters import Waiters
from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context = grpc.aio.ServicerContext[Any, Any]

MAX_WAIT_SECONDS = 3600.0
DEFAULT_MASK_PATHS = frozenset({"width", "paused", "lease_duration"})
QUEUE_MASK_PATHS = DEFAULT_MASK_PATHS | {
    "rate",
    "retry_policy",
    "key_limits",
    "max_pending",
    "dedup_window",
    "http_target",
}


def _policy_changes(q: pb.Queue, paths: set[str]) -> dict[str, object]:
    """The policy settings named in the mask; a named but unset message clears it."""
    changes: dict[str, object] = {}
    if "rate" in paths:
        changes["rate"] = convert.rate(q)
    if "retry_policy" in paths:
        changes["retry_policy"] = (
            convert.retry_policy(q.retry_policy) if q.HasField("retry_policy") else None
        )
    if "key_limits" in paths:
        changes["key_limits"] = convert.key_limits(q)
    if "max_pending" in paths:
        changes["max_pending"] = q.max_pending
    if "dedup_window" in paths:
        changes["dedup_window"] = convert.duration_seconds(q.dedup_window)
    if "http_target" in paths:
        changes["http_target"] = convert.http_target(q)
    return changes


_translating = translating


class DispatcherServicer(SlotRpcs, pb_grpc.DispatcherServiceServicer):
    def __init__(
        self,
        engine: Engine,
        pump: DispatchPump,
        waiters: Waiters,
        clock: Callable[[], float],
        work: WorkStream,
        start_drain: Callable[[float | None], bool],
        sync: Callable[[], Awaitable[None]],
    ) -> None:
        super().__init__(engine, pump, waiters, clock)
        self._work = work
        self._start_drain = start_drain
        self._sync = sync

    @_translating
    async def Submit(self, request: pb.SubmitRequest, context: Context) -> pb.SubmitResponse:
        now = self._clock()
        ((job, duplicate),) = self._engine.submit_many([convert.new_job(request.job, now)], now)
        self._pump.kick()
        await self._durable(context)
        response = pb.SubmitResponse(duplicate=duplicate)
        convert.fill_job(response.job, job, with_payload=False)  # the caller has it
        return response

    @_translating
    async def SubmitBatch(
        self, request: pb.SubmitBatchRequest, context: Context
    ) -> pb.SubmitBatchResponse:
        now = self._clock()
        results = self._engine.submit_many([convert.new_job(s, now) for s in request.jobs], now)
        self._pump.kick()
        await self._durable(context)
        response = pb.SubmitBatchResponse(duplicates=[dup for _, dup in results])
        add = response.jobs.add
        for job, _ in results:
            convert.fill_job(add(), job, with_payload=False)  # the caller has the payloads
        return response

    async def _durable(self, context: Context) -> None:
        """A submit is answered only once its journal record is durable."""
        try:
            await self._sync()
        except OSError as e:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"{e}; the job may still run, resubmit with an idempotency key to be sure",
            )

    @_translating
    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.GetJobResponse:
        return pb.GetJobResponse(job=convert.job_to_pb(self._engine.get_job(request.job_id)))

    @_translating
    async def WaitJob(self, request: pb.WaitJobRequest, context: Context) -> pb.WaitJobResponse:
        job = self._engine.get_job(request.job_id)
        timeout = self._wait_timeout(request, context)
        if not job.state.finished and timeout > 0:
            waiter = self._waiters.add(job.id)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), timeout)
            finally:
                self._waiters.discard(job.id, waiter)
            job = self._current(job)
        return pb.WaitJobResponse(job=convert.job_to_pb(job))

    def _current(self, job: JobView) -> JobView:
        """The job may have been evicted while we waited; the record we hold is final."""
        try:
            return self._engine.get_job(job.id)
        except EngineError:
            return job

    @staticmethod
    def _wait_timeout(request: pb.WaitJobRequest, context: Context) -> float:
        if request.HasField("timeout"):
            timeout = convert.duration_seconds(request.timeout)
            if not 0 <= timeout <= MAX_WAIT_SECONDS:
                raise InvalidArgument(f"timeout must be between 0 s and 1 h, got {timeout:g} s")
        else:
            timeout = MAX_WAIT_SECONDS
        remaining = context.time_remaining()
        if remaining is not None:
            # Answer just before the caller's deadline, with the job as it is.
            timeout = min(timeout, max(0.0, remaining - 0.05))
        return timeout

    @_translating
    async def CancelJob(
        self, request: pb.CancelJobRequest, context: Context
    ) -> pb.CancelJobResponse:
        job, worker = self._engine.cancel(request.job_id, self._clock())
        if worker is not None:
            self._pump.tell_cancelled(worker, job.id)
        self._pump.kick()
        return pb.CancelJobResponse(job=convert.job_to_pb(job))

    @_translating
    async def ReprioritizeJob(
        self, request: pb.ReprioritizeJobRequest, context: Context
    ) -> pb.ReprioritizeJobResponse:
        job = self._engine.reprioritize(request.job_id, request.priority)
        return pb.ReprioritizeJobResponse(job=convert.job_to_pb(job))

    @_translating
    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        if request.state not in JobState._value2member_map_:
            raise InvalidArgument(f"unknown job state {request.state}")
        jobs, token = self._engine.list_jobs(
            request.queue, JobState(request.state), request.page_size, request.page_token
        )
        return pb.ListJobsResponse(jobs=[convert.job_to_pb(j) for j in jobs], next_page_token=token)

    @_translating
    async def GetQueue(self, request: pb.GetQueueRequest, context: Context) -> pb.GetQueueResponse:
        return pb.GetQueueResponse(queue=convert.queue_to_pb(self._engine.get_queue(request.name)))

    @_translating
    async def ListQueues(
        self, request: pb.ListQueuesRequest, context: Context
    ) -> pb.ListQueuesResponse:
        return pb.ListQueuesResponse(
            queues=[convert.queue_to_pb(v) for v in self._engine.list_queues()]
        )

    @_translating
    async def UpdateQueue(
        self, request: pb.UpdateQueueRequest, context: Context
    ) -> pb.UpdateQueueResponse:
        paths = set(request.update_mask.paths) or set(DEFAULT_MASK_PATHS)
        unknown = paths - QUEUE_MASK_PATHS
        if unknown:
            raise InvalidArgument(
                f"update_mask names unknown fields {sorted(unknown)}; "
                f"settable: {', '.join(sorted(QUEUE_MASK_PATHS))}"
            )
        q = request.queue
        if "lease_duration" in paths and not q.HasField("lease_duration"):
            raise InvalidArgument(
                "update_mask names lease_duration but queue.lease_duration is unset"
            )
        view = self._engine.update_queue(
            q.name,
            width=q.width if "width" in paths else None,
            paused=q.paused if "paused" in paths else None,
            lease_seconds=(
                convert.duration_seconds(q.lease_duration) if "lease_duration" in paths else None
            ),
            create=request.allow_missing,
            now=self._clock(),
            **_policy_changes(q, paths),
        )
        self._pump.kick()
        return pb.UpdateQueueResponse(queue=convert.queue_to_pb(view))

    @_translating
    async def PauseQueue(
        self, request: pb.PauseQueueRequest, context: Context
    ) -> pb.PauseQueueResponse:
        return pb.PauseQueueResponse(queue=convert.queue_to_pb(self._engine.pause(request.name)))

    @_translating
    async def ResumeQueue(
        self, request: pb.ResumeQueueRequest, context: Context
    ) -> pb.ResumeQueueResponse:
        width = request.width if request.HasField("width") else None
        view = self._engine.resume(request.name, width)
        self._pump.kick()
        return pb.ResumeQueueResponse(queue=convert.queue_to_pb(view))

    @_translating
    async def Drain(self, request: pb.DrainRequest, context: Context) -> pb.DrainResponse:
        grace = None
        if request.HasField("grace"):
            grace = convert.duration_seconds(request.grace)
            if grace < 0:
                raise InvalidArgument(f"grace must be >= 0, got {grace:g} s")
        pending = sum(v.pending_count for v in self._engine.list_queues())
        underway = self._engine.underway_total()
        self._start_drain(grace)
        return pb.DrainResponse(pending_count=pending, underway_count=underway)

    @_translating
    async def RetryJob(self, request: pb.RetryJobRequest, context: Context) -> pb.RetryJobResponse:
        job = self._engine.retry(request.job_id, self._clock())
        self._pump.kick()
        return pb.RetryJobResponse(job=convert.job_to_pb(job))

    @_translating
    async def PurgeJobs(
        self, request: pb.PurgeJobsRequest, context: Context
    ) -> pb.PurgeJobsResponse:
        if request.state not in JobState._value2member_map_:
            raise InvalidArgument(f"unknown job state {request.state}")
        purged = self._engine.purge(request.queue, JobState(request.state))
        return pb.PurgeJobsResponse(purged_count=purged)

    async def Work(
        self,
        request_iterator: AsyncIterator[pb.WorkRequest],
        context: grpc.aio.ServicerContext[pb.WorkRequest, pb.WorkResponse],
    ) -> AsyncIterator[pb.WorkResponse]:
        # grpc.aio recognises streaming handlers by being async generator functions.
        async for response in self._work.serve(request_iterator, context):
            yield response
