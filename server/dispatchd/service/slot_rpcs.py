"""Semaphore mode over gRPC: AcquireSlot waits for a grant, RenewSlot, ReleaseSlot."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

from dispatchd import convert
from dispatchd.engine import Engine, SlotRecord
from dispatchd.service.errors import translating
from dispatchd.service.pump import DispatchPump
from dispatchd.service.requests import slot_ttl
from dispatchd.service.waiters import Waiters
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

    def __init__(
        self, engine: Engine, pump: DispatchPump, waiters: Waiters, clock: Callable[[], float]
    ) -> None:
        self._engine = engine
        self._pump = pump
        self._waiters = waiters
        self._clock = clock

    @translating
    async def AcquireSlot(
        self, request: pb.AcquireSlotRequest, context: Context
    ) -> pb.AcquireSlotResponse:
        ask = self._engine.request_slot(
            request.queue,
            request.holder,
            slot_ttl(request),
            request.priority,
            self._clock(),
        )
        grant = self._waiters.add_slot(ask.request_id)
        self._pump.kick()
        try:
            slot = await asyncio.shield(grant)
        except asyncio.CancelledError:
            # The caller's deadline passed or it went away. A grant that raced in is
            # handed back at once, so no slot leaks to a caller that cannot release it.
            self._engine.cancel_slot_request(ask.request_id)
            if grant.done() and not grant.cancelled():
                self._engine.release_slot(grant.result().slot_id)
                self._pump.kick()
            raise
        finally:
            self._waiters.discard_slot(ask.request_id)
        return pb.AcquireSlotResponse(slot=_slot_pb(slot))

    @translating
    async def RenewSlot(
        self, request: pb.RenewSlotRequest, context: Context
    ) -> pb.RenewSlotResponse:
        ttl = convert.duration_seconds(request.ttl) if request.HasField("ttl") else None
        slot = self._engine.renew_slot(request.slot_id, ttl, self._clock())
        self._pump.kick()  # the slot timer may need to move
        return pb.RenewSlotResponse(slot=_slot_pb(slot))

    @translating
    async def ReleaseSlot(
        self, request: pb.ReleaseSlotRequest, context: Context
    ) -> pb.ReleaseSlotResponse:
        self._engine.release_slot(request.slot_id)
        self._pump.kick()
        return pb.ReleaseSlotResponse()
