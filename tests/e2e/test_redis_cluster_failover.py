"""A Redis Cluster of three primaries with a replica each (append-only files fsync'd on
every write), two dispatchd processes on it, producers and workers running: one primary's
process is killed with SIGKILL, its replica takes over, and the fleet goes on. Every job
the producers saw acknowledged runs to success (but the dead shard's last moment before
the kill, Redis' asynchronous-replication window: failover_load.py), no queue ever runs
more than its width at once, and producers see UNAVAILABLE only around the fail-over."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from ..redisproc import RedisClusterProcess
from . import failover_load
from .conftest import ServerProcess

QUEUES = [f"fo{i}" for i in range(6)]


def _slot_owner(cluster: RedisClusterProcess, queue: str) -> int:
    """The port of the primary that serves ``queue``'s slot now."""
    client = redis.RedisCluster(host="127.0.0.1", port=cluster.alive()[0])
    try:
        node = client.get_node_from_key("{dq:" + queue + "}:cfg")  # type: ignore[no-untyped-call]
        return int(node.port)
    finally:
        client.close()


@pytest.mark.timeout(120)
async def test_a_primary_killed_mid_load_loses_nothing_acknowledged_and_width_holds(
    tmp_path: Path, start_server: type[ServerProcess]
) -> None:
    cluster = RedisClusterProcess(tmp_path / "cluster", replicas=1, persist=True)
    try:
        victim = _slot_owner(cluster, QUEUES[0])
        await failover_load.run(
            tmp_path,
            start_server,
            cluster.url,
            QUEUES,
            kill=lambda: cluster.kill(victim),  # SIGKILL; its replica is promoted
            recovered=lambda: cluster.wait_failover(victim),
            at_risk={q for q in QUEUES if _slot_owner(cluster, q) == victim},
        )
    finally:
        cluster.stop()
