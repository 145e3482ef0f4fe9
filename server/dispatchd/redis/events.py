"""WatchEvents on Redis (docs/workflows.md): the scripts add every lifecycle event to their
queue's stream {dq:<queue>}:events (lua/includes/events.lua, trimmed to about 20,000
entries per queue); a watcher reads the streams of the queues it watches with XREAD, from
the positions its resume token names. Nothing is buffered per watcher: it reads at its own
pace, a batch at a time, so a slow consumer costs no memory here. When a stream was trimmed
past a watcher's position (it resumed too late, or read too slowly), Redis's
the event numbers the scripts give each entry (1, 2, ... per queue) show the skip, and
the watcher is told (RESUME_TOO_OLD / FELL_BEHIND).

A resume token is the position in each watched queue's stream: base64 of a JSON object
{queue: [last entry id, its event number]}."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from redis.crc import key_slot

from dispatchd.engine import JobFailure
from dispatchd.observability.events import (
    FELL_BEHIND,
    RESUME_TOO_OLD,
    Event,
    EventFilter,
    EventKind,
    Missed,
    bad_token,
)
from dispatchd.redis import records
from dispatchd.redis.store import RedisStore

#: Entries one XREAD takes, and how long it blocks waiting for new ones (ms).
READ_COUNT = 500
BLOCK_MS = 1_000
#: How often a watcher of every queue looks for queues created since (s).
QUEUES_EVERY = 2.0
#: A queue records its events while a watcher renewed this within the window (s): a
#: resume within RECORD_WINDOW of the last watcher's end misses nothing (events_on.lua).
RECORD_WINDOW = 600.0
RENEW_EVERY = 60.0


def events_key(queue: str) -> str:
    return records.base(queue) + ":events"


def _queue_of_key(key: str) -> str:
    """The queue of an events key ({dq:<queue>}:events)."""
    return key[len("{dq:") : -len("}:events")]


def encode_token(positions: dict[str, tuple[str, int]]) -> str:
    raw = json.dumps(positions, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_token(token: str) -> dict[str, tuple[str, int]]:
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error):
        raise bad_token(token) from None
    if not isinstance(value, dict):
        raise bad_token(token)
    out: dict[str, tuple[str, int]] = {}
    for queue, pos in value.items():
        if not (isinstance(pos, list) and len(pos) == 2 and isinstance(pos[0], str)):
            raise bad_token(token)
        if not isinstance(pos[1], int):
            raise bad_token(token)
        out[queue] = (pos[0], pos[1])
    return out


def _event(queue: str, fields: dict[bytes, bytes], token: str) -> Event:
    f = {k.decode(): v for k, v in fields.items()}

    def s(name: str) -> str:
        return f[name].decode() if name in f else ""

    kind = EventKind(int(s("k") or 0))
    progress = None
    if "pm" in f or "pp" in f:
        pp = s("pp")
        progress = (int(pp) if pp else None, s("pm"), float(s("t") or 0))
    error = None
    if s("em") or s("ec"):
        error = JobFailure(s("em"), s("er") == "1", s("ec"))
    counts = tuple(int(x) for x in s("c").split(",")) if s("c") else None
    return Event(
        token,
        kind,
        float(s("t") or 0),
        queue,
        s("j"),
        s("b"),
        int(s("a") or 0),
        s("w"),
        progress,
        error,
        counts,
    )


Position = tuple[str, int]
"""Where a watcher is in one queue's stream: the last entry id it read and that entry's
event number (0 before any)."""


class RedisEvents(RedisStore):
    async def _record(self, queues: list[str]) -> set[str]:
        """Keeps these queues recording their events; returns the ones that exist."""
        on = set()
        for q in queues:
            if await self.run("events_on", [records.cfg_key(q)], [RECORD_WINDOW]):
                on.add(q)
        return on

    async def _last_positions(self, queues: list[str]) -> dict[str, Position]:
        """Each stream's last entry: where "from now on" starts."""
        pipe = self.client.pipeline(transaction=False)
        for q in queues:
            pipe.xrevrange(events_key(q), count=1)
        out: dict[str, Position] = {}
        for q, reply in zip(queues, await self.send(pipe), strict=True):
            if reply:
                entry_id, fields = reply[0]
                out[q] = (entry_id.decode(), int(fields.get(b"n", b"0")))
            else:
                out[q] = ("0-0", 0)
        return out

    async def watch_events(self, flt: EventFilter, token: str) -> AsyncIterator[Event | Missed]:
        """Starts at this call (the streams' positions are read now) and returns the
        iterator of what follows."""
        positions = decode_token(token) if token else {}
        fixed = sorted(flt.queues)
        queues = fixed or await self.queue_names()
        fresh = [q for q in queues if q not in positions]
        if token:  # a queue the token does not name: all its stream (it is new to it)
            positions.update({q: ("0-0", 0) for q in fresh})
        else:
            positions.update(await self._last_positions(fresh))
        if fixed:
            positions = {q: positions[q] for q in queues}
        recording = await self._record(list(positions))
        return self._follow(flt, positions, token, bool(fixed), recording)

    async def _follow(
        self,
        flt: EventFilter,
        positions: dict[str, Position],
        token: str,
        fixed: bool,
        recording: set[str],
    ) -> AsyncIterator[Event | Missed]:
        looked = renewed = time.monotonic()
        resumed = bool(token)  # the first gap of a resume is RESUME_TOO_OLD, later ones FELL_BEHIND
        while True:
            if not fixed and time.monotonic() - looked > QUEUES_EVERY:
                looked = time.monotonic()
                new = [q for q in await self.queue_names() if q not in positions]
                positions.update({q: ("0-0", 0) for q in new})  # created since: all of it
            if len(recording) < len(positions):  # queues not there yet, or new
                recording |= await self._record([q for q in positions if q not in recording])
            if time.monotonic() - renewed > RENEW_EVERY:
                renewed = time.monotonic()
                recording = await self._record(list(positions))
            if not positions:
                await asyncio.sleep(QUEUES_EVERY)
                continue
            reply = await self._read(positions)
            if not reply:
                resumed = False
                continue
            for key, entries in reply:
                queue = _queue_of_key(key.decode())
                for entry_id, fields in entries:
                    n = int(fields.get(b"n", b"0"))
                    _, last = positions[queue]
                    if n > last + 1:  # trimmed before this watcher read them
                        yield _gap(resumed, queue, positions, n - last - 1)
                    positions[queue] = (entry_id.decode(), n)
                    ev = _event(queue, fields, encode_token(positions))
                    if flt.match(ev):
                        yield ev
            resumed = False

    async def _read(self, positions: dict[str, Position]) -> Any:
        """One XREAD of every watched stream; on a Redis Cluster one per slot, at once (a
        command's keys must share a slot), their entries together."""
        groups: dict[int, list[str]] = {}
        for q in positions:
            slot = key_slot(events_key(q).encode()) if self.cluster else 0
            groups.setdefault(slot, []).append(q)
        replies = await asyncio.gather(
            *(self._xread(names, positions) for names in groups.values())
        )
        return [entry for reply in replies if reply for entry in reply]

    async def _xread(self, names: list[str], positions: dict[str, Position]) -> Any:
        return await self.call(
            "XREAD",
            "COUNT",
            READ_COUNT,
            "BLOCK",
            BLOCK_MS,
            "STREAMS",
            *[events_key(q) for q in names],
            *[positions[q][0] for q in names],
        )


def _gap(resumed: bool, queue: str, positions: dict[str, Position], lost: int) -> Missed:
    where = encode_token(positions)
    if resumed:
        return Missed(
            RESUME_TOO_OLD,
            where,
            f"{lost} events of queue {queue!r} after the token are gone: each queue's "
            "stream keeps about its last 20,000 events; going on with the oldest kept",
        )
    return Missed(
        FELL_BEHIND,
        where,
        f"this stream read queue {queue!r} too slowly: {lost} events were dropped (each "
        "queue's stream keeps about its last 20,000); going on with the oldest kept",
    )
