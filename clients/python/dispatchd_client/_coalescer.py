"""Coalescing concurrent ``AsyncClient.submit()`` calls into SubmitBatch round trips.

Many coroutines that call ``submit()`` in the same event-loop tick (or within ``window``
seconds of the first) travel together in one SubmitBatch, the way ioredis pipelines commands;
each caller still gets its own :class:`~dispatchd_client.Job` or its own error.

SubmitBatch is all-or-nothing on the server, so a refused batch admitted nothing and may be
resent safely. The coalescer isolates the culprit instead of failing its neighbours:

- a refusal naming ``jobs[i]`` (validation, payload cap) sends ``jobs[:i]`` again as a batch
  (they passed validation), ``jobs[i]`` alone as a plain Submit (so its caller gets the exact
  error a lone submit would), and the rest again by the same rule -- in that order, so jobs of
  equal priority keep their call order. One bad job costs two or three extra round trips for
  its batch-mates;
- a refusal naming no job (a queue's max_pending, a message over gRPC's size cap) resends every
  job alone, in call order: n round trips, paid only when the server says no;
- errors that say nothing about the jobs (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, auth, ...)
  go to every caller of the batch. They are never retried: the batch may have been admitted,
  and a resend could enqueue the jobs twice (use idempotency keys to resubmit safely).

A batch holding one job goes out as a plain Submit, so a lone caller sees no difference.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from dispatchd_client import _requests as rq
from dispatchd_client.errors import DispatchdError
from dispatchd_client.types import Job
from dispatchd_client.v1 import dispatcher_pb2 as pb

__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_JOBS", "Coalescer"]

#: Jobs per SubmitBatch. The server accepts 10,000; beyond a thousand the round trip is
#: already amortized and a bigger batch only delays its first caller.
MAX_BATCH_JOBS = 1_000
#: Payload bytes per SubmitBatch, well under the 64 MiB channel message cap.
MAX_BATCH_BYTES = 16 << 20
#: Refusals that depend on the jobs themselves: resending the others can succeed.
_PER_JOB_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
_JOB_INDEX = re.compile(r"^jobs\[(\d+)\]: ")

#: Sends one unary call and parses its answer, raising DispatchdError (AsyncClient._call).
SendSubmit = Callable[[rq.Rpc[Job]], Awaitable[Job]]
SendBatch = Callable[[rq.Rpc[list[Job]]], Awaitable[list[Job]]]


@dataclass(slots=True)
class _Pending:
    """One caller's job and the future its ``submit()`` awaits."""

    spec: pb.JobSpec
    metadata: tuple[tuple[str, str], ...] | None
    future: asyncio.Future[Job] = field(repr=False)


class Coalescer:
    """Collects submits and sends them in batches; one per AsyncClient, bound to its loop."""

    def __init__(self, send_one: SendSubmit, send_batch: SendBatch, window: float) -> None:
        if window < 0:
            raise ValueError("coalesce_window must be >= 0")
        self._send_one = send_one
        self._send_batch = send_batch
        self._window = window
        self._queued: list[_Pending] = []
        self._queued_bytes = 0
        self._flush_handle: asyncio.Handle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def submit(self, rpc: rq.Rpc[Job]) -> asyncio.Future[Job]:
        """Queue the job of a built Submit call; the future resolves to its own outcome."""
        loop = asyncio.get_running_loop()
        request = rpc.request
        assert isinstance(request, pb.SubmitRequest)
        pending = _Pending(request.job, rpc.metadata, loop.create_future())
        size = len(request.job.payload)
        if self._queued and self._queued_bytes + size > MAX_BATCH_BYTES:
            self.flush()
        self._queued.append(pending)
        self._queued_bytes += size
        if len(self._queued) >= MAX_BATCH_JOBS:
            self.flush()
        elif self._flush_handle is None:
            # call_soon runs after every task already ready in this tick has queued its job.
            if self._window:
                self._flush_handle = loop.call_later(self._window, self.flush)
            else:
                self._flush_handle = loop.call_soon(self.flush)
        return pending.future

    def flush(self) -> None:
        """Send what is queued now, as one batch."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        items, self._queued, self._queued_bytes = self._queued, [], 0
        if items:
            task = asyncio.get_running_loop().create_task(self._send(items))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def close(self) -> None:
        """Send what is queued and wait for every batch in flight to settle."""
        self.flush()
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)

    async def _send(self, items: list[_Pending]) -> None:
        """Settle every item's future; never raises (each error lands on its callers)."""
        if not items:
            return
        if len(items) == 1:
            await self._send_alone(items[0])
            return
        rpc = rq.Rpc(
            "SubmitBatch",
            pb.SubmitBatchRequest(jobs=[p.spec for p in items]),
            rq.parse_submitted_batch,
            metadata=items[0].metadata,
        )
        try:
            jobs = await self._send_batch(rpc)
        except DispatchdError as e:
            await self._after_refusal(items, e)
        except BaseException as e:  # a cancelled flush task, a bug: never leave callers hanging
            _fail(items, e)
            raise
        else:
            for pending, job in zip(items, jobs, strict=True):
                _resolve(pending.future, job)

    async def _after_refusal(self, items: list[_Pending], error: DispatchdError) -> None:
        if error.code not in _PER_JOB_CODES:
            _fail(items, error)
            return
        match = _JOB_INDEX.match(error.details)
        index = int(match.group(1)) if match else -1
        if 0 <= index < len(items):
            await self._send(items[:index])
            await self._send_alone(items[index])
            await self._send(items[index + 1 :])
        else:
            for pending in items:
                await self._send_alone(pending)

    async def _send_alone(self, pending: _Pending) -> None:
        rpc = rq.Rpc(
            "Submit",
            pb.SubmitRequest(job=pending.spec),
            rq.parse_submitted,
            metadata=pending.metadata,
        )
        try:
            job = await self._send_one(rpc)
        except DispatchdError as e:
            _fail([pending], e)
        except BaseException as e:
            _fail([pending], e)
            raise
        else:
            _resolve(pending.future, job)


def _resolve(future: asyncio.Future[Job], job: Job) -> None:
    if not future.done():  # its caller may have been cancelled meanwhile
        future.set_result(job)


def _fail(items: list[_Pending], error: BaseException) -> None:
    """Each caller gets its own exception object, so tracebacks do not pile up on one."""
    for pending in items:
        if pending.future.done():
            continue
        if isinstance(error, asyncio.CancelledError):
            pending.future.cancel()
        elif isinstance(error, DispatchdError) and len(items) > 1:
            own = type(error)(error.code, error.details)
            own.__cause__ = error.__cause__
            pending.future.set_exception(own)
        else:
            pending.future.set_exception(error)
