"""Callers of one replica waiting on Redis events: WaitJob callers on a job's finish,
slot acquirers on a queue's next change. Keyed futures, resolved by the pub/sub reader."""

from __future__ import annotations

import asyncio
import contextlib


class Waiting:
    def __init__(self) -> None:
        self._jobs: dict[str, list[asyncio.Future[None]]] = {}
        self._queues: dict[str, list[asyncio.Future[None]]] = {}
        #: Slot acquirers woken by a change that have not tried again yet (settle()).
        self.owed = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    def job(self, job_id: str) -> asyncio.Future[None]:
        """Resolved when a finish of ``job_id`` is announced; discard it when done."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._jobs.setdefault(job_id, []).append(fut)
        return fut

    def discard(self, job_id: str, fut: asyncio.Future[None]) -> None:
        _remove(self._jobs, job_id, fut)

    def finished(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            _resolve(self._jobs.pop(job_id, []))

    def queue_changed(self, queue: str) -> None:
        for fut in self._queues.pop(queue, []):
            if not fut.done():
                fut.set_result(None)
                self.owed += 1
                self._quiet.clear()

    async def change(self, queue: str, within: float) -> bool:
        """Returns at the queue's next change (subscribe first) or after ``within`` s:
        True when a change woke it, and then the caller owes a try (``tried()``)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(queue, []).append(fut)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, within)
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.tried()  # woken, but it will not try: it was cancelled
            raise
        finally:
            _remove(self._queues, queue, fut)
        return fut.done() and not fut.cancelled()

    def tried(self) -> None:
        """A woken acquirer has tried again."""
        self.owed -= 1
        if self.owed <= 0:
            self.owed = 0
            self._quiet.set()

    async def tries_done(self, within: float = 5.0) -> None:
        """Returns once every woken acquirer has tried again (or after ``within`` s)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._quiet.wait(), within)


def _resolve(futs: list[asyncio.Future[None]]) -> None:
    for fut in futs:
        if not fut.done():
            fut.set_result(None)


def _remove(
    table: dict[str, list[asyncio.Future[None]]], key: str, fut: asyncio.Future[None]
) -> None:
    futs = table.get(key)
    if futs is not None and fut in futs:
        futs.remove(fut)
        if not futs:
            del table[key]
