"""WatchEvents on Redis (docs/workflows.md): the scripts add every lifecycle event to their
queue's stream {dq:<queue>}:events (lua/includes/events.lua, trimmed to about 20,000
entries per queue); a watcher reads the streams of the queues it watches with XREAD, from
the positions its resume token names. Nothing is buffered per watcher: it reads at its own
pace, a batch at a time, so a slow consumer costs no memory here. When a stream was trimmed
past a watcher's position (it resumed too late, or read too slowly), Redis's
max-deleted-entry-id says so and the watcher is told (RESUME_TOO_OLD / FELL_BEHIND).

A resume token is the position in each watched queue's stream: base64 of a JSON object
{queue: last entry id}."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import AsyncIterator
from typing import Any

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


def events_key(queue: str) -> str:
    return records.base(queue) + ":events"


def _queue_of_key(key: str) -> str:
    """The queue of an events key ({dq:<queue>}:events)."""
    return key[len("{dq:") : -len("}:events")]


def encode_token(positions: dict[str, str]) -> str:
    raw = json.dumps(positions, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_token(token: str) -> dict[str, str]:
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error):
        raise bad_token(token) from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise bad_token(token)
    return value


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n or 0)


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


class RedisEvents(RedisStore):
    async def _last_ids(self, queues: list[str]) -> dict[str, str]:
        """Each stream's last entry id ('0-0' when empty): where "from now on" starts."""
        pipe = self.client.pipeline(transaction=False)
        for q in queues:
            pipe.xrevrange(events_key(q), count=1)
        out = {}
        for q, reply in zip(queues, await self.send(pipe), strict=True):
            out[q] = reply[0][0].decode() if reply else "0-0"
        return out

    async def _trimmed_past(self, positions: dict[str, str]) -> list[tuple[str, str]]:
        """The queues whose stream dropped entries after the position (queue, position)."""
        pipe = self.client.pipeline(transaction=False)
        names = list(positions)
        for q in names:
            pipe.execute_command("XINFO", "STREAM", events_key(q))
        gone = []
        for q, reply in zip(names, await self.send_lenient(pipe), strict=True):
            if not isinstance(reply, list):
                continue  # no stream yet: nothing was dropped
            info = dict(zip(reply[::2], reply[1::2], strict=True))
            deleted = info.get(b"max-deleted-entry-id", b"0-0").decode()
            if _id(deleted) > _id(positions[q]):
                gone.append((q, positions[q]))
        return gone

    async def send_lenient(self, pipe: Any) -> list[Any]:
        """A pipeline whose commands may fail one by one (XINFO of a missing stream)."""
        return list(await pipe.execute(raise_on_error=False))

    async def watch_events(self, flt: EventFilter, token: str) -> AsyncIterator[Event | Missed]:
        """Starts at this call (the streams' positions are read now) and returns the
        iterator of what follows."""
        positions = decode_token(token) if token else {}
        fixed = sorted(flt.queues)
        queues = fixed or await self.queue_names()
        fresh = [q for q in queues if q not in positions]
        if token:  # a queue the token does not name: all its stream (it is new to it)
            positions.update({q: "0-0" for q in fresh})
        else:
            positions.update(await self._last_ids(fresh))
        positions = {q: positions[q] for q in queues} if fixed else positions
        missed = [
            Missed(
                RESUME_TOO_OLD,
                token,
                f"events of queue {q!r} after {at} are gone: each queue's stream keeps about "
                "its last 20,000 events; going on with the oldest kept",
            )
            for q, at in await self._trimmed_past(positions)
        ]
        return self._follow(flt, positions, missed, bool(fixed))

    async def _follow(
        self, flt: EventFilter, positions: dict[str, str], missed: list[Missed], fixed: bool
    ) -> AsyncIterator[Event | Missed]:
        for m in missed:
            yield m
        looked = time.monotonic()
        while True:
            if not fixed and time.monotonic() - looked > QUEUES_EVERY:
                looked = time.monotonic()
                new = [q for q in await self.queue_names() if q not in positions]
                positions.update({q: "0-0" for q in new})  # created since: all of it
            if not positions:
                await self._pause()
                continue
            names = list(positions)
            reply: Any = await self.call(
                "XREAD",
                "COUNT",
                READ_COUNT,
                "BLOCK",
                BLOCK_MS,
                "STREAMS",
                *[events_key(q) for q in names],
                *[positions[q] for q in names],
            )
            if not reply:
                continue
            before = dict(positions)
            for key, entries in reply:
                queue = _queue_of_key(key.decode())
                positions[queue] = entries[-1][0].decode()
            behind = await self._trimmed_past(
                {q: before[q] for q in positions if positions[q] != before[q]}
            )
            for q, at in behind:
                yield Missed(
                    FELL_BEHIND,
                    encode_token(before),
                    f"this stream read queue {q!r} too slowly: events after {at} were "
                    "dropped (each queue's stream keeps about its last 20,000); going on "
                    "with the oldest kept",
                )
            cursor = dict(before)
            for key, entries in reply:
                queue = _queue_of_key(key.decode())
                for entry_id, fields in entries:
                    cursor[queue] = entry_id.decode()
                    ev = _event(queue, fields, encode_token(cursor))
                    if flt.match(ev):
                        yield ev

    async def _pause(self) -> None:
        await asyncio.sleep(QUEUES_EVERY)
