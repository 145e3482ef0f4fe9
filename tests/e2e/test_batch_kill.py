"""A batch's on_complete callback is submitted exactly once across a kill -9 of the embedded
server: killed while the batch's jobs run, and killed right as the last one completed the
batch (the callback's submission is journaled in the same commit as the transition that
completed the batch, so either both survive or neither does and the job runs again)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from dispatchd_client import Client, NewJob, ReceivedJob, Worker
from tests.polling import until

from .conftest import ServerProcess

JOBS = 20


class BatchWorker:
    """A Worker in its own thread serving queue "kq", a little slow per job."""

    def __init__(self, target: str) -> None:
        self._loop = asyncio.new_event_loop()
        self.worker = Worker(target, concurrency=2)

        @self.worker.handler("kq")
        def handle(job: ReceivedJob) -> bytes:
            time.sleep(0.02)
            return b"ok"

        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self.worker.run_async(),), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.worker.stop(force=True), self._loop).result(10)
        self._thread.join(10)
        self._loop.close()


def _round(tmp_path: Path, start_server: type[ServerProcess], batch: str, kill_at: str) -> None:
    server = start_server(tmp_path)
    target = server.wait_ready()
    with Client(target) as c:
        c.create_batch(
            "kq", batch_id=batch, on_complete=NewJob("kq", b"callback:" + batch.encode())
        )
        for _ in range(JOBS):
            c.submit("kq", b"job", batch_id=batch)
        c.close_batch("kq", batch)
        worker = BatchWorker(target)
        try:
            if kill_at == "midway":
                until(
                    lambda: c.get_batch("kq", batch).counts.succeeded >= JOBS // 2,
                    15.0,
                    "half done",
                )
            else:
                until(lambda: c.get_batch("kq", batch).complete, 20.0, "the batch complete")
            server.kill()
        finally:
            worker.stop()
    server = start_server(tmp_path)
    target = server.wait_ready()
    worker = BatchWorker(target)
    try:
        with Client(target) as c:
            done = c.wait_batch("kq", batch, timeout=20)
            assert done.complete, done
            assert done.counts.succeeded == JOBS
            callbacks = [
                j for j in c.list_jobs("kq") if j.headers.get("dispatchd-batch-id") == batch
            ]
            assert len(callbacks) == 1, callbacks
            assert callbacks[0].id == done.on_complete_job_id
            until(lambda: c.get(done.on_complete_job_id).state.finished, 15.0, "on_complete run")
    finally:
        worker.stop()
        server.terminate()
        server.wait()


def test_on_complete_fires_once_across_kill_9(
    tmp_path: Path, start_server: type[ServerProcess]
) -> None:
    _round(tmp_path, start_server, "midway", "midway")
    _round(tmp_path, start_server, "atend", "complete")
