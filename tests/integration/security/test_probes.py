"""Probe semantics and start-up refusals of the security options."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer, StartError
from dispatchd_client import AsyncClient, ReceivedJob, Worker
from tests.integration.helpers import eventually
from tests.integration.security.conftest import StartServer
from tests.pki import Pki

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_drain_fails_readiness_but_not_liveness(start_server: StartServer) -> None:
    srv = await start_server(tls=False, auth=False, health_listen="127.0.0.1:0")
    target = f"127.0.0.1:{srv.port}"
    release, started = asyncio.Event(), asyncio.Event()
    finished: list[str] = []
    worker = Worker(target)

    @worker.handler("q")
    async def slow(job: ReceivedJob) -> bytes:
        started.set()
        await release.wait()
        finished.append(job.id)
        return b"done"

    run = asyncio.create_task(worker.run_async())
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{srv.health_port}") as probe,
        AsyncClient(target) as client,
    ):
        stub = health_pb2_grpc.HealthStub(probe)

        async def status(service: str) -> int:
            req = health_pb2.HealthCheckRequest(service=service)
            return int((await stub.Check(req, timeout=5)).status)

        async def not_ready() -> bool:
            return bool(await status("") == NOT_SERVING)

        await worker.wait_connected(10)
        job = await client.submit("q", b"x")
        await asyncio.wait_for(started.wait(), 10)
        await srv.start_drain(10.0)
        await eventually(not_ready, within=10, what="readiness to fail")
        assert await status("liveness") == SERVING
        release.set()
        await asyncio.wait_for(srv.stopped.wait(), 10)
    await asyncio.wait_for(run, 10)
    assert finished == [job.id]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing tokens", "cannot read --auth-tokens file"),
        ("bad role", "unknown role 'root'"),
        ("short token", "16-4096 printable ASCII"),
        ("missing cert", "cannot read --tls-cert file"),
        ("not pem", "is not PEM"),
    ],
)
async def test_bad_security_files_stop_the_start(
    tmp_path: Path, pki: Pki, setup: str, message: str
) -> None:
    tokens = tmp_path / "tokens"
    fields: dict[str, Path] = {}
    if setup == "bad role":
        tokens.write_text("root abcdefghijklmnopqrstuvwxyz\n")
        fields["auth_tokens"] = tokens
    elif setup == "short token":
        tokens.write_text("admin short\n")
        fields["auth_tokens"] = tokens
    elif setup == "missing tokens":
        fields["auth_tokens"] = tokens
    else:
        cert = tmp_path / "missing.crt"
        if setup == "not pem":
            cert.write_bytes(b"\x30\x82 DER bytes")
        fields = {"tls_cert": cert, "tls_key": pki.server.key_path}
    srv = DispatchdServer(Config(listen="127.0.0.1:0", metrics_listen="0", **fields))  # type: ignore[arg-type]
    with pytest.raises(StartError, match=message):
        await srv.start()


async def test_the_command_reports_a_bad_token_file_and_exits_1(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dispatchd",
        "--listen",
        "127.0.0.1:0",
        "--auth-tokens",
        str(tmp_path / "nope"),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert "cannot read --auth-tokens file" in err.decode()
