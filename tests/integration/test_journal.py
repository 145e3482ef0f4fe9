"""The journal as the service uses it: group commit, durability before the answer."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path

import pytest

from dispatchd.config import Config
from dispatchd.embedded import EmbeddedBackend
from dispatchd.embedded.journaling import JournalWriter
from dispatchd.runtime import DispatchdServer, StartError
from dispatchd.store.journal import Batch
from dispatchd_client import AsyncClient, Unavailable

from ..inproc import serving
from .helpers import eventually

pytestmark = pytest.mark.embedded_only  # the journal is the embedded backend's


def journal_of(server: DispatchdServer) -> JournalWriter:
    assert isinstance(server.backend, EmbeddedBackend)
    journal = server.backend.storage.journal
    assert journal is not None
    return journal


def _pending(server: DispatchdServer) -> int:
    return sum(v.pending_count for v in server.engine.list_queues())


async def test_submits_made_during_a_commit_share_the_next_one(
    target: str, server: DispatchdServer
) -> None:
    """Group commit: while one commit is on disk, every submit that arrives waits for the
    next one, which carries them all. The first commit is held at a gate so the test
    does not depend on how fast this disk fsyncs."""
    assert journal_of(server) is not None
    store = journal_of(server)._journal
    gate = threading.Event()
    real_write = store.write

    def gated_write(batch: Batch) -> None:
        gate.wait(30)
        real_write(batch)

    store.write = gated_write  # type: ignore[method-assign]
    async with AsyncClient(target) as client:
        first = asyncio.ensure_future(client.submit("gc", b"first"))
        await eventually(
            lambda: journal_of(server).busy,
            what="the first commit to start",
        )
        before = journal_of(server).commits
        rest = asyncio.gather(*(client.submit("gc", f"{i}".encode()) for i in range(200)))
        await eventually(lambda: _pending(server) == 201, what="all submits to reach the server")
        gate.set()
        jobs = [await first, *await rest]
    assert len({j.id for j in jobs}) == 201
    assert journal_of(server).commits - before <= 2


async def test_submit_fails_when_the_journal_cannot_be_written(
    target: str, server: DispatchdServer
) -> None:
    assert journal_of(server) is not None
    async with AsyncClient(target) as client:
        await client.submit("j", b"before")
        journal_of(server)._journal.close()  # the disk is gone, as far as SQLite can tell
        with pytest.raises(Unavailable, match="journal cannot be written"):
            await client.submit("j", b"after")


def _flip_a_bit_of(path: Path, marker: bytes) -> None:
    """Flips the lowest bit of the first byte of ``marker`` where it sits in the file, as
    a bad sector or a cosmic ray would: the database stays well-formed."""
    data = bytearray(path.read_bytes())
    at = data.find(marker)
    assert at >= 0, "the marker is not in the file"
    assert data.find(marker, at + 1) < 0, "the marker is in the file twice"
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


async def test_a_flipped_bit_in_a_stored_payload_refuses_the_start_naming_the_job(
    server_config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    marker = b"payload-7d1c0e93a5b24f68"
    first = DispatchdServer(server_config)
    await first.start()
    async with AsyncClient(f"127.0.0.1:{first.port}") as client:
        job = await client.submit("bits", marker)
        kept = await client.submit("bits", b"another job")
    await first.stop_now()
    assert server_config.data_dir is not None
    _flip_a_bit_of(server_config.data_dir / "journal.sqlite3", marker)

    with pytest.raises(StartError, match=f"job '{job.id}'.*checksum.*--recover-truncated"):
        await DispatchdServer(server_config).start()

    recovering = DispatchdServer(dataclasses.replace(server_config, recover_truncated=True))
    async with serving(recovering):
        assert [j.id for j in recovering.engine.unfinished_jobs()] == [kept.id]
    assert f"dropped damaged journal record of job {job.id}" in caplog.text
