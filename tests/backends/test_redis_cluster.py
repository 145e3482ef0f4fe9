"""What is particular to a Redis Cluster (the shared suite runs on one too, as backend
'redis-cluster'): queues spread over the primaries, every queue-channel publish is
sharded, the URL forms."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from statistics import mean

import pytest
import redis

from dispatchd.engine import EngineLimits, NewJob
from dispatchd.redis import connect
from dispatchd.redis.errors import RedisUrlError
from dispatchd.redis.scripts import SHARDED_SOURCES, SOURCES
from dispatchd_client import AsyncClient, Overlap, ScheduleSpec
from dispatchd_client import NewJob as ClientJob
from tests.conformance.harness import FakeClock, open_redis
from tests.inproc import base_config
from tests.polling import eventually
from tests.redisproc import RedisClusterProcess

from .conftest import start_server

QUEUES = 300
JOBS_PER_QUEUE = 10


async def test_jobs_of_many_queues_spread_within_20_percent_over_the_primaries(
    redis_cluster_process: RedisClusterProcess, redis_cluster_url: str
) -> None:
    """The fleet model's per-shard share: a queue lives on one slot, and queues spread
    over the slots (their hash tags), so many queues' jobs spread evenly."""
    backend = await open_redis(redis_cluster_url, EngineLimits(), FakeClock())
    try:
        for start in range(0, QUEUES, 50):
            batch = [
                NewJob(f"tenant-{q}")
                for q in range(start, start + 50)
                for _ in range(JOBS_PER_QUEUE)
            ]
            await backend.submit(batch)
    finally:
        await backend.close()
    per_primary = {}
    for port in redis_cluster_process.primaries():
        client = redis.Redis(host="127.0.0.1", port=port)
        try:
            per_primary[port] = sum(1 for _ in client.scan_iter(match="{dq:tenant-*}:j:*"))
        finally:
            client.close()
    assert sum(per_primary.values()) == QUEUES * JOBS_PER_QUEUE
    average = mean(per_primary.values())
    assert len(per_primary) == 3
    for jobs in per_primary.values():
        assert abs(jobs - average) <= 0.2 * average, per_primary


def test_every_queue_channel_publish_is_sharded_on_a_cluster() -> None:
    """A plain PUBLISH on a Cluster goes to every node over the cluster bus; the scripts'
    queue-channel publishes must be SPUBLISH there (scripts.sharded), and only the
    settings channel may stay a broadcast. A new publish written another way fails here."""
    for name, text in SHARDED_SOURCES.items():
        for line in re.findall(r".*redis\.call\('S?PUBLISH'.*", text):
            assert "SPUBLISH', b .. '" in line or "PUBLISH', 'dq:qs'" in line, (name, line)
        assert text.count("PUBLISH") == SOURCES[name].count("PUBLISH")


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://",
        "redis+cluster://host",
        "redis+cluster://h:1,h2/",
        "redis+cluster://h:1/3",
    ],
)
def test_a_bad_cluster_url_is_refused(url: str) -> None:
    with pytest.raises(RedisUrlError):
        connect.check_url(url)


def test_a_cluster_url_names_its_nodes() -> None:
    connect.check_url("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7001")
    connect.check_url("rediss+cluster://user:pw@node:7000/")
    assert connect.is_cluster("redis+cluster://a:1")
    assert not connect.is_cluster("redis://a:1")


async def test_a_schedule_fires_on_a_cluster_by_its_own_loop_and_is_deleted(
    tmp_path: Path, redis_cluster_url: str
) -> None:
    """A firing is two scripts there (the jobs on the queue's slot, then the record on the
    schedule's, whose keys share the tag {ds}); the replica's own loop fires each tick once."""
    config = replace(
        base_config(tmp_path), backend="redis", redis_url=redis_cluster_url, data_dir=None
    )
    server = await start_server(config)
    try:
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            await client.create_schedule(
                "nightly", ScheduleSpec.of(every=1), ClientJob("q"), overlap=Overlap.ALLOW
            )

            async def fired() -> bool:
                return (await client.get_schedule("nightly")).submitted_count >= 2

            await eventually(fired, within=10, what="two ticks fired on the cluster")
            assert [s.id async for s in client.list_schedules()] == ["nightly"]
            await client.pause_schedule("nightly")
            schedule = await client.get_schedule("nightly")
            jobs = [j async for j in client.list_jobs("q")]
            assert set(schedule.latest_job_ids) <= {j.id for j in jobs}
            assert len({j.idempotency_key for j in jobs}) == len(jobs) == schedule.submitted_count
            await client.delete_schedule("nightly")
            assert [s async for s in client.list_schedules()] == []
    finally:
        await server.stop_now()
