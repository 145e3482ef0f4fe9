"""The ready set: the queues that can dispatch now, so a dispatch pass costs what can move.

A queue is in it while, as far as the queue itself goes, it may hand out a job now: a job
is ready, it is not paused, it is under its width and it has a rate token. Whether a
worker with a free credit serves it is the pass's business: the pass walks the workers
with free credits and, for each, only its own queues that are in the set. So a queue that
is paused, full, out of tokens or without a worker costs a pass nothing, however many jobs
it holds, and 20,000 queues whose jobs no worker takes cost nothing either.

Queues leave the set lazily, when a pass finds one that cannot give a job after all (the
pass then files it under what holds it back); they come back on the event that may free
them: a job becoming ready, a lease or slot ending, a settings change, or the time of the
next token (a wake-up kept here, one per queue). The set keeps its queues in ring order,
the order in which they became ready, for the round-robin of the pass.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from sortedcontainers import SortedDict

from dispatchd.engine.queue import QueueState


class ReadySet:
    __slots__ = ("_next_key", "_ring", "_wake_seq", "_wakes")

    def __init__(self) -> None:
        self._ring: SortedDict = SortedDict()  # ring key -> QueueState
        self._next_key = 0
        self._wakes: list[tuple[float, int, str]] = []  # (when, seq, queue name)
        self._wake_seq = 0

    def __len__(self) -> int:
        return len(self._ring)

    def __iter__(self) -> Iterator[QueueState]:
        return iter(self._ring.values())

    def add(self, q: QueueState) -> None:
        """``q`` may dispatch now; a queue already in the set keeps its place."""
        if q.ring_key is None:
            self._next_key += 1
            q.ring_key = self._next_key
            self._ring[q.ring_key] = q

    def discard(self, q: QueueState) -> None:
        if q.ring_key is not None:
            del self._ring[q.ring_key]
            q.ring_key = None

    def key_at(self, index: int) -> int:
        """The ring key of the queue at ``index`` in ring order."""
        key: int = self._ring.peekitem(index)[0]
        return key

    def wake(self, q: QueueState, when: float) -> None:
        """``q`` is held back by a rate (its own, or every ready key's) until ``when``."""
        if q.wake_due is None or when < q.wake_due:
            q.wake_due = when
            self._wake_seq += 1
            heapq.heappush(self._wakes, (when, self._wake_seq, q.name))

    def peek_wake(self) -> tuple[float, str] | None:
        """The earliest wake-up (time, queue name), or None."""
        if not self._wakes:
            return None
        when, _, name = self._wakes[0]
        return when, name

    def drop_wake(self) -> None:
        """Forgets the earliest wake-up (one that is no longer needed)."""
        heapq.heappop(self._wakes)

    def due(self, now: float) -> list[str]:
        """Names of the queues whose wake-up time came (their wake is used up)."""
        out = []
        wakes = self._wakes
        while wakes and wakes[0][0] <= now:
            _, _, name = heapq.heappop(wakes)
            out.append(name)
        return out
