"""Keepalive on the Work stream: a worker behind a connection that died without a word (a
partition, a lost NAT entry) notices and reconnects, and the server drops its stream and
gives its jobs back — neither side waits forever on a half-open connection."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd_client import AsyncClient, JobState, ReceivedJob, Worker
from tests.polling import eventually

from .partition import PartitionProxy


@pytest.fixture
def server_config(server_config: Config) -> Config:
    return replace(server_config, keepalive_time=1.0)


async def test_a_partitioned_worker_notices_and_the_server_gives_its_job_back(
    server: DispatchdServer, client: AsyncClient
) -> None:
    proxy = PartitionProxy("127.0.0.1", server.port)
    via = await proxy.start()
    started = asyncio.Event()
    worker = Worker(via, keepalive=1.0, keepalive_timeout=1.0, reconnect_max_backoff=0.2)

    @worker.handler("cut")
    async def hold(job: ReceivedJob) -> bytes:
        started.set()
        await asyncio.Event().wait()  # runs until the worker is stopped
        return b""

    run = asyncio.create_task(worker.run_async())
    try:
        await worker.wait_connected(10)
        job = await client.submit("cut", b"x")
        await asyncio.wait_for(started.wait(), 10)
        proxy.partition()

        async def noticed() -> bool:
            queue = await client.get_queue("cut")
            back = await client.get(job.id)
            return (
                not worker.connected
                and queue.worker_count == 0
                and (back.state is JobState.PENDING)
            )

        # Both sides give the dead connection up within keepalive + timeout (+ slack).
        await eventually(noticed, within=15, what="both sides to notice the dead connection")
    finally:
        await worker.stop(force=True)
        await asyncio.gather(run, return_exceptions=True)
        await proxy.close()
