"""WaitJob and AcquireSlot support: an engine observer that wakes waiting callers."""

from __future__ import annotations

import asyncio

from dispatchd.engine import EngineObserver, FinishedJob, SlotRecord
from dispatchd.engine.flows import BatchView


class Waiters(EngineObserver):
    """Futures per job id, resolved when the engine reports the job finished."""

    def __init__(self) -> None:
        self._by_job: dict[str, set[asyncio.Future[None]]] = {}
        self._slots: dict[str, asyncio.Future[SlotRecord]] = {}
        self._by_batch: dict[tuple[str, str], set[asyncio.Future[None]]] = {}

    def add_batch(self, key: tuple[str, str]) -> asyncio.Future[None]:
        """WaitBatch: resolved when the batch has no active job (batch_settled)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._by_batch.setdefault(key, set()).add(fut)
        return fut

    def discard_batch(self, key: tuple[str, str], fut: asyncio.Future[None]) -> None:
        futs = self._by_batch.get(key)
        if futs is not None:
            futs.discard(fut)
            if not futs:
                del self._by_batch[key]

    def batch_settled(self, batch: BatchView) -> None:
        for fut in self._by_batch.pop((batch.queue, batch.batch_id), ()):
            if not fut.done():
                fut.set_result(None)

    def add_slot(self, request_id: str) -> asyncio.Future[SlotRecord]:
        fut: asyncio.Future[SlotRecord] = asyncio.get_running_loop().create_future()
        self._slots[request_id] = fut
        return fut

    def discard_slot(self, request_id: str) -> None:
        self._slots.pop(request_id, None)

    def slot_granted(self, request_id: str, slot: SlotRecord) -> None:
        fut = self._slots.pop(request_id, None)
        if fut is not None and not fut.done():
            fut.set_result(slot)

    def add(self, job_id: str) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._by_job.setdefault(job_id, set()).add(fut)
        return fut

    def discard(self, job_id: str, fut: asyncio.Future[None]) -> None:
        futs = self._by_job.get(job_id)
        if futs is not None:
            futs.discard(fut)
            if not futs:
                del self._by_job[job_id]

    def job_finished(self, job: FinishedJob) -> None:
        for fut in self._by_job.pop(job.id, ()):
            if not fut.done():
                fut.set_result(None)
