"""The embedded backend's disk: the journal (the truth while it exists) and the drain
snapshot, read at start-up into an empty engine and written at the end of a drain."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dispatchd import convert, schedule_convert
from dispatchd.embedded.journaling import JournalWriter
from dispatchd.engine import Engine
from dispatchd.listening import StartError
from dispatchd.store.journal import JournalError, SqliteJournal
from dispatchd.store.snapshot import SnapshotData, SnapshotStore

log = logging.getLogger("dispatchd")


@dataclass(frozen=True, slots=True)
class StorageConfig:
    data_dir: Path | None = None
    """Where the journal and the snapshot live; None keeps nothing across restarts."""
    journaled: bool = True
    """Every change goes to the journal (with a data_dir)."""
    recover_truncated: bool = False
    """Start even when a journal record or the snapshot is damaged, dropping what is lost."""


class Storage:
    """Opens, restores and closes the journal and the snapshot of one engine."""

    def __init__(self, engine: Engine, config: StorageConfig, clock: Callable[[], float]) -> None:
        self._engine = engine
        self._config = config
        self._clock = clock
        self.store = SnapshotStore(config.data_dir) if config.data_dir else None
        self.journal: JournalWriter | None = None

    def restore(self) -> JournalWriter | None:
        """The journal, when there is one, is the truth; a snapshot next to it is the
        last drain's copy and is moved aside. Without a journal the snapshot is restored
        (and, with journaling on, written into a new journal). Returns the journal writer
        the engine's observers must include, if any."""
        if self.store is None:
            return None
        c = self._config
        if not c.journaled:
            self._restore_snapshot()
            return None
        assert c.data_dir is not None
        journal = SqliteJournal(c.data_dir)
        try:
            had_journal = journal.exists()
            journal.open()
            if had_journal and self._restore_journal(journal):
                if self.store.path.exists():
                    self.store.mark_restored()
            else:
                self._restore_snapshot()
                self._seed_journal(journal)
        except JournalError as e:
            raise StartError(str(e)) from None
        self.journal = JournalWriter(self._engine, journal)
        return self.journal

    def _restore_journal(self, journal: SqliteJournal) -> bool:
        started = time.monotonic()
        recovered = journal.load(self._config.recover_truncated)
        if not recovered.jobs and not recovered.queues and not recovered.schedules:
            return False
        queues = [(q.name, convert.settings_from_pb(q)) for q in recovered.queues]
        jobs = [convert.job_from_pb(j) for j in recovered.jobs]
        self._engine.restore(queues, jobs, self._clock())
        self._engine.restore_schedules(
            [schedule_convert.schedule_from_stored(s) for s in recovered.schedules]
        )
        for job_id in recovered.skipped:
            log.warning("--recover-truncated: dropped damaged journal record of job %s", job_id)
        log.info(
            "recovered %d jobs and %d queues from %s in %.2f s",
            len(recovered.jobs),
            len(queues),
            journal.path,
            time.monotonic() - started,
        )
        return True

    def _seed_journal(self, journal: SqliteJournal) -> None:
        """Writes the engine's whole state into a fresh journal (after a snapshot restore)."""
        engine = self._engine
        queues = [
            (v.name, convert.settings_to_pb(v.name, v.settings).SerializeToString())
            for v in engine.list_queues()
        ]
        jobs = [
            (j.id, j.payload, convert.job_to_pb(j, with_payload=False).SerializeToString())
            for j in engine.unfinished_jobs()
        ]
        schedules = [
            (rec.id, schedule_convert.schedule_to_pb(rec, next_fires=0).SerializeToString())
            for rec in engine.all_schedules()
        ]
        journal.replace_all(queues, jobs, schedules)

    def _restore_snapshot(self) -> None:
        assert self.store is not None
        data = self.store.load(recover=self._config.recover_truncated)
        if data is None:
            return
        self._engine.restore(data.queues, data.jobs)
        self._engine.restore_schedules(data.schedules)
        self.store.mark_restored()
        log.info(
            "restored %d jobs and %d queues from %s",
            len(data.jobs),
            len(data.queues),
            self.store.path,
        )

    async def sync(self) -> None:
        """Returns once every change so far is durable (a no-op without a journal)."""
        if self.journal is not None:
            await self.journal.sync()

    def snapshot(self) -> None:
        """The unfinished jobs and every queue's settings, for the next start."""
        engine = self._engine
        if self.store is None:
            log.warning(
                "no --data-dir: %d unfinished jobs are not kept", len(engine.unfinished_jobs())
            )
            return
        queues = [(v.name, v.settings) for v in engine.list_queues()]
        jobs = engine.unfinished_jobs()
        schedules = engine.all_schedules()
        size = self.store.save(SnapshotData(queues, jobs, schedules), self._clock())
        log.info(
            "snapshot of %d jobs, %d queues (%d bytes) in %s",
            len(jobs),
            len(queues),
            size,
            self.store.path,
        )

    async def close(self) -> None:
        if self.journal is not None:
            await self.journal.close()
