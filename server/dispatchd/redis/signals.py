"""Redis pub/sub for one replica. The scripts publish on a queue's event channel
("{dq:<queue>}:ev") when work may be claimable ("w") and when an underway job was
cancelled ("c:<id>"), and on its finish channel ("{dq:<queue>}:fin") the ids of jobs that
finished ("f:<ids>"). A replica subscribes to the event channels of the queues its workers
serve and to the finish channels its WaitJob callers watch (Redis sends nothing for a
channel nobody listens to); nothing polls Redis in a tight loop. On a Redis Cluster the
queue channels are sharded, one subscribed connection per primary (redis/sharding.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster

from dispatchd.redis import records
from dispatchd.redis.sharding import ShardedPubSub
from dispatchd.redis.store import UNREACHABLE

log = logging.getLogger("dispatchd.redis")

#: update.lua publishes a queue's name here when the queue is created or one of its
#: settings changes, so every replica notices a lease_duration or http_target change made
#: through another one. Not a queue's key: no hash tag.
QUEUE_SETTINGS = "dq:qs"

#: How long one read of the subscription blocks; new channels join between reads.
READ_SECONDS = 0.25
RECONNECT_SECONDS = 1.0
STOP_SECONDS = 2.0


def events(queue: str) -> str:
    return records.base(queue) + ":ev"


def finishes(queue: str) -> str:
    return records.base(queue) + ":fin"


def queue_of_channel(name: str) -> str:
    return name[len("{dq:") : name.rindex("}:")]


class Signals:
    """Holds the subscription; calls ``on_wake(queue)``, ``on_cancel(job_id)``,
    ``on_expired([(job_id, lease_id)])``, ``on_finished(job_ids)`` and
    ``on_settings(queue)`` for what arrives, and ``on_resubscribed()`` after a reconnect
    (messages may have been missed meanwhile)."""

    def __init__(
        self,
        client: Redis,
        on_wake: Callable[[str], None],
        on_cancel: Callable[[str], None],
        on_expired: Callable[[list[tuple[str, str]]], None],
        on_finished: Callable[[list[str]], None],
        on_resubscribed: Callable[[], None],
        on_settings: Callable[[str], None] | None = None,
    ) -> None:
        self._client = client
        self._on_wake = on_wake
        self._on_cancel = on_cancel
        self._on_expired = on_expired
        self._on_finished = on_finished
        self._on_resubscribed = on_resubscribed
        self._on_settings = on_settings
        # The settings channel is always listened to (when someone wants its news).
        self._wanted: dict[str, int] = {QUEUE_SETTINGS: 1} if on_settings else {}
        self._task: asyncio.Task[None] | None = None
        self._cluster = isinstance(client, RedisCluster)
        self._pubsub: PubSub | ShardedPubSub | None = None
        self.subscribed: set[str] = set()
        self.changed = asyncio.Event()
        # This replica's own channel for barrier() markers (no queue's: no hash tag).
        self._marker_channel = f"dq:sync:{uuid.uuid4().hex[:16]}"
        self._markers: dict[str, asyncio.Future[None]] = {}

    async def watch(self, name: str) -> None:
        """Counted: every watch of a channel needs an unwatch. Returns once subscribed
        (when the subscription is up), so nothing published afterwards is missed: a
        cancel published right after a worker's first delivery must reach this replica."""
        self._wanted[name] = self._wanted.get(name, 0) + 1
        pubsub = self._pubsub
        if pubsub is not None and name not in self.subscribed:
            with contextlib.suppress(*UNREACHABLE):  # the loop resubscribes after reconnecting
                await pubsub.subscribe(name)
                self.subscribed.add(name)

    def unwatch(self, name: str) -> None:
        n = self._wanted.get(name, 0) - 1
        if n <= 0:
            self._wanted.pop(name, None)
        else:
            self._wanted[name] = n

    async def barrier(self, within: float = 5.0) -> None:
        """Returns once every message published before this call, on the channels this
        replica listens to, has been handled. Redis hands one subscriber its messages in
        the order they were published, so when a marker published now comes back, every
        earlier message came first (Backend.settle: a reaper's expiries have freed their
        workers' credits, a submit's wake-up has been heard)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        token = uuid.uuid4().hex
        marker: asyncio.Future[None] = loop.create_future()
        self._markers[token] = marker
        try:
            if self._cluster:
                await self._sharded_barrier(deadline)
                return
            if self._marker_channel not in self._wanted:
                await self.watch(self._marker_channel)  # kept: settle() runs again
            await self._mark(self._marker_channel, token, "PUBLISH", deadline)
            await asyncio.wait_for(marker, max(0.0, deadline - loop.time()))
        finally:
            self._markers.pop(token, None)

    async def _mark(self, channel: str, token: str, command: str, deadline: float) -> None:
        """Publishes ``token`` on ``channel`` until someone (this replica) receives it."""
        loop = asyncio.get_running_loop()
        # No receiver yet: the subscription is not up (or is coming back); try again.
        while not await self._client.execute_command(command, channel, token):  # type: ignore[no-untyped-call]
            if loop.time() > deadline:
                raise TimeoutError("no pub/sub subscription in time")
            await asyncio.sleep(0.01)

    async def _sharded_barrier(self, deadline: float) -> None:
        """On a Cluster each primary delivers its own messages in order, on its own
        connection: one marker per primary this replica listens to, each on a shard
        channel of a slot of that primary, all back before the barrier holds. (A
        broadcast message, the settings channel's, comes over the cluster bus and has no
        order with these: it is heard soon, not before a barrier.)"""
        loop = asyncio.get_running_loop()
        while not isinstance(self._pubsub, ShardedPubSub) or QUEUE_SETTINGS not in self.subscribed:
            if loop.time() > deadline:
                raise TimeoutError("no pub/sub subscription in time")
            await asyncio.sleep(0.01)  # the loop is (re)connecting
        pubsub = self._pubsub
        waits = []
        for node in sorted(pubsub.nodes()):
            channel = await pubsub.marker_channel(self._marker_channel, node)
            if channel not in self._wanted:
                await self.watch(channel)  # kept, as the broadcast marker is
            token = uuid.uuid4().hex
            self._markers[token] = loop.create_future()
            waits.append(token)
            await self._mark(channel, token, "SPUBLISH", deadline)
        try:
            for token in waits:
                await asyncio.wait_for(self._markers[token], max(0.0, deadline - loop.time()))
        finally:
            for token in waits:
                self._markers.pop(token, None)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="redis-signals")

    async def stop(self) -> None:
        """Bounded: a pub/sub connection stuck mid-close must not hold up a shutdown."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=STOP_SECONDS)

    async def _run(self) -> None:
        while True:
            pubsub: PubSub | ShardedPubSub
            if self._cluster:
                pubsub = ShardedPubSub(
                    self._client,  # type: ignore[arg-type]
                    frozenset({QUEUE_SETTINGS}),
                )
            else:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            self.subscribed = set()
            self._pubsub = pubsub
            try:
                await self._serve(pubsub)
            except UNREACHABLE as e:
                log.warning("redis pub/sub lost (%s); resubscribing in %.0f s", e, 1.0)
                await asyncio.sleep(RECONNECT_SECONDS)
            except rx.RedisError as e:  # a refusal mid fail-over (CLUSTERDOWN, ...): the same
                log.warning("redis pub/sub failed (%s); resubscribing in %.0f s", e, 1.0)
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                self._pubsub = None
                with contextlib.suppress(*UNREACHABLE, TimeoutError):
                    await asyncio.wait_for(pubsub.aclose(), STOP_SECONDS)

    async def _serve(self, pubsub: PubSub | ShardedPubSub) -> None:
        first = True
        while True:
            await self._sync(pubsub)
            if first:
                first = False
                self._on_resubscribed()
            if not self.subscribed:
                await asyncio.sleep(READ_SECONDS)  # nothing to read yet
                continue
            msg = await pubsub.get_message(timeout=READ_SECONDS)
            while msg is not None:
                self._dispatch(msg)
                msg = await pubsub.get_message(timeout=0)

    async def _sync(self, pubsub: PubSub | ShardedPubSub) -> None:
        wanted = set(self._wanted)
        new = wanted - self.subscribed
        gone = self.subscribed - wanted
        if new:
            await pubsub.subscribe(*sorted(new))
        if gone:
            await pubsub.unsubscribe(*sorted(gone))
        self.subscribed = wanted
        for name in new:
            if name.endswith(":ev"):
                self._on_wake(queue_of_channel(name))  # anything published before we listened
        if new or gone:
            self.changed.set()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("type") not in ("message", "smessage"):
            return
        channel = msg["channel"].decode()
        if self._marker_channel in channel:  # the broadcast marker or a shard's
            marker = self._markers.get(msg["data"].decode())
            if marker is not None and not marker.done():
                marker.set_result(None)
            return
        if channel == QUEUE_SETTINGS:
            if self._on_settings is not None:
                self._on_settings(msg["data"].decode())
            return
        queue = queue_of_channel(channel)
        for part in msg["data"].decode().split(" "):
            if part == "w":
                self._on_wake(queue)
            elif part.startswith("c:"):
                self._on_cancel(part[2:])
            elif part.startswith("x:"):
                pairs = (item.partition("/") for item in part[2:].split(","))
                self._on_expired([(job_id, lease_id) for job_id, _, lease_id in pairs])
            elif part.startswith("f:"):
                self._on_finished(part[2:].split(","))
