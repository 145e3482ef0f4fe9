"""Semaphore mode on the Redis backend: AcquireSlot waits in Redis' queue of acquirers
(priority, then age; ahead of the queue's jobs), RenewSlot and ReleaseSlot. The same
checks and messages as the embedded backend (engine/slots.py)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc

from dispatchd import convert
from dispatchd.engine import limits as lim
from dispatchd.engine.errors import draining
from dispatchd.redis import records
from dispatchd.redis.replica import Replica
from dispatchd.redis.signals import events
from dispatchd.service.errors import translating
from dispatchd.service.requests import slot_ttl
from dispatchd_client.v1 import dispatcher_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]
#: A waiting request lives this long in Redis unless its replica tries again (it does
#: every RETRY_SECONDS): a replica that died stops holding up the queue within seconds.
REQUEST_TTL = 5.0
RETRY_SECONDS = 2.0


def _slot_pb(slot_id: str, holder: str, deadline: float) -> pb.Slot:
    queue = records.queue_of(slot_id) or ""
    expire = convert.timestamp(deadline)
    return pb.Slot(slot_id=slot_id, queue=queue, holder=holder, expire_time=expire)


class RedisSlotRpcs:
    """Mixed into the Redis backend's DispatcherService servicer."""

    _replica: Replica

    @translating
    async def AcquireSlot(
        self, request: pb.AcquireSlotRequest, context: Context
    ) -> pb.AcquireSlotResponse:
        queue, holder, ttl = request.queue, request.holder, slot_ttl(request)
        lim.check_slot_request(queue, holder, ttl)
        replica = self._replica
        if replica.draining:
            raise draining("grants no slots")
        backend = replica.backend
        await backend.ensure_queue(queue)
        slot_id = records.job_id(f"slot-{uuid.uuid4().hex[:20]}", queue)
        await replica.signals.watch(events(queue))
        try:
            while True:
                deadline, hint = await backend.acquire(
                    slot_id, request.priority, holder, ttl, REQUEST_TTL
                )
                if deadline is not None:
                    return pb.AcquireSlotResponse(slot=_slot_pb(slot_id, holder, deadline))
                wait = RETRY_SECONDS if hint is None else min(RETRY_SECONDS, hint)
                await replica.waiting.change(queue, wait)
        except asyncio.CancelledError:
            # The caller's deadline passed or it went away: drop the request, and the
            # slot if the grant raced in, so no slot leaks to a caller that cannot release.
            await asyncio.shield(backend.slot_op("abandon", slot_id))
            raise
        finally:
            replica.signals.unwatch(events(queue))

    @translating
    async def RenewSlot(
        self, request: pb.RenewSlotRequest, context: Context
    ) -> pb.RenewSlotResponse:
        ttl = convert.duration_seconds(request.ttl) if request.HasField("ttl") else None
        if ttl is not None:
            lim.check_slot_ttl(ttl)
        holder, deadline = await self._replica.backend.slot_op("renew", request.slot_id, ttl)
        return pb.RenewSlotResponse(slot=_slot_pb(request.slot_id, holder, deadline))

    @translating
    async def ReleaseSlot(
        self, request: pb.ReleaseSlotRequest, context: Context
    ) -> pb.ReleaseSlotResponse:
        await self._replica.backend.slot_op("release", request.slot_id)
        return pb.ReleaseSlotResponse()
