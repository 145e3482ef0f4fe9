"""The lease deadline heap: one entry per lease, found late rather than updated in place."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping

from dispatchd.engine.model import LeaseRecord


class DeadlineHeap:
    """Heartbeats move deadlines later without touching the heap: a popped entry whose
    lease now ends later is pushed back. Entries of finished leases are skipped when
    they surface, and the heap is rebuilt once they outnumber live leases 4 to 1, so
    its size stays proportional to the leases held."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []

    def push(self, lease: LeaseRecord, deadline: float | None = None) -> None:
        at = lease.deadline if deadline is None else deadline
        heapq.heappush(self._heap, (at, lease.dispatch_seq, lease.lease_id))

    def earliest(self) -> float | None:
        """When pop_due next has work; may be early (never late)."""
        return self._heap[0][0] if self._heap else None

    def pop_due(
        self, now: float, leases: Mapping[str, LeaseRecord], expire: Callable[[LeaseRecord], None]
    ) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, lease_id = heapq.heappop(heap)
            lease = leases.get(lease_id)
            if lease is None:
                continue
            if lease.deadline > now:
                heapq.heappush(heap, (lease.deadline, seq, lease_id))
                continue
            expire(lease)

    def compact(self, leases: Mapping[str, LeaseRecord]) -> None:
        if len(self._heap) > 64 and len(self._heap) > 4 * len(leases):
            self._heap = [(ls.deadline, ls.dispatch_seq, ls.lease_id) for ls in leases.values()]
            heapq.heapify(self._heap)
