"""DispatcherService on the Redis backend: validates with the embedded mode's helpers,
calls Redis, converts back with dispatchd.convert. Features this backend does not have
(HTTP push) answer FAILED_PRECONDITION naming the feature; no request field is ignored."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from dispatchd import convert
from dispatchd.engine import JobState
from dispatchd.engine.errors import NotFound, draining
from dispatchd.redis.records import StoredJob
from dispatchd.redis.replica import Replica
from dispatchd.redis.signals import finishes
from dispatchd.redis.slot_rpcs import RedisSlotRpcs
from dispatchd.redis.stream import RedisWorkStream
from dispatchd.service.errors import (
    queue_field,
    single_job_field,
    translating,
    translating_fields,
)
from dispatchd.service.requests import drain_grace, job_state, queue_update, wait_timeout
from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]
#: WaitJob re-reads the job this often too, in case a finish message was missed.
WAIT_RECHECK_SECONDS = 1.0


def job_pb(job: StoredJob, with_payload: bool = True) -> pb.Job:
    msg = convert.job_to_pb(job.record, with_payload)
    if job.record.state is JobState.UNDERWAY and job.lease_deadline is not None:
        convert.set_time(msg.lease_expire_time, job.lease_deadline)
    return msg


class RedisDispatcherServicer(RedisSlotRpcs, pb_grpc.DispatcherServiceServicer):
    def __init__(
        self,
        replica: Replica,
        clock: Callable[[], float],
        work: RedisWorkStream,
        start_drain: Callable[[float | None], None],
    ) -> None:
        self._replica = replica
        self._backend = replica.backend
        self._clock = clock
        self._work = work
        self._start_drain = start_drain

    def _intake(self) -> None:
        if self._replica.draining:
            raise draining("accepts no new jobs; retry on another")

    @translating_fields(single_job_field)
    async def Submit(self, request: pb.SubmitRequest, context: Context) -> pb.SubmitResponse:
        self._intake()
        now = self._clock()
        results = await self._backend.submit(convert.new_jobs([request.job], now), now)
        self._replica.accounting.submitted(results)
        ((job, duplicate),) = results
        response = pb.SubmitResponse(duplicate=duplicate)
        response.job.CopyFrom(job_pb(job, with_payload=False))
        return response

    @translating
    async def SubmitBatch(
        self, request: pb.SubmitBatchRequest, context: Context
    ) -> pb.SubmitBatchResponse:
        self._intake()
        now = self._clock()
        results = await self._backend.submit(convert.new_jobs(request.jobs, now), now)
        self._replica.accounting.submitted(results)
        return pb.SubmitBatchResponse(
            jobs=[job_pb(j, with_payload=False) for j, _ in results],
            duplicates=[dup for _, dup in results],
        )

    @translating
    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.GetJobResponse:
        return pb.GetJobResponse(job=job_pb(await self._backend.get_job(request.job_id)))

    @translating
    async def WaitJob(self, request: pb.WaitJobRequest, context: Context) -> pb.WaitJobResponse:
        job = await self._backend.get_job(request.job_id)
        timeout = wait_timeout(request, context)
        if job.record.state.finished or timeout <= 0:
            return pb.WaitJobResponse(job=job_pb(job))
        signals = self._replica.signals
        channel = finishes(job.record.queue)
        await signals.watch(channel)
        deadline = time.monotonic() + timeout
        try:
            while not job.record.state.finished:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                waiter = self._replica.waiting.job(job.record.id)
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(waiter, min(left, WAIT_RECHECK_SECONDS))
                finally:
                    self._replica.waiting.discard(job.record.id, waiter)
                with contextlib.suppress(NotFound):  # purged meanwhile: the last read stands
                    job = await self._backend.get_job(request.job_id)
        finally:
            signals.unwatch(channel)
        return pb.WaitJobResponse(job=job_pb(job))

    @translating
    async def CancelJob(
        self, request: pb.CancelJobRequest, context: Context
    ) -> pb.CancelJobResponse:
        job = await self._backend.cancel(request.job_id)
        self._replica.accounting.finished(job.record.queue, JobState.CANCELLED)
        return pb.CancelJobResponse(job=job_pb(job))

    @translating
    async def ReprioritizeJob(
        self, request: pb.ReprioritizeJobRequest, context: Context
    ) -> pb.ReprioritizeJobResponse:
        job = await self._backend.reprioritize(request.job_id, request.priority)
        return pb.ReprioritizeJobResponse(job=job_pb(job))

    @translating
    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        jobs, token = await self._backend.list_jobs(
            request.queue, job_state(request.state), request.page_size, request.page_token
        )
        return pb.ListJobsResponse(jobs=[job_pb(j) for j in jobs], next_page_token=token)

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
        """Drains this replica only; the queues (in Redis) stay for the other replicas."""
        grace = drain_grace(request)
        underway = self._replica.underway()
        self._start_drain(grace)
        return pb.DrainResponse(pending_count=0, underway_count=underway)

    @translating
    async def RetryJob(self, request: pb.RetryJobRequest, context: Context) -> pb.RetryJobResponse:
        if self._replica.draining:
            raise draining("accepts no new work")
        return pb.RetryJobResponse(job=job_pb(await self._backend.retry(request.job_id)))

    @translating
    async def PurgeJobs(
        self, request: pb.PurgeJobsRequest, context: Context
    ) -> pb.PurgeJobsResponse:
        purged = await self._backend.purge(request.queue, job_state(request.state))
        return pb.PurgeJobsResponse(purged_count=purged)

    async def Work(
        self,
        request_iterator: AsyncIterator[pb.WorkRequest],
        context: grpc.aio.ServicerContext[pb.WorkRequest, pb.WorkResponse],
    ) -> AsyncIterator[pb.WorkResponse]:
        async for response in self._work.serve(request_iterator, context):
            yield response
