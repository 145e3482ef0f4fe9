"""A Worker outlives a server crash: it reconnects to the restarted server on its own."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from pathlib import Path

import grpc
import pytest

from dispatchd_client import Client, JobState, ReceivedJob, Worker
from dispatchd_client.worker import REFUSALS

from .conftest import ServerProcess


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_worker_reconnects_after_kill_9(
    tmp_path: Path, start_server: type[ServerProcess], backend_flags: tuple[str, ...]
) -> None:
    port = _free_port()
    listen = ("--listen", f"127.0.0.1:{port}", "--metrics-listen", "0", *backend_flags)
    first = start_server(tmp_path, *listen)
    target = first.wait_ready()
    loop = asyncio.new_event_loop()
    worker = Worker(target, concurrency=2, reconnect_max_backoff=0.2)

    @worker.handler("re")
    def echo(job: ReceivedJob) -> bytes:
        return job.payload

    thread = threading.Thread(
        target=loop.run_until_complete, args=(worker.run_async(),), daemon=True
    )
    thread.start()
    try:
        with Client(target) as client:
            before = client.submit("re", b"before")
            assert client.wait(before.id, timeout=10).state is JobState.SUCCEEDED
        first.proc.send_signal(signal.SIGKILL)
        first.wait()
        second = start_server(tmp_path, *listen)
        second.wait_ready()
        with Client(target) as client:
            after = client.submit("re", b"after")
            done = client.wait(after.id, timeout=20)
            assert (done.state, done.result) == (JobState.SUCCEEDED, b"after")
        assert thread.is_alive(), "the worker exited instead of reconnecting"
    finally:
        asyncio.run_coroutine_threadsafe(worker.stop(force=True), loop).result(10)
        thread.join(10)
        loop.close()


@pytest.mark.parametrize(
    ("code", "refused"),
    [
        (grpc.StatusCode.UNAVAILABLE, False),
        (grpc.StatusCode.INTERNAL, False),  # what grpc.aio reports after a crash at times
        (grpc.StatusCode.UNKNOWN, False),
        (grpc.StatusCode.INVALID_ARGUMENT, True),
        (grpc.StatusCode.FAILED_PRECONDITION, True),
        (grpc.StatusCode.PERMISSION_DENIED, True),
    ],
)
def test_only_refusals_stop_the_worker(code: grpc.StatusCode, refused: bool) -> None:
    assert (code in REFUSALS) is refused
