"""Semaphore mode over gRPC: AcquireSlot waits for a grant, RenewSlot, ReleaseSlot. The
waiting, and giving a request back when the caller goes away, is the backend's."""

from __future__ import annotations

from typing import Any

import grpc

from dispatchd import convert
from dispatchd.backend import Backend
from dispatchd.engine import SlotRecord
from dispatchd.engine import limits as lim
from dispatchd.service.errors import translating
from dispatchd.service.requests import slot_ttl
from dispatchd_client.v1 import dispatcher_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]


def _slot_pb(slot: SlotRecord) -> pb.Slot:
    return pb.Slot(
        slot_id=slot.slot_id,
        queue=slot.queue,
        holder=slot.holder,
        expire_time=convert.timestamp(slot.deadline),
    )


class SlotRpcs:
    """Mixed into the DispatcherService servicer."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    @translating
    async def AcquireSlot(
        self, request: pb.AcquireSlotRequest, context: Context
    ) -> pb.AcquireSlotResponse:
        ttl = slot_ttl(request)
        lim.check_slot_request(request.queue, request.holder, ttl)
        slot = await self._backend.acquire_slot(
            request.queue, request.holder, ttl, request.priority
        )
        return pb.AcquireSlotResponse(slot=_slot_pb(slot))

    @translating
    async def RenewSlot(
        self, request: pb.RenewSlotRequest, context: Context
    ) -> pb.RenewSlotResponse:
        ttl = convert.duration_seconds(request.ttl) if request.HasField("ttl") else None
        if ttl is not None:
            lim.check_slot_ttl(ttl)
        slot = await self._backend.renew_slot(request.slot_id, ttl)
        return pb.RenewSlotResponse(slot=_slot_pb(slot))

    @translating
    async def ReleaseSlot(
        self, request: pb.ReleaseSlotRequest, context: Context
    ) -> pb.ReleaseSlotResponse:
        await self._backend.release_slot(request.slot_id)
        return pb.ReleaseSlotResponse()
