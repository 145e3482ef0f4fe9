"""The embedded backend's disk: the journal (the truth while it exists) and the drain
snapshot, read at start-up into an empty engine and written at the end of a drain."""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dispatchd import convert, flows_convert, schedule_convert
from dispatchd.embedded.journaling import JournalUnavailable, JournalWriter, batch_key
from dispatchd.embedded.restoring import restored_job
from dispatchd.engine import Engine, JobRecord
from dispatchd.listening import StartError
from dispatchd.observability.metrics import StorageStats
from dispatchd.store.journal import READ_CHUNK, JournalError, SqliteJournal
from dispatchd.store.snapshot import SnapshotData, SnapshotStore

log = logging.getLogger("dispatchd")


class SnapshotFailed(Exception):
    """The drain could not write its snapshot; the message says why (already logged)."""


@dataclass(frozen=True, slots=True)
class StorageConfig:
    data_dir: Path | None = None
    """Where the journal and the snapshot live; None keeps nothing across restarts."""
    journaled: bool = True
    """Every change goes to the journal (with a data_dir)."""
    recover_truncated: bool = False
    """Start even when a journal record or the snapshot is damaged, dropping what is lost."""
    open_journal: Callable[[Path], SqliteJournal] = SqliteJournal
    """Makes the journal of a data dir: SqliteJournal; tests hand in one that can fail on
    purpose (a full disk), as a real one would."""


