"""The journal as the service uses it: group commit, durability before the answer."""

from __future__ import annotations

import asyncio

import pytest

from dispatchd.runtime import DispatchdServer
from dispatchd_client import AsyncClient, Unavailable


async def test_concurrent_submits_share_commits(target: str, server: DispatchdServer) -> None:
    assert server.journal is not None
    before = server.journal.commits
    async with AsyncClient(target) as client:
        jobs = await asyncio.gather(*(client.submit("gc", f"{i}".encode()) for i in range(200)))
    commits = server.journal.commits - before
    assert len({j.id for j in jobs}) == 200
    assert 1 <= commits <= 100, f"{commits} commits for 200 concurrent submits"


async def test_submit_fails_when_the_journal_cannot_be_written(
    target: str, server: DispatchdServer
) -> None:
    assert server.journal is not None
    async with AsyncClient(target) as client:
        await client.submit("j", b"before")
        server.journal._journal.close()  # the disk is gone, as far as SQLite can tell
        with pytest.raises(Unavailable, match="journal cannot be written"):
            await client.submit("j", b"after")
