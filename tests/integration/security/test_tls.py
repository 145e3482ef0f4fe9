"""TLS and mTLS with the real clients: who can connect, and the worker over a secure channel."""

from __future__ import annotations

import asyncio

import pytest

from dispatchd_client import TLS, AsyncClient, Client, JobState, ReceivedJob, Unavailable, Worker
from tests.integration.security.conftest import StartServer, token
from tests.pki import Pki


async def test_tls_with_tokens_runs_a_job_end_to_end(
    start_server: StartServer, client_tls: TLS
) -> None:
    srv = await start_server(mtls=True)
    target = f"127.0.0.1:{srv.port}"
    worker = Worker(target, token=token("work"), tls=client_tls, concurrency=2)

    @worker.handler("mail")
    async def send(job: ReceivedJob) -> bytes:
        return b"sent " + job.payload

    run = asyncio.create_task(worker.run_async())
    try:
        await worker.wait_connected(10)
        async with AsyncClient(target, token=token("submit"), tls=client_tls) as client:
            job = await client.submit("mail", b"hi")
            done = await client.wait(job.id, timeout=10)
        assert (done.state, done.result) == (JobState.SUCCEEDED, b"sent hi")
    finally:
        await worker.stop()
        await run


async def test_sync_client_over_mtls(start_server: StartServer, client_tls: TLS) -> None:
    srv = await start_server(mtls=True)

    def list_queues() -> list[str]:
        with Client(f"127.0.0.1:{srv.port}", token=token("admin"), tls=client_tls) as client:
            client.update_queue("q", width=3, create=True)
            return [q.name for q in client.list_queues()]

    assert await asyncio.to_thread(list_queues) == ["q"]


async def test_tls_files_load_from_disk(start_server: StartServer, pki: Pki) -> None:
    srv = await start_server(mtls=True, auth=False)
    tls = TLS.from_files(pki.ca.cert_path, pki.client.cert_path, pki.client.key_path)
    async with AsyncClient(f"127.0.0.1:{srv.port}", tls=tls) as client:
        assert await client.list_queues() == []


@pytest.mark.parametrize(
    "case", ["no client certificate", "certificate of another CA", "plaintext"]
)
async def test_mtls_refuses_clients_without_a_trusted_certificate(
    start_server: StartServer, pki: Pki, case: str
) -> None:
    srv = await start_server(mtls=True, auth=False)
    tls: TLS | None = {
        "no client certificate": TLS(pki.ca.cert),
        "certificate of another CA": TLS(pki.ca.cert, pki.stranger.cert, pki.stranger.key),
        "plaintext": None,
    }[case]
    async with AsyncClient(
        f"127.0.0.1:{srv.port}", tls=tls, retry_unavailable=0, timeout=5
    ) as client:
        with pytest.raises(Unavailable):
            await client.list_queues()


async def test_client_refuses_a_server_its_ca_did_not_sign(
    start_server: StartServer, pki: Pki
) -> None:
    srv = await start_server(auth=False)
    async with AsyncClient(
        f"127.0.0.1:{srv.port}", tls=TLS(pki.other_ca.cert), retry_unavailable=0, timeout=5
    ) as client:
        with pytest.raises(Unavailable):
            await client.list_queues()


async def test_server_name_override(start_server: StartServer, pki: Pki) -> None:
    """The certificate names localhost and 127.0.0.1; a port-forward target needs the override."""
    srv = await start_server(auth=False)
    tls = TLS(pki.ca.cert, server_name="localhost")
    async with AsyncClient(f"localhost:{srv.port}", tls=tls) as client:
        assert await client.list_queues() == []


async def test_tokens_over_plaintext_for_clients_and_workers(start_server: StartServer) -> None:
    """Behind a TLS-terminating proxy the token still has to reach the server."""
    srv = await start_server(tls=False)
    target = f"127.0.0.1:{srv.port}"
    worker = Worker(target, token=token("work"))

    @worker.handler("q")
    def echo(job: ReceivedJob) -> bytes:
        return job.payload

    run = asyncio.create_task(worker.run_async())
    try:
        await worker.wait_connected(10)
        async with AsyncClient(target, token=token("submit")) as client:
            job = await client.submit("q", b"x")
            assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED

        def admin_view() -> int:
            with Client(target, token=token("admin")) as client:
                return client.get_queue("q").worker_count

        assert await asyncio.to_thread(admin_view) == 1
    finally:
        await worker.stop()
        await run


def test_client_options_are_checked() -> None:
    with pytest.raises(ValueError, match="private key"):
        TLS(b"ca", certificate_chain=b"cert")
    with pytest.raises(ValueError, match="printable"):
        Client("127.0.0.1:1", token="two words")
