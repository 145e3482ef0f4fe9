"""Which worker streams every replica holds, and what its workers ran, for the dashboard's
fleet-wide workers page and overview chart.

Each replica keeps a hash ``dq:rw:<replica id>`` (worker key -> a JSON summary) and its
id in the sorted set ``dq:replicas`` scored by when its entry expires; it rewrites both
on every reaper pass, so a replica that died drops out within WORKER_TTL. It also writes
its cumulative JobCounts to the hash ``dq:rc:<replica id>`` about once a second
(COUNTS_SECONDS), with a TTL of a few seconds (COUNTS_TTL): a replica that stopped stops
counting for the fleet within that. Each command touches one key, so this works on a
Redis Cluster too; no command is sent per job."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence

from dispatchd.backend import JobCounts, ReplicaCounts, WorkerInfo
from dispatchd.redis.store import UNREACHABLE, RedisStore

REPLICAS_KEY = "dq:replicas"
#: Which replica's /metrics exports the per-queue gauges (pending, width, ...): one does,
#: so that Prometheus' sum over the replicas is the fleet's figure, as for counters.
GAUGES_KEY = "dq:gauges"
_CLAIM_GAUGES = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
_RELEASE_GAUGES = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""
#: A replica's entries live this long unless its reaper refreshes them.
ENTRY_TTL = 30.0
#: How often a replica publishes its JobCounts, and how long they outlive its last write.
COUNTS_SECONDS = 1.0
COUNTS_TTL = 5.0
_COUNT_FIELDS = ("d", "s", "f")


def workers_key(replica_id: str) -> str:
    return "dq:rw:" + replica_id


def counts_key(replica_id: str) -> str:
    return "dq:rc:" + replica_id


def decode_counts(raw: Sequence[bytes | None]) -> JobCounts | None:
    """HMGET's answer for the three fields; None when the entry expired (or is not ours)."""
    try:
        if any(v is None for v in raw):
            return None
        return JobCounts(*(int(v) for v in raw if v is not None))
    except (ValueError, TypeError):
        return None


def encode(info: WorkerInfo) -> str:
    return json.dumps(
        {
            "id": info.worker_id,
            "q": list(info.queues),
            "n": info.max_in_flight,
            "h": info.held,
            "hj": list(info.held_jobs),
            "l": info.labels,
            "t": info.connect_time,
            "k": info.kind,
            "d": info.draining,
        },
        separators=(",", ":"),
    )


def decode(raw: bytes, replica: str) -> WorkerInfo | None:
    try:
        d = json.loads(raw)
        return WorkerInfo(
            worker_id=str(d["id"]),
            queues=tuple(str(q) for q in d["q"]),
            max_in_flight=int(d["n"]),
            held=int(d["h"]),
            held_jobs=tuple(str(j) for j in d["hj"]),
            labels={str(k): str(v) for k, v in d["l"].items()},
            connect_time=float(d["t"]),
            kind=str(d["k"]),
            replica=replica,
            draining=bool(d.get("d", False)),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # written by another version: not shown rather than failing the page


class Fleet:
    """Reads and writes the replicas' worker entries."""

    def __init__(self, store: RedisStore, replica_id: str) -> None:
        self._store = store
        self._replica = replica_id
        self._claim = store.client.register_script(_CLAIM_GAUGES)
        self._release = store.client.register_script(_RELEASE_GAUGES)
        self.exports_gauges = False
        """Whether this replica exports the per-queue gauges (until its claim lapses)."""

    async def claim_gauges(self, ttl: float) -> bool:
        """Takes or keeps the gauge export for ``ttl`` seconds; the first replica to ask
        after the holder stopped renewing gets it."""
        try:
            held = await self._claim(keys=[GAUGES_KEY], args=[self._replica, int(ttl * 1000)])
        except UNREACHABLE:
            held = 0
        self.exports_gauges = bool(held)
        return self.exports_gauges

    async def publish(self, workers: Sequence[tuple[int, WorkerInfo]], now: float) -> None:
        """Replaces this replica's entries with ``workers`` (worker key, summary)."""
        key = workers_key(self._replica)
        pipe = self._store.client.pipeline(transaction=False)
        pipe.delete(key)
        if workers:
            pipe.hset(key, mapping={str(k): encode(info) for k, info in workers})
            pipe.expire(key, int(ENTRY_TTL * 2))
        pipe.zadd(REPLICAS_KEY, {self._replica: now + ENTRY_TTL})
        pipe.zremrangebyscore(REPLICAS_KEY, "-inf", now)
        await self._store.send(pipe)

    async def put(self, key: int, info: WorkerInfo) -> None:
        await self._store.call("HSET", workers_key(self._replica), str(key), encode(info))

    async def remove(self, key: int) -> None:
        await self._store.call("HDEL", workers_key(self._replica), str(key))

    async def publish_counts(self, counts: JobCounts) -> None:
        """This replica's cumulative JobCounts, for the other replicas' overview charts."""
        key = counts_key(self._replica)
        pipe = self._store.client.pipeline(transaction=False)
        pipe.hset(key, mapping=dict(zip(_COUNT_FIELDS, counts, strict=True)))
        pipe.pexpire(key, int(COUNTS_TTL * 1000))
        await self._store.send(pipe)

    async def other_counts(self, now: float) -> list[ReplicaCounts]:
        """The JobCounts of every other live replica (those whose entry has not expired)."""
        raw = await self._store.call("ZRANGEBYSCORE", REPLICAS_KEY, now, "+inf")
        replicas = [m.decode() for m in raw if m.decode() != self._replica]
        if not replicas:
            return []
        pipe = self._store.client.pipeline(transaction=False)
        for replica in replicas:
            pipe.hmget(counts_key(replica), list(_COUNT_FIELDS))
        answers = await self._store.send(pipe)
        out = []
        for replica, answer in zip(replicas, answers, strict=True):
            counts = decode_counts(answer)
            if counts is not None:
                out.append(ReplicaCounts(replica, counts))
        return out

    async def withdraw(self) -> None:
        """This replica stops: its entries go at once, and the gauge export if it had it."""
        await self._store.call("DEL", workers_key(self._replica))
        await self._store.call("DEL", counts_key(self._replica))
        await self._store.call("ZREM", REPLICAS_KEY, self._replica)
        if self.exports_gauges:
            self.exports_gauges = False
            with contextlib.suppress(*UNREACHABLE):
                await self._release(keys=[GAUGES_KEY], args=[self._replica])

    async def others(self, now: float) -> list[WorkerInfo]:
        """The workers of every other live replica."""
        raw = await self._store.call("ZRANGEBYSCORE", REPLICAS_KEY, now, "+inf")
        out: list[WorkerInfo] = []
        for member in raw:
            replica = member.decode()
            if replica == self._replica:
                continue
            entries = await self._store.call("HGETALL", workers_key(replica))
            values = list(entries.values()) if isinstance(entries, dict) else entries[1::2]
            for value in values:
                info = decode(value, replica)
                if info is not None:
                    out.append(info)
        return out
