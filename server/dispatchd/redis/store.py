"""The connection every Redis-backed operation goes through: scripts, and one place that
turns Redis being unreachable into UNAVAILABLE."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Sequence
from time import perf_counter
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from dispatchd.backend import HealthReport
from dispatchd.engine import EngineLimits
from dispatchd.engine import limits as lim
from dispatchd.engine.errors import EngineError, Internal, Reason, Unavailable
from dispatchd.observability.metrics import StorageStats
from dispatchd.redis import records
from dispatchd.redis.reaping import ReapIndex
from dispatchd.redis.scripts import Scripts

log = logging.getLogger("dispatchd.redis")

#: One script to run: its name, keys and arguments (after the retention and the clock).
ScriptCall = tuple[str, list[str], list[Any]]

#: Scripts whose second run after a first that may have happened changes nothing more: a
#: result is fenced (a repeat is refused as stale), a heartbeat or a release repeats, reads
#: and settings are the same twice, a Cluster firing's steps are keyed by the firing's token
#: or version-checked (redis/schedules.py). Not submit, claim, cancel, retry or purge.
REPEATABLE = frozenset(
    {
        "result",
        "heartbeat",
        "release",
        "reap",
        "view",
        "figures",
        "list",
        "update",
        "slot",
        "reprioritize",
        "fire_jobs",
        "fire_record",
    }
)

QUEUES_KEY = "dq:queues"
"""Every queue name, for ListQueues and the reaper (a registry, not on a queue's slot:
on a Redis Cluster it lives on the slot of its own name, and only single-key commands
touch it)."""

#: The ``script`` label of plain commands and pipelines (fleet entries, counts).
COMMANDS = "_commands"
#: Errors that mean Redis could not be asked, or did not answer in time. On a Cluster
#: also: the client's retries ran out (a primary died and no replica took over yet), or
#: a slot has no node right now.
UNREACHABLE = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.BusyLoadingError,
    OSError,
    rx.ClusterError,
    rx.SlotNotCoveredError,
)
#: Refusals redis-py raises as their own types (the code word taken off the message).
_REFUSAL_TYPES = (rx.ReadOnlyError, rx.ClusterDownError, rx.TryAgainError, rx.OutOfMemoryError)
#: Replies of a Redis that is there but cannot take writes now (out of memory, a replica
#: during fail-over, no master): UNAVAILABLE too, with Redis' own words.
_REFUSALS = (
    "OOM",
    "READONLY",
    "MASTERDOWN",
    "NOREPLICAS",
    "LOADING",
    "BUSY",
    "CLUSTERDOWN",
    "TRYAGAIN",
)


def _refused(e: rx.ResponseError) -> Unavailable | None:
    text = str(e)
    if isinstance(e, _REFUSAL_TYPES) or text.startswith(_REFUSALS):
        return Unavailable(
            f"redis refused the change ({text}); retry", reason=Reason.BACKEND_UNAVAILABLE
        )
    return None


def _unreachable(e: Exception) -> Unavailable:
    return Unavailable(f"redis is unreachable ({e}); retry", reason=Reason.BACKEND_UNAVAILABLE)


class RedisStore:
    """One Redis client, the scripts registered on it, and the engine limits.

    ``clock`` is for tests: when set, every script takes its time from it instead of from
    Redis' TIME, as the embedded engine takes ``now`` from its caller."""

    def __init__(
        self,
        client: Redis,
        limits: EngineLimits,
        retention: float,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.client = client
        self.limits = limits
        self.retention = retention
        self.rng = rng or random.SystemRandom()
        self.clock = clock
        #: A Redis Cluster: queue channels are sharded, a submit is split per slot, the
        #: queue registry is not in a delete's script (redis/connect.py).
        self.cluster = isinstance(client, RedisCluster)
        self._scripts = Scripts.register(client, self.cluster)
        self._known_queues: set[str] = set()
        #: Script call seconds and failures for /metrics (dispatchd_redis_*).
        self.stats = StorageStats()
        #: Redis unreachable is trouble until a call gets through again (readiness).
        self.health = HealthReport()
        #: Which queues a reaper pass looks at (redis/reaping.py).
        self.reap_index = ReapIndex(
            self.call, self.send, lambda: client.pipeline(transaction=False), QUEUES_KEY
        )

    def _away(self, e: Exception) -> None:
        self.health.set(f"redis is unreachable ({e})")

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._run_once(name, keys, args)
        except Unavailable:
            if name not in REPEATABLE:
                raise
            # Once more, on a fresh connection (the failed one was dropped): a connection
            # that died with a restarted Redis must not cost a worker its result.
            return await self._run_once(name, keys, args)

    async def _run_once(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Runs one script; Redis down or slow is UNAVAILABLE (the change may or may not
        have happened: the message says so, like a journal write that failed). Every
        script's first two arguments are the retention and the test clock ('': TIME)."""
        now = "" if self.clock is None else repr(self.clock())
        stats = self.stats
        start = perf_counter()
        try:
            reply = await self._scripts.run(name, keys, [self.retention, now, *args])
        except UNREACHABLE as e:
            stats.call_failed(name, "unreachable")
            self._away(e)
            raise Unavailable(
                f"redis is unreachable ({e}); retry (with an idempotency key for submits)",
                reason=Reason.BACKEND_UNAVAILABLE,
            ) from None
        except rx.ResponseError as e:
            raise self._script_error(name, keys, e) from None
        stats.call(name, perf_counter() - start)
        self.health.set(None)
        return reply

    def _script_error(self, name: str, keys: list[str], e: rx.ResponseError) -> EngineError:
        refusal = _refused(e)
        if refusal is not None:
            self.stats.call_failed(name, "refused")
            return refusal
        self.stats.call_failed(name, "script")
        where = keys[0] if keys else "no key"
        log.error("redis script %s failed on %s: %s", name, where, e)
        return Internal(
            f"the server's {name} script failed on {where} ({e}); other queues are not affected",
            metadata={"script": name},
        )

    async def run_pipelined(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Runs scripts in one round trip (one pipeline, no transaction: each script is
        atomic on its own, in order). Each answer is the script's reply or the EngineError
        it failed with; Redis away fails them all (raised). A script Redis does not have
        loaded yet (first use, a restarted Redis) did nothing: it is sent again on its
        own, which loads it."""
        now = "" if self.clock is None else repr(self.clock())
        pipe = self.client.pipeline(transaction=False)
        for name, keys, args in calls:
            sha = self._scripts.by_name[name].sha
            pipe.evalsha(sha, len(keys), *keys, self.retention, now, *args)
        start = perf_counter()
        try:
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        except UNREACHABLE as e:
            for name, _, _ in calls:
                self.stats.call_failed(name, "unreachable")
            self._away(e)
            raise _unreachable(e) from None
        self.health.set(None)
        spent = (perf_counter() - start) / len(calls)
        out: list[Any] = []
        for (name, keys, args), reply in zip(calls, replies, strict=True):
            if isinstance(reply, rx.NoScriptError):  # it did nothing: on its own, loaded
                out.append(await self._answer(name, keys, args))
            elif isinstance(reply, rx.ResponseError):
                out.append(self._script_error(name, keys, reply))
            else:
                self.stats.call(name, spent)
                out.append(reply)
        return out

    async def _answer(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """run(), with an EngineError returned instead of raised (run_pipelined's form)."""
        try:
            return await self.run(name, keys, args)
        except EngineError as e:
            return e

    async def call(self, *command: Any) -> Any:
        try:
            reply = await self.client.execute_command(*command)  # type: ignore[no-untyped-call]
        except UNREACHABLE as e:
            self.stats.call_failed(COMMANDS, "unreachable")
            self._away(e)
            raise _unreachable(e) from None
        self.health.set(None)
        return reply

    async def send(self, pipe: Any) -> list[Any]:
        """Executes a pipeline (no transaction); Redis down is UNAVAILABLE."""
        try:
            replies: list[Any] = await pipe.execute()
        except UNREACHABLE as e:
            self.stats.call_failed(COMMANDS, "unreachable")
            self._away(e)
            raise _unreachable(e) from None
        self.health.set(None)
        return replies

    async def note_queues(self, names: set[str], created: set[str] | None = None) -> None:
        """Adds queues to the registry once per replica (SADD is idempotent); ``created``
        (the ones a script just made) are added whatever this replica remembers, since
        another replica may have deleted the queue meanwhile."""
        new = (names - self._known_queues) | (created or set())
        if new:
            await self.call("SADD", QUEUES_KEY, *sorted(new))
            self._known_queues |= new

    def forget_queue(self, name: str) -> None:
        """The queue was deleted (here or on another replica)."""
        self._known_queues.discard(name)

    async def queue_names(self) -> list[str]:
        """Every registered queue; queues this replica knows but the registry lost (Redis
        restarted empty and the queue was created again) are registered again, if they
        still exist (a deleted queue is not brought back)."""
        names = {n.decode() for n in await self.call("SMEMBERS", QUEUES_KEY)}
        lost = sorted(self._known_queues - names)
        if lost:
            self._known_queues -= set(lost)
            pipe = self.client.pipeline(transaction=False)
            for name in lost:
                pipe.exists(records.cfg_key(name))
            alive = {name for name, n in zip(lost, await self.send(pipe), strict=True) if n}
            await self.note_queues(alive)
            names |= alive
        return sorted(names)

    async def check_new_queues(self, names: Iterable[str]) -> None:
        """Refuses (TOO_MANY_QUEUES) before the script that would create them when making
        the queues of ``names`` that do not exist would pass --max-queues. The count is the
        registry's at that moment: replicas creating queues at the same instant may pass
        the bound by the queues they create together."""
        bound = self.limits.max_queues
        unknown = sorted(set(names) - self._known_queues)
        if not bound or not unknown:
            return
        pipe = self.client.pipeline(transaction=False)
        for name in unknown:
            pipe.exists(records.cfg_key(name))
        pipe.scard(QUEUES_KEY)
        *exist, count = await self.send(pipe)
        new = sum(1 for n in exist if not n)
        lim.check_server_bounds(self.limits, int(count), new, 0, 0)

    async def ping(self) -> None:
        await self.call("PING")

    async def close(self) -> None:
        await self.client.aclose()
