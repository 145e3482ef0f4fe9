"""The largest message the server reads is set by its caps, not by grpc's 256 MiB, and is
refused as it arrives: before the auth check, without the server reading it into memory
(issue 24, item 1). A real subprocess, so that its memory is its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from dispatchd_client import AsyncClient, JobState, NewJob, PermanentError, ReceivedJob
from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc
from tests.dispatchd_process import DispatchdProcess

from .conftest import StartWorker

MiB = 1 << 20
SUBMIT_TOKEN = "submit-1f2e3d4c5b6a7988"
WORK_TOKEN = "work-8a7b6c5d4e3f2a1b"
ADMIN_TOKEN = "admin-0a9b8c7d6e5f4a3b"
#: The defaults: --max-payload-bytes 1 MiB, --max-batch-bytes 16 MiB.
BATCH_BOUND = 16 * MiB
HOSTILE = 100 * MiB


class Server(DispatchdProcess):
    def peak_rss(self) -> int:
        """VmHWM: the most memory the process has held at once, in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc/<pid>/status")


@pytest.fixture
def server(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    tokens = tmp_path / "tokens"
    tokens.write_text(
        f"submit {SUBMIT_TOKEN} app\nwork {WORK_TOKEN} worker\nadmin {ADMIN_TOKEN} ops\n"
    )
    args = ["--listen", "127.0.0.1:0", "--metrics-listen", "0", "--http-listen", "0"]
    args += ["--auth-tokens", str(tokens)]
    if backend == "redis":
        args += ["--backend", "redis", "--redis-url", request.getfixturevalue("redis_url")]
    else:
        args += ["--data-dir", str(tmp_path / "data")]
    proc = Server(args)
    try:
        proc._wait_started(20)
        yield proc
    finally:
        proc.proc.kill()
        proc.proc.wait(10)
        proc._reader.join(10)
        assert proc.proc.stderr is not None
        proc.proc.stderr.close()


@pytest.fixture
async def stub(server: Server) -> AsyncIterator[pb_grpc.DispatcherServiceStub]:
    options = [("grpc.max_send_message_length", 1 << 30)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=options) as ch:
        yield pb_grpc.DispatcherServiceStub(ch)


def _auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def test_an_oversized_message_is_refused_before_auth_without_being_read(
    server: Server, stub: pb_grpc.DispatcherServiceStub
) -> None:
    before = server.peak_rss()
    request = pb.SubmitRequest(job=pb.JobSpec(queue="q", payload=b"x" * HOSTILE))
    for _ in range(3):  # no token: the auth check would refuse it, if it came to that
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Submit(request, timeout=30)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    grown = server.peak_rss() - before
    assert grown < HOSTILE // 2, f"the server's peak RSS grew by {grown} bytes"


async def test_a_batch_at_the_bound_is_taken_and_one_byte_more_is_not(
    stub: pb_grpc.DispatcherServiceStub,
) -> None:
    at_the_cap = b"y" * MiB
    batch = [pb.JobSpec(queue="q", payload=at_the_cap) for _ in range(BATCH_BOUND // MiB)]
    taken = await stub.SubmitBatch(
        pb.SubmitBatchRequest(jobs=batch), metadata=_auth(SUBMIT_TOKEN), timeout=30
    )
    assert len(taken.jobs) == 16
    batch.append(pb.JobSpec(queue="q", payload=b"z"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.SubmitBatch(
            pb.SubmitBatchRequest(jobs=batch), metadata=_auth(SUBMIT_TOKEN), timeout=30
        )
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-batch-bytes" in (refused.value.details() or "")


async def test_a_work_stream_message_over_the_bound_ends_the_stream(
    stub: pb_grpc.DispatcherServiceStub,
) -> None:
    hello = pb.WorkRequest(hello=pb.WorkerHello(worker_id="w", queues=["q"], max_in_flight=1))
    huge = pb.WorkRequest(
        results=pb.WorkResults(results=[pb.JobResult(job_id="j", output=b"r" * HOSTILE)])
    )
    release = asyncio.Event()

    async def requests() -> AsyncIterator[pb.WorkRequest]:
        yield hello
        yield huge
        await release.wait()

    async def read_to_the_end() -> None:
        async for _ in stub.Work(requests(), metadata=_auth(WORK_TOKEN)):
            pass

    try:
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(read_to_the_end(), 20)
    finally:
        release.set()
    assert ended.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_worker_splits_large_results_to_fit_the_bound(
    target: str, start_worker: StartWorker
) -> None:
    """30 results of nearly 1 MiB finishing together are more than one message may carry:
    the Worker sends them in several, and every job succeeds on its first attempt."""
    n = 30
    gate = asyncio.Event()
    started = 0

    async def big(job: ReceivedJob) -> bytes:
        nonlocal started
        started += 1
        if started == n:
            gate.set()
        await gate.wait()
        return b"r" * (MiB - 1024)

    async with AsyncClient(target, token=ADMIN_TOKEN) as client:
        await client.update_queue("big", width=n, create=True)
        jobs = await client.submit_batch([NewJob(queue="big") for _ in range(n)])
        start_worker(configure=lambda w: w.handler("big")(big), concurrency=n, token=WORK_TOKEN)
        done = [await client.wait(job.id, timeout=30) for job in jobs]
    assert [(j.state, j.attempt) for j in done] == [(JobState.SUCCEEDED, 1)] * n
    assert all(len(j.result) == MiB - 1024 for j in done)


async def test_a_worker_cuts_a_huge_error_text_to_what_the_server_keeps(
    target: str, start_worker: StartWorker
) -> None:
    """An exception text larger than any message the server reads would end the stream at
    every attempt; the Worker sends what the server keeps of it (4 KiB) instead."""

    def huge(job: ReceivedJob) -> bytes:
        raise PermanentError("E" * (20 * MiB))

    async with AsyncClient(target, token=ADMIN_TOKEN) as client:
        job = await client.submit("huge", b"x")
        start_worker(configure=lambda w: w.handler("huge")(huge), token=WORK_TOKEN)
        done = await client.wait(job.id, timeout=20)
    assert done.attempt == 1
    assert done.error is not None
    assert len(done.error.message.encode()) <= 4096
    assert done.error.message.endswith(f"[cut: {20 * MiB} bytes in all]")
