"""Semaphore mode (Dolead's task_semaphore): width slots held by work outside dispatchd.

An AcquireSlot call becomes a request that waits in its queue, ordered by priority;
each dispatch pass grants waiting requests first while width and rate allow. A slot
counts in the queue's width like a lease, is kept alive by RenewSlot and freed by
ReleaseSlot, or by the server when its ttl passes without a renewal.
"""

from __future__ import annotations

import heapq

from dispatchd.engine import limits as lim
from dispatchd.engine.errors import InvalidArgument, draining
from dispatchd.engine.model import SlotRecord, SlotRequest
from dispatchd.engine.state import EngineState


class SlotMixin(EngineState):
    def request_slot(
        self, queue: str, holder: str, ttl: float, priority: int, now: float
    ) -> SlotRequest:
        """Queues an acquirer; the grant arrives through observer.slot_granted."""
        now = self._clock(now)
        lim.check_slot_request(queue, holder, ttl)
        if self.draining:
            raise draining("grants no slots")
        q = self._ensure_queue(queue)
        request = SlotRequest(
            request_id=f"slot-{self._ids.lease_id()}",
            queue=queue,
            holder=holder,
            ttl=ttl,
            priority=priority,
            seq=self._next_seq(),
        )
        self._slot_requests[request.request_id] = request
        heapq.heappush(q.slot_waiters, (-priority, request.seq, request.request_id))
        self._slot_waiting[queue] = None
        return request

    def cancel_slot_request(self, request_id: str) -> None:
        """The acquirer gave up (deadline, cancel) before its grant."""
        request = self._slot_requests.pop(request_id, None)
        if request is not None:
            request.cancelled = True

    def _grant_slots(self, now: float) -> None:
        if self.draining or not self._slot_waiting:
            return
        for name in list(self._slot_waiting):
            q = self._queues[name]
            s = q.settings
            while q.slot_waiters and not s.paused and q.underway < s.width:
                request = self._slot_requests.get(q.slot_waiters[0][2])
                if request is None:
                    heapq.heappop(q.slot_waiters)
                    continue
                if q.bucket is not None and not q.bucket.take(now):
                    t = q.bucket.next_time(now)
                    if self._rate_wake is None or t < self._rate_wake:
                        self._rate_wake = t
                    break
                heapq.heappop(q.slot_waiters)
                del self._slot_requests[request.request_id]
                slot = SlotRecord(
                    slot_id=request.request_id,
                    queue=name,
                    holder=request.holder,
                    ttl=request.ttl,
                    deadline=now + request.ttl,
                    seq=self._next_seq(),
                )
                q.slots[slot.slot_id] = slot
                self._slots[slot.slot_id] = slot
                heapq.heappush(self._slot_deadlines, (slot.deadline, slot.seq, slot.slot_id))
                self.observer.slot_granted(request.request_id, slot)
            if not q.slot_waiters:
                del self._slot_waiting[name]

    def _slot(self, slot_id: str) -> SlotRecord:
        if not slot_id:
            raise InvalidArgument("slot_id is empty", field="slot_id")
        slot = self._slots.get(slot_id)
        if slot is None:
            raise lim.slot_not_held(slot_id)
        return slot

    def renew_slot(self, slot_id: str, ttl: float | None, now: float) -> SlotRecord:
        now = self._clock(now)
        slot = self._slot(slot_id)
        if ttl is not None:
            lim.check_slot_ttl(ttl)
            slot.ttl = ttl
        deadline = now + slot.ttl
        if deadline < slot.deadline:
            heapq.heappush(self._slot_deadlines, (deadline, slot.seq, slot.slot_id))
        slot.deadline = deadline
        return slot

    def release_slot(self, slot_id: str) -> SlotRecord:
        slot = self._slot(slot_id)
        self._free_slot(slot)
        return slot

    def _free_slot(self, slot: SlotRecord) -> None:
        del self._slots[slot.slot_id]
        q = self._queues[slot.queue]
        del q.slots[slot.slot_id]
        self._consider(q, self._now)
        self.observer.lease_released(slot.queue)

    def _expire_slots(self, now: float) -> None:
        heap = self._slot_deadlines
        while heap and heap[0][0] <= now:
            _, seq, slot_id = heapq.heappop(heap)
            slot = self._slots.get(slot_id)
            if slot is None:
                continue
            if slot.deadline > now:
                heapq.heappush(heap, (slot.deadline, seq, slot_id))
                continue
            self._free_slot(slot)
            self.observer.slot_expired(slot)
