"""Coalescing concurrent ``AsyncClient.submit()`` calls into SubmitBatch round trips.

Many coroutines that call ``submit()`` in the same event-loop tick (or within ``window``
seconds of the first) travel together in one SubmitBatch, the way ioredis pipelines commands;
each caller still gets its own :class:`~dispatchd_client.Job` or its own error.

A refused batch is split so that only the culprit's caller fails, and errors that say nothing
about the jobs reach every caller of the batch (the rules live in ``_batching``).

A batch holding one job goes out as a plain Submit, so a lone caller sees no difference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from dispatchd_client import _requests as rq
from dispatchd_client._batching import (
    MAX_BATCH_BYTES,
    MAX_BATCH_JOBS,
    ONE_BY_ONE,
    alone_call,
    batch_call,
    culprit,
    miscounted,
    own_copy,
)
from dispatchd_client.errors import DispatchdError
from dispatchd_client.types import Job
from dispatchd_client.v1 import dispatcher_pb2 as pb

__all__ = ["Coalescer"]

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
        try:
            jobs = await self._send_batch(batch_call([p.spec for p in items], items[0].metadata))
        except DispatchdError as e:
            await self._after_refusal(items, e)
        except BaseException as e:  # a cancelled flush task, a bug: never leave callers hanging
            _fail(items, e)
            raise
        else:
            if len(jobs) != len(items):  # a broken server or proxy: nobody's job is known
                _fail(items, miscounted(len(items), len(jobs)))
                return
            for pending, job in zip(items, jobs, strict=True):
                _resolve(pending.future, job)

    async def _after_refusal(self, items: list[_Pending], error: DispatchdError) -> None:
        index = culprit(error, len(items))
        if index is None:
            _fail(items, error)
        elif index == ONE_BY_ONE:
            for pending in items:
                await self._send_alone(pending)
        else:
            await self._send(items[:index])
            await self._send_alone(items[index])
            await self._send(items[index + 1 :])

    async def _send_alone(self, pending: _Pending) -> None:
        try:
            job = await self._send_one(alone_call(pending.spec, pending.metadata))
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
            pending.future.set_exception(own_copy(error))
        else:
            pending.future.set_exception(error)
