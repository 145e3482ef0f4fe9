"""Hardening against hostile callers, on both backends: what a worker, a submitter or a
stranger sends cannot forge log lines, another tenant's stamp, or unbounded error text
(issue 24, items 4, 7 and 16)."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from dispatchd.config import Config
from dispatchd.observability.logs import TextFormatter
from dispatchd.runtime import DispatchdServer
from dispatchd.security import SUBMITTER_HEADER
from dispatchd_client import AsyncClient, InvalidArgument, JobState, NewJob, RetryPolicy
from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc
from tests.inproc import serving
from tests.integration.helpers import eventually
from tests.integration.test_leases import RawWorker

from .conftest import AnyServer

#: The caps docs/security.md promises for a worker's error message and code.
MAX_ERROR_MESSAGE_BYTES = 4096
MAX_ERROR_CODE_CHARS = 128
FORGED = "2026-01-01 00:00:00,000 WARNING dispatchd.auth: forged line"


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    """Everything the ``dispatchd`` loggers write, in the server's text format."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("dispatchd")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


async def test_a_worker_id_with_cr_lf_cannot_forge_a_log_line(
    server: AnyServer, target: str, text_log: io.StringIO
) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DispatcherServiceStub(channel)
        raw = RawWorker(stub, "q", 1)
        raw.outbox.get_nowait()  # the hello below replaces the default one
        raw.send(
            pb.WorkRequest(
                hello=pb.WorkerHello(worker_id=f"w1\r\n{FORGED}\n", queues=["q"], max_in_flight=1)
            )
        )
        await raw.next("welcome")
        await raw.close()
    await eventually(lambda: "disconnected" in text_log.getvalue(), what="the disconnect line")
    lines = text_log.getvalue().splitlines()
    assert not [line for line in lines if line.startswith(FORGED)]
    connected = [line for line in lines if "connected for q" in line]
    assert connected
    assert all("w1\\r\\n2026-01-01" in line for line in connected)


async def test_a_huge_worker_error_is_capped_in_the_job_and_the_log_line(
    server: AnyServer, target: str, text_log: io.StringIO
) -> None:
    huge = "E" * (10 << 20)
    async with (
        AsyncClient(target) as client,
        grpc.aio.insecure_channel(target) as channel,
    ):
        await client.update_queue("q", retry_policy=RetryPolicy(max_attempts=3), create=True)
        job = await client.submit("q", b"x")
        raw = RawWorker(pb_grpc.DispatcherServiceStub(channel), "q", 1)
        (delivery,) = (await raw.next("deliveries")).deliveries.deliveries
        error = pb.JobError(message=huge, code="C" * 100_000, retryable=False)
        raw.send(
            pb.WorkRequest(
                results=pb.WorkResults(
                    results=[pb.JobResult(job_id=job.id, lease_id=delivery.lease_id, error=error)]
                )
            )
        )
        done = await client.wait(job.id, timeout=10)
        await raw.close()
    assert done.state is JobState.DEAD
    assert done.error is not None
    message = done.error.message
    assert len(message.encode()) <= MAX_ERROR_MESSAGE_BYTES
    assert message.startswith("EEEE")
    assert f"{10 << 20} bytes" in message  # the marker says how much there was
    assert len(done.error.code) <= MAX_ERROR_CODE_CHARS
    (attempt,) = done.attempts
    assert attempt.error_message == message
    if isinstance(server, DispatchdServer):  # the lifecycle log line of a DEAD job
        (line,) = [line for line in text_log.getvalue().splitlines() if " is dead after " in line]
        assert len(line) < MAX_ERROR_MESSAGE_BYTES + 500


TOKENS = {"tenant-a": "submit-aaaaaaaaaaaaaaaa", "tenant-b": "submit-bbbbbbbbbbbbbbbb"}


@pytest.fixture
async def authed(server_config: Config, tmp_path: Path) -> AsyncIterator[str]:
    tokens = tmp_path / "tokens"
    tokens.write_text("".join(f"submit {tok} {name}\n" for name, tok in TOKENS.items()))
    config = replace(server_config, auth_tokens=tokens)
    async with serving(DispatchdServer(config)) as srv:
        yield f"127.0.0.1:{srv.port}"


@pytest.mark.parametrize(
    "name", ["Dispatchd-Submitter", "DISPATCHD-SUBMITTER", "dispatchd-owner", "Dispatchd-X"]
)
async def test_a_submitter_cannot_set_a_reserved_dispatchd_header(authed: str, name: str) -> None:
    async with AsyncClient(authed, token=TOKENS["tenant-b"]) as b:
        with pytest.raises(InvalidArgument, match=f"{name}.*reserved"):
            await b.submit("q", b"x", headers={name: "tenant-a"})
        with pytest.raises(InvalidArgument, match=f"jobs\\[1\\].*{name}"):
            await b.submit_batch(
                [NewJob(queue="q", payload=b"ok"), NewJob(queue="q", headers={name: "a"})]
            )
        # The exact stamp is still the server's to write: a client's value is overwritten.
        job = await b.submit("q", b"x", headers={SUBMITTER_HEADER: "tenant-a"})
        assert job.headers == {SUBMITTER_HEADER: "tenant-b"}
        assert (await b.get(job.id)).headers == {SUBMITTER_HEADER: "tenant-b"}