class Storage:
    """Opens, restores and closes the journal and the snapshot of one engine."""

    def __init__(
        self,
        engine: Engine,
        config: StorageConfig,
        clock: Callable[[], float],
        on_trouble: Callable[[str | None], None] = lambda trouble: None,
    ) -> None:
        self._engine = engine
        self._config = config
        self._clock = clock
        self._on_trouble = on_trouble
        self.store = SnapshotStore(config.data_dir) if config.data_dir else None
        self.journal: JournalWriter | None = None
        #: Journal commits, its size on disk and snapshot seconds, for /metrics.
        self.stats = StorageStats()

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
        journal = c.open_journal(c.data_dir)
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
        self.journal = JournalWriter(self._engine, journal, self._on_trouble, self.stats)
        self.stats.journal_bytes = journal.size_on_disk
        return self.journal

    def _restore_journal(self, journal: SqliteJournal) -> bool:
        """Streams the journal into the engine, READ_CHUNK rows at a time: read, checked,
        decoded, converted and handed over before the next chunk is read, so start-up holds
        the engine's records and one chunk, not every row's protobuf beside them (which
        more than doubled the peak)."""
        started = time.monotonic()
        stored = list(journal.queues())
        queues = [(q.name, convert.settings_from_pb(q)) for q in stored]
        skipped: list[str] = []
        count = 0

        def records() -> Iterator[JobRecord]:
            nonlocal count
            rows = journal.job_rows(self._config.recover_truncated, skipped)
            while chunk := [restored_job(m, p) for m, p in itertools.islice(rows, READ_CHUNK)]:
                count += len(chunk)
                yield from chunk

        with _collector_paused():
            self._engine.restore(queues, records(), self._clock())
        for q in stored:  # the quota counts: a restart grants nothing twice
            usage, keys = convert.window_usage(q), convert.key_window_usage(q)
            self._engine.restore_window_usage(q.name, usage, keys)
        schedules = journal.schedules()
        self._engine.restore_schedules(
            [schedule_convert.schedule_from_stored(s) for s in schedules]
        )
        batches = journal.batches()
        self._engine.restore_batches([flows_convert.batch_from_pb(b) for b in batches])
        for job_id in skipped:
            log.warning("--recover-truncated: dropped damaged journal record of job %s", job_id)
        if not count and not queues and not schedules:
            return False
        log.info(
            "recovered %d jobs and %d queues from %s in %.2f s",
            count,
            len(queues),
            journal.path,
            time.monotonic() - started,
        )
        return True

    def _seed_journal(self, journal: SqliteJournal) -> None:
        """Writes the engine's whole state into a fresh journal (after a snapshot restore)."""
        engine = self._engine
        queues = [
            (
                v.name,
                convert.settings_to_pb(
                    v.name, v.settings, usage=v.window_usage, key_usage=v.key_window_usage
                ).SerializeToString(),
            )
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
        batches = [
            (batch_key(v.queue, v.batch_id), flows_convert.batch_to_pb(v).SerializeToString())
            for v in engine.all_batches()
        ]
        journal.replace_all(queues, jobs, schedules, batches)

    def _restore_snapshot(self) -> None:
        assert self.store is not None
        data = self.store.load(recover=self._config.recover_truncated)
        if data is None:
            return
        with _collector_paused():
            self._engine.restore(data.queues, data.jobs)
        for name in data.window_usage.keys() | data.key_window_usage.keys():
            usage, keys = data.window_usage.get(name, ()), data.key_window_usage.get(name, ())
            self._engine.restore_window_usage(name, usage, keys)
        self._engine.restore_schedules(data.schedules)
        self._engine.restore_batches(data.batches)
        self.store.mark_restored()
        log.info(
            "restored %d jobs and %d queues from %s",
            len(data.jobs),
            len(data.queues),
            self.store.path,
        )

    def check(self) -> None:
        """Raises JournalUnavailable while the journal cannot commit (a no-op without one)."""
        if self.journal is not None:
            self.journal.check()

    async def sync(self) -> None:
        """Returns once every change so far is durable (a no-op without a journal); raises
        JournalUnavailable when the commit failed."""
        if self.journal is not None:
            await self.journal.sync()

    def snapshot(self) -> None:
        """The unfinished jobs and every queue's settings, for the next start. Raises
        SnapshotFailed (after logging what it means for the jobs) when it cannot be
        written: with a journal nothing is lost, without one the jobs are."""
        engine = self._engine
        if self.store is None:
            log.warning(
                "no --data-dir: %d unfinished jobs are not kept", len(engine.unfinished_jobs())
            )
            return
        views = engine.list_queues()
        queues = [(v.name, v.settings) for v in views]
        usage = {v.name: v.window_usage for v in views if v.window_usage}
        keys = {v.name: v.key_window_usage for v in views if v.key_window_usage}
        jobs = engine.unfinished_jobs()
        schedules = engine.all_schedules()
        start = time.perf_counter()
        try:
            batches = engine.all_batches()
            data = SnapshotData(queues, jobs, schedules, usage, keys, batches)
            size = self.store.save(data, self._clock())
        except OSError as e:
            if self.journal is not None:
                log.error(
                    "drain: the snapshot %s could not be written (%s); the journal keeps "
                    "every job and the next start recovers them from it",
                    self.store.path,
                    e,
                )
            else:
                log.error(
                    "drain: the snapshot %s could not be written (%s): %d unfinished jobs "
                    "are lost (--durability none keeps them in the snapshot only)",
                    self.store.path,
                    e,
                    len(jobs),
                )
            raise SnapshotFailed(
                f"the snapshot {self.store.path} could not be written: {e}"
            ) from None
        self.stats.snapshot.observe(time.perf_counter() - start)
        log.info(
            "snapshot of %d jobs, %d queues (%d bytes) in %s",
            len(jobs),
            len(queues),
            size,
            self.store.path,
        )

    async def close(self) -> None:
        """Closes the journal; raises JournalUnavailable when its last changes could not be
        written (already logged): a drain that ends so has failed."""
        if self.journal is not None and not await self.journal.close():
            raise JournalUnavailable(
                f"the journal cannot be written ({self.journal.trouble}): its last changes are lost"
            )


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic collector off while a restore builds a million long-lived records: its
    full passes over the growing heap took a third of the time, for no garbage (reference
    counting still frees each row as it is used). The runtime freezes what the restore
    made once the server serves (runtime._tune_gc)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
