"""DispatcherService: each unary RPC validates, calls the engine, and converts back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from dispatchd import convert
from dispatchd.engine import Engine, EngineError, JobView
from dispatchd.engine.errors import Reason
from dispatchd.service.errors import (
    abort_with,
    queue_field,
    refusal_status,
    single_job_field,
    translating,
    translating_fields,
)
from dispatchd.service.pump import DispatchPump
from dispatchd.service.requests import drain_grace, job_state, queue_update, wait_timeout
from dispatchd.service.sessions import WorkStream
from dispatchd.service.slot_rpcs import SlotRpcs
from dispatchd.service.waiters import Waiters
from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]

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

    @translating_fields(single_job_field)
    async def Submit(self, request: pb.SubmitRequest, context: Context) -> pb.SubmitResponse:
        now = self._clock()
        ((job, duplicate),) = self._engine.submit_many(convert.new_jobs([request.job], now), now)
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
        results = self._engine.submit_many(convert.new_jobs(request.jobs, now), now)
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
            await abort_with(
                context,
                refusal_status(
                    grpc.StatusCode.UNAVAILABLE,
                    f"{e}; the job may still run, resubmit with an idempotency key to be sure",
                    Reason.JOURNAL_UNAVAILABLE,
                ),
            )

    @_translating
    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.GetJobResponse:
        return pb.GetJobResponse(job=convert.job_to_pb(self._engine.get_job(request.job_id)))

    @_translating
    async def WaitJob(self, request: pb.WaitJobRequest, context: Context) -> pb.WaitJobResponse:
        job = self._engine.get_job(request.job_id)
        timeout = wait_timeout(request, context)
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
        jobs, token = self._engine.list_jobs(
            request.queue, job_state(request.state), request.page_size, request.page_token
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

    @translating_fields(queue_field)
    async def UpdateQueue(
        self, request: pb.UpdateQueueRequest, context: Context
    ) -> pb.UpdateQueueResponse:
        changes, policies = queue_update(request)
        view = self._engine.update_queue(
            request.queue.name, now=self._clock(), **changes, **policies
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
        grace = drain_grace(request)
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
        purged = self._engine.purge(request.queue, job_state(request.state))
        return pb.PurgeJobsResponse(purged_count=purged)

    async def Work(
        self,
        request_iterator: AsyncIterator[pb.WorkRequest],
        context: grpc.aio.ServicerContext[pb.WorkRequest, pb.WorkResponse],
    ) -> AsyncIterator[pb.WorkResponse]:
        # grpc.aio recognises streaming handlers by being async generator functions.
        async for response in self._work.serve(request_iterator, context):
            yield response
