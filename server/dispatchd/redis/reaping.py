"""Which queues a reaper pass looks at, so a pass costs what can be due, not every queue.

A reaper pass takes back the leases of replicas that died, promotes scheduled jobs, expires
waiting jobs and trims finished-job indexes (reap.lua). Walking every registered queue on
every pass made 20,000 idle queues cost every replica 20,000 scripts a pass. A pass now
reaps:

- the queues this replica's workers serve (their leases and heartbeats are its own);
- the queues the due index names as due by now: ``dq:due``, a sorted set of members
  ``<second>:<queue>`` scored by that second. A replica adds a member *before* it makes
  something a reaper must see later, so a crash in between leaves a spare entry, never a
  missing one: before a claim (the leases' deadline), a submit of delayed or expiring jobs,
  an AcquireSlot (the slot's ttl, the request's lapse). Each reap answers when the queue
  next needs one (reap.lua), and the pass files that as the queue's next member, so a queue
  with a lease that a heartbeat moved, or a chain of scheduled jobs, stays in the index for
  as long as it needs a reaper. Members are whole seconds, so one replica adds at most one
  a second per queue (and remembers which it added);
- a few queues of the registry in turn (``SWEEP_PER_PASS``, by SSCAN): a safety net that
  looks at every queue once in a while (a lease shortened by a lease cut after its member
  was filed, a finished-job index of a queue nobody touches, an index lost with its data).

Members of a due second are removed after their queues were reaped; a member added for the
same queue and second meanwhile would be removed with them, but a replica only adds members
for seconds still to come.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

DUE_KEY = "dq:due"
#: Queues of the registry each pass looks at besides the due and the served ones.
SWEEP_PER_PASS = 100
#: Most due members one pass takes (the rest wait for the next pass, a moment later).
DUE_PER_PASS = 1000
#: A member this replica added is trusted to be there while its second is this far ahead:
#: other replicas' clocks may run ahead of this one's.
CLOCK_MARGIN_SECONDS = 2.0

Call = Callable[..., Any]


class ReapIndex:
    def __init__(
        self, call: Call, send: Callable[[Any], Any], pipeline: Callable[[], Any], registry: str
    ) -> None:
        self._call = call
        self._send = send
        self._pipeline = pipeline
        self._registry = registry
        self._added: set[tuple[str, int]] = set()  # (queue, second) this replica filed
        self._cursor = 0

    @staticmethod
    def _second(when: float) -> int:
        return math.ceil(when)

    def _fresh(self, queue: str, second: int, now: float) -> bool:
        """Whether filing (queue, second) is needed: not filed here with margin to spare."""
        if second > now + CLOCK_MARGIN_SECONDS and (queue, second) in self._added:
            return False
        if len(self._added) > 100_000:  # forget what is long due
            self._added = {(q, s) for q, s in self._added if s > now}
        return True

    async def mark(self, queue: str, when: float, now: float) -> None:
        """``queue`` will need a reaper by ``when`` (absolute, this replica's clock)."""
        second = self._second(when)
        if self._fresh(queue, second, now):
            await self._call("ZADD", DUE_KEY, "NX", second, f"{second}:{queue}")
            self._added.add((queue, second))

    async def due(self, now: float) -> list[tuple[str, str]]:
        """(member, queue) of every member due by ``now`` (at most DUE_PER_PASS)."""
        raw = await self._call("ZRANGEBYSCORE", DUE_KEY, "-inf", now, "LIMIT", 0, DUE_PER_PASS)
        out = []
        for m in raw:
            member = m.decode() if isinstance(m, bytes) else str(m)
            out.append((member, member.partition(":")[2]))
        return out

    async def sweep(self, count: int) -> list[str]:
        """The next ``count`` or so queues of the registry, in SSCAN order (0: none)."""
        if count <= 0:
            return []
        cursor, names = await self._call("SSCAN", self._registry, self._cursor, "COUNT", count)
        self._cursor = int(cursor)
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]

    @property
    def swept_all(self) -> bool:
        """The last sweep finished a round of the registry."""
        return self._cursor == 0

    async def settle(self, consumed: Iterable[str], next_due: dict[str, float], now: float) -> None:
        """After a pass: the due members it reaped go, each reaped queue's next need is
        filed (absolute times, this replica's clock)."""
        pipe = self._pipeline()
        consumed = list(consumed)
        if consumed:
            pipe.zrem(DUE_KEY, *consumed)
        filed = []
        for queue, when in next_due.items():
            second = self._second(when)
            if second <= now:  # due again at once (more than one pass of work)
                second = self._second(now) + 1
            if self._fresh(queue, second, now):
                pipe.zadd(DUE_KEY, {f"{second}:{queue}": second}, nx=True)
                filed.append((queue, second))
        if consumed or filed:
            await self._send(pipe)
            self._added.update(filed)
