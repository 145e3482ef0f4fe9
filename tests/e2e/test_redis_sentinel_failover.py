"""Sentinel for real: one primary and one replica (append-only files fsync'd on every
write) watched by three redis-sentinel processes, two dispatchd processes on
redis+sentinel://, producers and workers running: the primary is killed with SIGKILL, the
Sentinels promote the replica, and both dispatchd replicas follow. Every job the
producers saw acknowledged runs to success (but the primary's last moment before the
kill, Redis' asynchronous-replication window: failover_load.py), no queue ever runs more
than its width at once, and producers see UNAVAILABLE only around the fail-over."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..redisproc import RedisSentinelSetup
from . import failover_load
from .conftest import ServerProcess

QUEUES = ["s0", "s1", "s2"]


@pytest.mark.timeout(120)
async def test_the_primary_killed_mid_load_the_replicas_follow_the_sentinels(
    tmp_path: Path, start_server: type[ServerProcess]
) -> None:
    setup = RedisSentinelSetup(tmp_path / "sentinel")
    try:
        await failover_load.run(
            tmp_path,
            start_server,
            setup.url,
            QUEUES,
            kill=setup.kill_primary,
            recovered=setup.wait_failover,
            at_risk=set(QUEUES),
        )
    finally:
        setup.stop()
