"""Client.wait() and AsyncClient.wait() outlive a server restart: a wait that finds the
server gone keeps asking, with backoff, until its own timeout (it gave up with
UNAVAILABLE after about 0.3 s before)."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from pathlib import Path

from dispatchd_client import AsyncClient, Client, Job, JobState, ReceivedJob, Worker

from .conftest import ServerProcess


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_wait_outlives_a_server_restart(
    tmp_path: Path, start_server: type[ServerProcess]
) -> None:
    port = _free_port()
    listen = ("--listen", f"127.0.0.1:{port}")
    first = start_server(tmp_path, *listen)
    target = first.wait_ready()
    with Client(target) as client:
        sync_job = client.submit("later", b"sync")
        async_job = client.submit("later", b"async")
    waited: dict[str, Job] = {}

    def wait_sync() -> None:
        with Client(target) as c:
            waited["sync"] = c.wait(sync_job.id, timeout=30)

    async def wait_async() -> None:
        async with AsyncClient(target) as c:
            waited["async"] = await c.wait(async_job.id, timeout=30)

    threads = [
        threading.Thread(target=wait_sync),
        threading.Thread(target=lambda: asyncio.run(wait_async())),
    ]
    for t in threads:
        t.start()
    first.proc.send_signal(signal.SIGKILL)  # the waits are under way: the server goes
    first.wait()
    second = start_server(tmp_path, *listen)  # the journal has both jobs
    second.wait_ready()
    loop = asyncio.new_event_loop()
    worker = Worker(target, concurrency=2, reconnect_max_backoff=0.2)

    @worker.handler("later")
    def echo(job: ReceivedJob) -> bytes:
        return job.payload

    runner = threading.Thread(target=loop.run_until_complete, args=(worker.run_async(),))
    runner.start()
    try:
        for t in threads:
            t.join(40)
        assert {k: (j.state, j.result) for k, j in waited.items()} == {
            "sync": (JobState.SUCCEEDED, b"sync"),
            "async": (JobState.SUCCEEDED, b"async"),
        }
    finally:
        asyncio.run_coroutine_threadsafe(worker.stop(force=True), loop).result(10)
        runner.join(10)
        loop.close()
        second.kill()
