"""DispatcherService: each RPC validates, calls the backend, and converts back. The same
servicer serves every backend (dispatchd.backend); it makes no dispatch decision."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc

from dispatchd import convert
from dispatchd.backend import Backend, DrainReport
from dispatchd.engine import EngineError
from dispatchd.service.errors import (
    queue_field,
    single_job_field,
    translating,
    translating_fields,
)
from dispatchd.service.flow_rpcs import FlowRpcs
from dispatchd.service.requests import drain_grace, job_state, queue_update, wait_timeout
from dispatchd.service.schedule_rpcs import ScheduleRpcs
from dispatchd.service.slot_rpcs import SlotRpcs
from dispatchd.service.work import WorkStream
from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]
StartDrain = Callable[[float | None], Awaitable[DrainReport | None]]
"""Begins the server's drain (once) with an optional grace and returns the counts as it
began, or None when a drain was already under way (its grace stays in force)."""
SubmitRefused = Callable[[list[str], str], None]
"""Told the queues of a refused submit's jobs and the refusal's ErrorInfo reason (metrics)."""


class DispatcherServicer(SlotRpcs, ScheduleRpcs, FlowRpcs, pb_grpc.DispatcherServiceServicer):
    def __init__(
        self,
        backend: Backend,
        clock: Callable[[], float],
        work: WorkStream,
        start_drain: StartDrain,
        refused: SubmitRefused | None = None,
    ) -> None:
        super().__init__(backend)
        self._clock = clock
        self._work = work
        self._start_drain = start_drain
        self._refused = refused

    @translating_fields(single_job_field)
    async def Submit(self, request: pb.SubmitRequest, context: Context) -> pb.SubmitResponse:
        try:
            specs = convert.new_jobs([request.job], self._clock())
            ((job, duplicate),) = await self._backend.submit(specs)
        except EngineError as e:
            self._tell_refused([request.job], e)
            raise
        response = pb.SubmitResponse(duplicate=duplicate)
        convert.fill_job(response.job, job, with_payload=False)  # the caller has it
        return response

    @translating
    async def SubmitBatch(
        self, request: pb.SubmitBatchRequest, context: Context
    ) -> pb.SubmitBatchResponse:
        now = self._clock()
        try:
            results = await self._backend.submit(convert.new_jobs(request.jobs, now))
        except EngineError as e:
            self._tell_refused(request.jobs, e)
            raise
        response = pb.SubmitBatchResponse(duplicates=[dup for _, dup in results])
        add = response.jobs.add
        for job, _ in results:
            convert.fill_job(add(), job, with_payload=False)  # the caller has the payloads
        return response

    def _tell_refused(self, jobs: Sequence[pb.JobSpec], error: EngineError) -> None:
        if self._refused is not None:
            self._refused([j.queue for j in jobs], error.reason)

    @translating
    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.GetJobResponse:
        return pb.GetJobResponse(job=convert.job_to_pb(await self._backend.get_job(request.job_id)))

    @translating
    async def WaitJob(self, request: pb.WaitJobRequest, context: Context) -> pb.WaitJobResponse:
        timeout = wait_timeout(request, context)
        job = await self._backend.wait_job(request.job_id, timeout)
        return pb.WaitJobResponse(job=convert.job_to_pb(job))

    @translating
    async def CancelJob(
        self, request: pb.CancelJobRequest, context: Context
    ) -> pb.CancelJobResponse:
        job = await self._backend.cancel_job(request.job_id)
        return pb.CancelJobResponse(job=convert.job_to_pb(job))

    @translating
    async def ReprioritizeJob(
        self, request: pb.ReprioritizeJobRequest, context: Context
    ) -> pb.ReprioritizeJobResponse:
        job = await self._backend.reprioritize_job(request.job_id, request.priority)
        return pb.ReprioritizeJobResponse(job=convert.job_to_pb(job))

    @translating
    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        jobs, token = await self._backend.list_jobs(
            request.queue, job_state(request.state), request.page_size, request.page_token
        )
        return pb.ListJobsResponse(jobs=[convert.job_to_pb(j) for j in jobs], next_page_token=token)

    @translating
    async def GetQueue(self, request: pb.GetQueueRequest, context: Context) -> pb.GetQueueResponse:
        view = await self._backend.get_queue(request.name)
        return pb.GetQueueResponse(queue=convert.queue_to_pb(view))

    @translating
    async def ListQueues(
        self, request: pb.ListQueuesRequest, context: Context
    ) -> pb.ListQueuesResponse:
        views = await self._backend.list_queues()
        return pb.ListQueuesResponse(queues=[convert.queue_to_pb(v) for v in views])

    @translating_fields(queue_field)
    async def UpdateQueue(
        self, request: pb.UpdateQueueRequest, context: Context
    ) -> pb.UpdateQueueResponse:
        changes, policies = queue_update(request)
        view = await self._backend.update_queue(request.queue.name, **changes, **policies)
        return pb.UpdateQueueResponse(queue=convert.queue_to_pb(view))

    @translating
    async def PauseQueue(
        self, request: pb.PauseQueueRequest, context: Context
    ) -> pb.PauseQueueResponse:
        view = await self._backend.update_queue(request.name, paused=True)
        return pb.PauseQueueResponse(queue=convert.queue_to_pb(view))

    @translating
    async def ResumeQueue(
        self, request: pb.ResumeQueueRequest, context: Context
    ) -> pb.ResumeQueueResponse:
        width = request.width if request.HasField("width") else None
        view = await self._backend.update_queue(request.name, paused=False, width=width)
        return pb.ResumeQueueResponse(queue=convert.queue_to_pb(view))

    @translating
    async def Drain(self, request: pb.DrainRequest, context: Context) -> pb.DrainResponse:
        report = await self._start_drain(drain_grace(request))
        if report is None:
            return pb.DrainResponse()
        return pb.DrainResponse(pending_count=report.pending, underway_count=report.underway)

    @translating
    async def RetryJob(self, request: pb.RetryJobRequest, context: Context) -> pb.RetryJobResponse:
        job = await self._backend.retry_job(request.job_id)
        return pb.RetryJobResponse(job=convert.job_to_pb(job))

    @translating
    async def PurgeJobs(
        self, request: pb.PurgeJobsRequest, context: Context
    ) -> pb.PurgeJobsResponse:
        purged = await self._backend.purge_jobs(request.queue, job_state(request.state))
        return pb.PurgeJobsResponse(purged_count=purged)

    @translating
    async def DeleteQueue(
        self, request: pb.DeleteQueueRequest, context: Context
    ) -> pb.DeleteQueueResponse:
        forgotten = await self._backend.delete_queue(request.name)
        return pb.DeleteQueueResponse(forgotten_count=forgotten)

    async def Work(
        self,
        request_iterator: AsyncIterator[pb.WorkRequest],
        context: grpc.aio.ServicerContext[pb.WorkRequest, pb.WorkResponse],
    ) -> None:
        # A coroutine that writes with context.write, not a generator: see service/work.py.
        await self._work.serve(request_iterator, context)
