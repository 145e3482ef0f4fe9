"""The journal as the service uses it: group commit, durability before the answer."""

from __future__ import annotations

import asyncio
import threading

import pytest

from dispatchd.embedded import EmbeddedBackend
from dispatchd.embedded.journaling import JournalWriter
from dispatchd.runtime import DispatchdServer
from dispatchd.store.journal import Batch
from dispatchd_client import AsyncClient, Unavailable

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
