"""A journal that cannot commit (disk full) and then can again: the server says why,
reports NOT_SERVING meanwhile, and recovers on its own once space is back.

The disk is filled for real as far as SQLite can tell: the journal the server opens is
injected (``DispatchdServer(open_journal=...)``) and caps the database at its current page
count when told to, so SQLite's own write path fails with SQLITE_FULL ("database or disk is
full", with its automatic rollback) exactly as on a full disk."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd.store.journal import Batch, SqliteJournal
from dispatchd_client import AsyncClient, JobState, Unavailable

from ..grpc_probes import NOT_SERVING, SERVING, health_is
from ..inproc import base_config, serving
from .helpers import eventually

pytestmark = pytest.mark.embedded_only  # the journal is the embedded backend's

NO_CAP = 1 << 30
BIG = b"x" * (256 << 10)  # always needs new pages


class FillableJournal(SqliteJournal):
    """A real journal whose disk can be declared full (and freed) between commits."""

    full = False

    def write(self, batch: Batch) -> None:
        limit = self.db.execute("PRAGMA page_count").fetchone()[0] if self.full else NO_CAP
        self.db.execute(f"PRAGMA max_page_count = {limit}")
        super().write(batch)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return dataclasses.replace(base_config(tmp_path), metrics_listen="0")


async def test_a_full_disk_is_reported_and_the_journal_recovers_when_space_is_back(
    config: Config,
) -> None:
    journals: list[FillableJournal] = []

    def open_journal(data_dir: Path) -> SqliteJournal:
        journals.append(FillableJournal(data_dir))
        return journals[-1]

    async with serving(DispatchdServer(config, open_journal=open_journal)) as srv:
        target = f"127.0.0.1:{srv.port}"
        [journal] = journals
        async with AsyncClient(target) as client:
            before = await client.submit("q", b"before")
            journal.full = True
            with pytest.raises(Unavailable) as refused:
                await client.submit("q", BIG)
            assert refused.value.reason == "JOURNAL_UNAVAILABLE"
            assert "disk is full" in refused.value.details
            assert "cannot rollback" not in refused.value.details
            await eventually(lambda: health_is(target, NOT_SERVING), what="health NOT_SERVING")
            # While it cannot commit, a submit is refused before anything is admitted.
            with pytest.raises(Unavailable, match="disk is full") as again:
                await client.submit("q", b"while full")
            assert again.value.reason == "JOURNAL_UNAVAILABLE"
            assert "nothing was admitted" in again.value.details
            journal.full = False
            await eventually(lambda: health_is(target, SERVING), what="health SERVING")
            after = await client.submit("q", b"after")
            assert (await client.get_queue("q")).pending_count == 3  # before, BIG, after
    # Everything acknowledged, and the job admitted before the failure, is on disk.
    async with (
        serving(DispatchdServer(config)) as again_srv,
        AsyncClient(f"127.0.0.1:{again_srv.port}") as client,
    ):
        for job in (before, after):
            assert (await client.get(job.id)).state is JobState.PENDING
        assert (await client.get_queue("q")).pending_count == 3


async def test_a_drain_whose_journal_cannot_commit_its_last_changes_fails(
    config: Config,
) -> None:
    """The journal is full when the server drains: the drain still ends (the snapshot holds
    the unfinished jobs), and it says it failed, so the process exits non-zero."""
    journals: list[FillableJournal] = []

    def open_journal(data_dir: Path) -> SqliteJournal:
        journals.append(FillableJournal(data_dir))
        return journals[-1]

    srv = DispatchdServer(config, open_journal=open_journal)
    async with serving(srv), AsyncClient(f"127.0.0.1:{srv.port}") as client:
        await client.submit("q", b"kept")
        journals[0].full = True
        with pytest.raises(Unavailable):
            await client.submit("q", BIG)
        await srv.drain(grace=0)
    assert srv.drain_failure is not None
    assert "disk is full" in srv.drain_failure
    assert config.data_dir is not None
    assert (config.data_dir / "snapshot.pb").exists()
