"""The embedded journal: SQLite in WAL mode under --data-dir, fsynced on every commit.

It is a state table rather than a log: one row per job (payload written once, a small
status blob rewritten on each change) and one per queue. Many changes of one job
inside one group commit cost one row write, the file stays proportional to live
and retained jobs without a separate compaction pass, and recovery is one scan.
SQLite's WAL gives atomic commits and discards a torn tail by its own checksums;
``synchronous=FULL`` makes a commit durable before it returns.

SQLite does not checksum the pages of the database itself, so every stored blob (a job's
payload and status, a queue's settings) has a CRC32 beside it, computed on write and
checked on load: a flipped bit refuses the start, naming the job (``--recover-truncated``
drops that job instead), rather than serving a different payload. Journals of schema 1
(before the checksums) get them on open, computed over what they hold then.

Only the writer thread touches the connection after ``open``.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from google.protobuf.message import DecodeError

from dispatchd_client.v1 import dispatcher_pb2 as pb

log = logging.getLogger("dispatchd.journal")
M = TypeVar("M", pb.Job, pb.Queue, pb.Schedule, pb.Batch)
JOURNAL_NAME = "journal.sqlite3"
#: Rows recovery reads from SQLite at a time (and the storage converts at a time).
READ_CHUNK = 10_000
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    settings BLOB NOT NULL,
    crc INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    crc INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    crc INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    payload BLOB NOT NULL,
    status BLOB NOT NULL,
    payload_crc INTEGER NOT NULL DEFAULT 0,
    status_crc INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""
# Schema 1 had no checksums: add the columns and fill them from the rows as they are.
_MIGRATE_1_TO_2 = (
    "ALTER TABLE queues ADD COLUMN crc INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE jobs ADD COLUMN payload_crc INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE jobs ADD COLUMN status_crc INTEGER NOT NULL DEFAULT 0",
    "UPDATE queues SET crc = crc32(settings)",
    "UPDATE jobs SET payload_crc = crc32(payload), status_crc = crc32(status)",
    "UPDATE meta SET value = '2' WHERE key = 'schema'",
)
crc32 = zlib.crc32


class JournalError(Exception):
    """The journal cannot be used; the message names the file and what is wrong."""


@dataclass(slots=True)
class Batch:
    """One group commit: rows to write, serialized on the event loop beforehand."""

    new_jobs: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    statuses: list[tuple[bytes, str]] = field(default_factory=list)
    forgotten: list[tuple[str]] = field(default_factory=list)
    queues: list[tuple[str, bytes]] = field(default_factory=list)
    schedules: list[tuple[str, bytes]] = field(default_factory=list)
    """(id, stored Schedule message): a schedule with its state, rewritten whole."""
    deleted_schedules: list[tuple[str]] = field(default_factory=list)
    deleted_queues: list[str] = field(default_factory=list)
    batches: list[tuple[str, bytes]] = field(default_factory=list)
    """(queue NUL batch id, stored Batch message), rewritten whole (docs/workflows.md)."""
    deleted_batches: list[tuple[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.batches)
            + len(self.deleted_batches)
            + len(self.new_jobs)
            + len(self.statuses)
            + len(self.forgotten)
            + len(self.queues)
            + len(self.schedules)
            + len(self.deleted_schedules)
            + len(self.deleted_queues)
        )


@dataclass(slots=True)
class Recovered:
    queues: list[pb.Queue]
    jobs: list[pb.Job]
    skipped: list[str]
    schedules: list[pb.Schedule] = field(default_factory=list)


class SqliteJournal:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / JOURNAL_NAME
        self._db: sqlite3.Connection | None = None

    def exists(self) -> bool:
        return self.path.exists()

    def size_on_disk(self) -> int:
        """Bytes of the database and its WAL now (0 for a file that is not there)."""
        total = 0
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes on a new file
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.create_function("crc32", 1, crc32, deterministic=True)
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise JournalError(
                    f"{self.path}: schema version {row[0]}; this server reads 1..{SCHEMA_VERSION}"
                )
            elif int(row[0]) == 1:
                self._transaction(db, _MIGRATE_1_TO_2)
            check = db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise JournalError(f"{self.path}: not a usable dispatchd journal ({e})") from None
        if check != "ok":
            db.close()
            raise JournalError(f"{self.path}: the journal is corrupt: {check}")
        self._db = db

    @staticmethod
    def _transaction(db: sqlite3.Connection, statements: Sequence[str]) -> None:
        db.execute("BEGIN")
        try:
            for statement in statements:
                db.execute(statement)
            db.execute("COMMIT")
        except BaseException:
            _roll_back(db)
            raise

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalError(f"{self.path}: the journal is not open")
        return self._db

    def load(self, recover: bool) -> Recovered:
        """Every queue and job, all in memory (export, tools, tests; a server's start-up
        streams them instead: ``queues`` then ``jobs``)."""
        skipped: list[str] = []
        queues = self.queues()
        jobs = list(self.jobs(recover, skipped))
        return Recovered(queues, jobs, skipped, self.schedules())

    def queues(self) -> list[pb.Queue]:
        """Every queue. A damaged queue always refuses the start: its jobs would run under
        defaults."""
        queues = []
        rows = self.db.execute("SELECT name, settings, crc FROM queues ORDER BY name")
        for name, blob, crc in rows:
            self._check(blob, crc, f"queue {name!r}", "settings", recover=False)
            queues.append(self._decode(pb.Queue, blob, f"queue {name!r}", recover=False))
        return queues

    def schedules(self) -> list[pb.Schedule]:
        """Every schedule with its state. A damaged one always refuses the start: its
        cursor would be lost, and ticks fired twice or never."""
        schedules = []
        rows = self.db.execute("SELECT id, body, crc FROM schedules ORDER BY id")
        for schedule_id, blob, crc in rows:
            what = f"schedule {schedule_id!r}"
            self._check(blob, crc, what, "body", recover=False)
            schedules.append(self._decode(pb.Schedule, blob, what, recover=False))
        return schedules

    def batches(self) -> list[pb.Batch]:
        """Every batch with its counts. A damaged one refuses the start: its callbacks
        would fire twice or never."""
        batches = []
        for key, blob, crc in self.db.execute("SELECT id, body, crc FROM batches ORDER BY id"):
            what = f"batch {key!r}"
            self._check(blob, crc, what, "body", recover=False)
            batches.append(self._decode(pb.Batch, blob, what, recover=False))
        return batches

    def jobs(self, recover: bool, skipped: list[str]) -> Iterator[pb.Job]:
        """Every job in submit order, read and decoded one row at a time as the caller
        iterates, so a restore holds one job's protobuf at a time, never a million. A row
        whose checksum does not match, or that does not decode, raises JournalError naming
        it, unless ``recover`` drops it: its id is appended to ``skipped``."""
        for job, payload in self.job_rows(recover, skipped):
            job.payload = payload
            yield job

    def job_rows(self, recover: bool, skipped: list[str]) -> Iterator[tuple[pb.Job, bytes]]:
        """``jobs`` as (status message without its payload, payload): a start-up keeps the
        payload object SQLite made rather than a copy out of the message."""
        check, decode = self._check, self._decode
        for job_id, payload, status, payload_crc, status_crc in self._rows():
            if crc32(payload) == payload_crc and crc32(status) == status_crc:
                job = pb.Job()
                try:
                    job.ParseFromString(status)
                except DecodeError:
                    pass  # named by _decode below
                else:
                    yield job, payload
                    continue
            what = f"job {job_id!r}"  # only for a damaged row: the checks again, to name it
            try:
                check(payload, payload_crc, what, "payload", recover)
                check(status, status_crc, what, "status", recover)
                job = decode(pb.Job, status, what, recover)
            except _Skip:
                skipped.append(job_id)
                continue
            yield job, payload

    def _rows(self) -> Iterator[tuple[str, bytes, bytes, int, int]]:
        # ULIDs sort by submit time: rows come back in submit order, READ_CHUNK at a time.
        cursor = self.db.execute(
            "SELECT id, payload, status, payload_crc, status_crc FROM jobs ORDER BY id"
        )
        while rows := cursor.fetchmany(READ_CHUNK):
            yield from rows

    def _check(self, blob: bytes, crc: int, what: str, part: str, recover: bool) -> None:
        if crc32(blob) == crc:
            return
        if recover:
            raise _Skip
        raise JournalError(
            f"{self.path}: {what} has a damaged record (its {part} does not match its "
            "checksum: the file was changed on disk); start with --recover-truncated to "
            "drop it"
        )

    def _decode(self, kind: type[M], blob: bytes, what: str, recover: bool) -> M:
        msg = kind()
        try:
            msg.ParseFromString(blob)
        except DecodeError as e:
            if recover:
                raise _Skip from None
            raise JournalError(
                f"{self.path}: {what} has a damaged record ({e}); start with "
                "--recover-truncated to drop it"
            ) from None
        return msg

    def write(self, batch: Batch) -> None:
        """One transaction; durable when it returns (synchronous=FULL)."""
        db = self.db
        db.execute("BEGIN")
        try:
            if batch.new_jobs:
                db.executemany(_INSERT_JOB, _job_rows(batch.new_jobs))
            if batch.statuses:
                db.executemany(
                    "UPDATE jobs SET status = ?, status_crc = ? WHERE id = ?",
                    ((status, crc32(status), job_id) for status, job_id in batch.statuses),
                )
            if batch.forgotten:
                db.executemany("DELETE FROM jobs WHERE id = ?", batch.forgotten)
                # Give freed pages back a few at a time, so the file follows live data down
                # without a long stop-the-world VACUUM.
                db.execute("PRAGMA incremental_vacuum(64)")
            if batch.queues:
                db.executemany(
                    "INSERT OR REPLACE INTO queues (name, settings, crc) VALUES (?, ?, ?)",
                    _queue_rows(batch.queues),
                )
            if batch.schedules:
                db.executemany(_INSERT_SCHEDULE, _queue_rows(batch.schedules))
            if batch.deleted_schedules:
                db.executemany("DELETE FROM schedules WHERE id = ?", batch.deleted_schedules)
            if batch.batches:
                db.executemany(_INSERT_BATCH, _queue_rows(batch.batches))
            if batch.deleted_batches:
                db.executemany("DELETE FROM batches WHERE id = ?", batch.deleted_batches)
            if batch.deleted_queues:
                db.executemany(
                    "DELETE FROM queues WHERE name = ?", ((n,) for n in batch.deleted_queues)
                )
            db.execute("COMMIT")
        except BaseException:
            _roll_back(db)
            raise

    def replace_all(
        self,
        queues: Sequence[tuple[str, bytes]],
        jobs: Sequence[tuple[str, bytes, bytes]],
        schedules: Sequence[tuple[str, bytes]] | None = None,
        batches: Sequence[tuple[str, bytes]] | None = None,
    ) -> None:
        """Makes the journal hold exactly these jobs and queues (import, first start from a
        snapshot), and these schedules when given (None: the schedules stay: an import
        carries none)."""
        db = self.db
        db.execute("BEGIN")
        try:
            db.execute("DELETE FROM jobs")
            db.execute("DELETE FROM queues")
            if schedules is not None:
                db.execute("DELETE FROM schedules")
                db.executemany(_INSERT_SCHEDULE, _queue_rows(schedules))
            if batches is not None:
                db.execute("DELETE FROM batches")
                db.executemany(_INSERT_BATCH, _queue_rows(batches))
            db.executemany(
                "INSERT INTO queues (name, settings, crc) VALUES (?, ?, ?)", _queue_rows(queues)
            )
            db.executemany(_INSERT_JOB, _job_rows(jobs))
            db.execute("COMMIT")
        except BaseException:
            _roll_back(db)
            raise

    def size_bytes(self) -> int:
        wal = self.path.with_name(self.path.name + "-wal")
        return self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    def close(self) -> None:
        """Checkpoints the WAL into the file and closes. A checkpoint that fails (a full
        disk) loses nothing: the WAL stays and is read on the next open."""
        db, self._db = self._db, None
        if db is None:
            return
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as e:
            log.warning("%s: no checkpoint at close (%s); the WAL keeps the commits", self.path, e)
        finally:
            db.close()


_INSERT_SCHEDULE = "INSERT OR REPLACE INTO schedules (id, body, crc) VALUES (?, ?, ?)"
_INSERT_BATCH = "INSERT OR REPLACE INTO batches (id, body, crc) VALUES (?, ?, ?)"
_INSERT_JOB = (
    "INSERT OR REPLACE INTO jobs (id, payload, status, payload_crc, status_crc) "
    "VALUES (?, ?, ?, ?, ?)"
)


def _job_rows(
    rows: Iterable[tuple[str, bytes, bytes]],
) -> Iterator[tuple[str, bytes, bytes, int, int]]:
    for job_id, payload, status in rows:
        yield job_id, payload, status, crc32(payload), crc32(status)


def _queue_rows(rows: Iterable[tuple[str, bytes]]) -> Iterator[tuple[str, bytes, int]]:
    for name, settings in rows:
        yield name, settings, crc32(settings)


def _roll_back(db: sqlite3.Connection) -> None:
    """Ends a failed transaction, if SQLite has not already: on a full disk (SQLITE_FULL)
    and on I/O errors it rolls back by itself, and a ROLLBACK then would raise "cannot
    rollback - no transaction is active" in place of the error that says what happened."""
    if db.in_transaction:
        db.execute("ROLLBACK")


class _Skip(Exception):
    pass
