"""The batch RPCs (docs/workflows.md): create, get, wait, close, cancel. Each validates what
only the wire form can get wrong, calls the backend and converts back; the bookkeeping is
the backend's (engine/flows.py, lua/includes/flows.lua)."""

from __future__ import annotations

import random
import time
from typing import Any

import grpc

from dispatchd import flows_convert
from dispatchd.backend import Backend
from dispatchd.engine.errors import EngineError, InvalidArgument
from dispatchd.engine.ids import IdSource
from dispatchd.observability.events import EventFilter
from dispatchd.service.errors import abort, translating
from dispatchd.service.requests import wait_timeout
from dispatchd_client.v1 import dispatcher_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]


class FlowRpcs:
    _backend: Backend  # set by SlotRpcs.__init__ (the servicer's first base)

    @translating
    async def CreateBatch(
        self, request: pb.CreateBatchRequest, context: Context
    ) -> pb.CreateBatchResponse:
        b = request.batch
        if not b.queue:
            raise InvalidArgument("batch.queue is required", field="batch.queue")
        now = 0.0  # callbacks carry no times (engine/flows.py check_callback)
        try:
            on_success = flows_convert.callback_of(b, "on_success", b.queue, now)
            on_complete = flows_convert.callback_of(b, "on_complete", b.queue, now)
        except InvalidArgument as e:
            raise e.under("batch") from None
        for name in ("on_success", "on_complete"):
            if b.HasField(name) and getattr(b, name).HasField("ttl"):
                raise InvalidArgument(
                    f"{name} may not set ttl: it is submitted when the batch completes",
                    field=f"batch.{name}.ttl",
                )
        batch_id = b.batch_id or _new_batch_id()
        try:
            view = await self._backend.create_batch(
                b.queue, batch_id, b.description, on_success, on_complete
            )
        except InvalidArgument as e:
            raise e.under("batch") from None
        return pb.CreateBatchResponse(batch=flows_convert.batch_to_pb(view))

    @translating
    async def GetBatch(self, request: pb.GetBatchRequest, context: Context) -> pb.GetBatchResponse:
        view = await self._backend.get_batch(request.queue, request.batch_id)
        return pb.GetBatchResponse(batch=flows_convert.batch_to_pb(view))

    @translating
    async def WaitBatch(
        self, request: pb.WaitBatchRequest, context: Context
    ) -> pb.WaitBatchResponse:
        timeout = wait_timeout(request, context)
        view = await self._backend.wait_batch(request.queue, request.batch_id, timeout)
        return pb.WaitBatchResponse(batch=flows_convert.batch_to_pb(view))

    @translating
    async def CloseBatch(
        self, request: pb.CloseBatchRequest, context: Context
    ) -> pb.CloseBatchResponse:
        view = await self._backend.close_batch(request.queue, request.batch_id)
        return pb.CloseBatchResponse(batch=flows_convert.batch_to_pb(view))

    @translating
    async def CancelBatch(
        self, request: pb.CancelBatchRequest, context: Context
    ) -> pb.CancelBatchResponse:
        view, n = await self._backend.cancel_batch(request.queue, request.batch_id)
        return pb.CancelBatchResponse(batch=flows_convert.batch_to_pb(view), cancelled_count=n)

    async def WatchEvents(self, request: pb.WatchEventsRequest, context: Context) -> None:
        """Writes with context.write, as the Work stream does (service/work.py): a cancel
        lands wherever it waits and the watch ends with it."""
        try:
            flt = EventFilter.of(
                request.queues, request.job_ids, request.batch_ids, list(request.kinds)
            )
            stream = await self._backend.watch_events(flt, request.resume_token)
            try:
                async for item in stream:
                    await context.write(flows_convert.event_to_pb(item))
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
        except EngineError as e:
            await abort(context, e)


_IDS = IdSource(random.SystemRandom())


def _new_batch_id() -> str:
    """A server-made batch id: a ULID, sortable by creation time."""
    return _IDS.job_id(time.time())
