"""Pub/sub on a Redis Cluster, for redis/signals.py.

The scripts publish a queue's events with SPUBLISH on channels that carry the queue's hash
tag (scripts.sharded), so a message goes to the subscribers of that slot's primary only
instead of to every node over the cluster bus: the pub/sub cost of a shard grows with the
queues on it, not with the size of the fleet. A replica therefore holds one subscribed
connection per primary that owns a slot of a channel it listens to, and SSUBSCRIBEs each
channel on its primary's. The settings channel (signals.QUEUE_SETTINGS, published with a
plain PUBLISH, which a Cluster broadcasts) is a plain SUBSCRIBE on one of them.

``ShardedPubSub`` offers what Signals uses of redis-py's PubSub (subscribe, unsubscribe,
get_message, aclose). Each connection has a reader task feeding one inbox; when any of
them fails (a primary died, a slot moved) the next get_message raises it, and Signals
builds a new ShardedPubSub from a fresh slot map and subscribes everything again, as after
a lost connection on a single Redis."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import ConnectionPool

from dispatchd.redis.store import UNREACHABLE

#: How long one reader's read blocks before it looks again (it is cancelled on close).
READ_SECONDS = 1.0


class ShardedPubSub:
    def __init__(self, cluster: RedisCluster, broadcast: frozenset[str]) -> None:
        self._cluster = cluster
        #: Plain (broadcast) channels; every other channel is a shard channel.
        self._broadcast = broadcast
        self._pools: list[ConnectionPool] = []
        self._subs: dict[str, PubSub] = {}  # node name -> its subscribed connection
        self._where: dict[str, str] = {}  # channel -> node name
        self._readers: list[asyncio.Task[None]] = []
        self._inbox: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        self._fresh = False

    async def _map(self) -> None:
        """A slot map read now, once per ShardedPubSub: after a fail-over the old one
        names a dead primary."""
        if not self._fresh:
            try:
                await self._cluster.initialize()
                await self._cluster.nodes_manager.initialize()
            except rx.RedisError as e:  # e.g. no startup node reachable: Signals retries
                raise ConnectionError(f"no slot map from the cluster ({e})") from e
            except rx.RedisClusterException as e:
                raise ConnectionError(f"no slot map from the cluster ({e})") from e
            self._fresh = True

    def node_of(self, channel: str) -> ClusterNode:
        node = self._cluster.get_node_from_key(channel)
        if node is None:  # pragma: no cover - redis-py raises SlotNotCoveredError first
            raise ConnectionError(f"no node serves {channel!r}")
        return node

    def _sub(self, node: ClusterNode) -> PubSub:
        sub = self._subs.get(node.name)
        if sub is None:
            # No health-check PINGs on a subscribed connection: one that a subscribe call
            # sends reads its own answer, and can take a message the reader was owed
            # (seen: a barrier's marker lost). The reader's reads notice a dead connection.
            kwargs = {**node.connection_kwargs, "health_check_interval": 0}
            pool = ConnectionPool(connection_class=node.connection_class, **kwargs)
            self._pools.append(pool)
            sub = Redis(connection_pool=pool).pubsub(ignore_subscribe_messages=True)
            self._subs[node.name] = sub
        return sub

    async def subscribe(self, *channels: str) -> None:
        await self._map()
        for channel in channels:
            if channel in self._broadcast:
                node = self.node_of(channel)  # any node hears a broadcast: a fixed one
                sub = self._sub(node)
                await sub.subscribe(channel)
            else:
                node = self.node_of(channel)
                sub = self._sub(node)
                await sub.ssubscribe(channel)
            self._where[channel] = node.name
            self._read(node.name, sub)

    async def unsubscribe(self, *channels: str) -> None:
        for channel in channels:
            name = self._where.pop(channel, None)
            sub = self._subs.get(name or "")
            if sub is None:
                continue
            if channel in self._broadcast:
                await sub.unsubscribe(channel)
            else:
                await sub.sunsubscribe(channel)

    def nodes(self) -> set[str]:
        """The primaries this replica listens on."""
        return set(self._where.values())

    async def marker_channel(self, prefix: str, node_name: str) -> str:
        """A shard channel named ``{<prefix>:<k>}`` whose slot ``node_name`` serves: a
        barrier's marker comes back on the same connection as that node's messages."""
        await self._map()
        for k in range(10_000):
            channel = "{" + f"{prefix}:{k}" + "}"
            if self.node_of(channel).name == node_name:
                return channel
        raise ConnectionError(f"no slot of node {node_name} found")  # pragma: no cover

    def _read(self, name: str, sub: PubSub) -> None:
        if any(t.get_name() == name and not t.done() for t in self._readers):
            return
        task = asyncio.get_running_loop().create_task(self._reader(sub), name=name)
        self._readers.append(task)

    async def _reader(self, sub: PubSub) -> None:
        try:
            while True:
                msg = await sub.get_message(timeout=READ_SECONDS)
                if msg is not None:
                    self._inbox.put_nowait(msg)
        except UNREACHABLE as e:
            self._inbox.put_nowait(e)
        except Exception as e:  # noqa: BLE001 - any failure: Signals subscribes anew
            self._inbox.put_nowait(ConnectionError(f"pub/sub reader failed: {e!r}"))

    async def get_message(self, timeout: float = 0.0) -> dict[str, Any] | None:  # noqa: ASYNC109 (PubSub's)
        try:
            if timeout <= 0:
                item = self._inbox.get_nowait()
            else:
                item = await asyncio.wait_for(self._inbox.get(), timeout)
        except (asyncio.QueueEmpty, TimeoutError):
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    async def aclose(self) -> None:
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        for sub in self._subs.values():
            with contextlib.suppress(*UNREACHABLE):
                await sub.aclose()  # type: ignore[no-untyped-call]
        for pool in self._pools:  # a pool passed to a client is not closed with it
            with contextlib.suppress(*UNREACHABLE):
                await pool.disconnect()
