"""The embedded journal: SQLite in WAL mode under --data-dir, fsynced on every commit.

It is a state table rather than a log: one row per job (payload written once, a small
status blob rewritten on each change) and one per queue. Many changes of one job
inside one group commit cost one row write, the file stays proportional to live
and retained jobs without a separate compaction pass, and recovery is one scan.
SQLite's WAL gives atomic commits and discards a torn tail by its own checksums;
``synchronous=FULL`` makes a commit durable before it returns.

Only the writer thread touches the connection after ``open``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from google.protobuf.message import DecodeError

from dispatchd_client.v1 import dispatcher_pb2 as pb

M = TypeVar("M", pb.Job, pb.Queue)
JOURNAL_NAME = "journal.sqlite3"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY, settings BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    payload BLOB NOT NULL,
    status BLOB NOT NULL
) WITHOUT ROWID;
"""


class JournalError(Exception):
    """The journal cannot be used; the message names the file and what is wrong."""


@dataclass(slots=True)
class Batch:
    """One group commit: rows to write, serialized on the event loop beforehand."""

    new_jobs: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    statuses: list[tuple[bytes, str]] = field(default_factory=list)
    forgotten: list[tuple[str]] = field(default_factory=list)
    queues: list[tuple[str, bytes]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.new_jobs) + len(self.statuses) + len(self.forgotten) + len(self.queues)


@dataclass(slots=True)
class Recovered:
    queues: list[pb.Queue]
    jobs: list[pb.Job]
    skipped: list[str]


class SqliteJournal:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / JOURNAL_NAME
        self._db: sqlite3.Connection | None = None

    def exists(self) -> bool:
        return self.path.exists()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes on a new file
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise JournalError(
                    f"{self.path}: schema version {row[0]}; this server reads 1..{SCHEMA_VERSION}"
                )
            check = db.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise JournalError(f"{self.path}: not a usable dispatchd journal ({e})") from None
        if check != "ok":
            db.close()
            raise JournalError(f"{self.path}: the journal is corrupt: {check}")
        self._db = db

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalError(f"{self.path}: the journal is not open")
        return self._db

    def load(self, recover: bool) -> Recovered:
        """Every queue and job. A row that does not decode refuses the start, naming it,
        unless ``recover`` drops it (and says so)."""
        queues = []
        for name, blob in self.db.execute("SELECT name, settings FROM queues ORDER BY name"):
            queues.append(self._decode(pb.Queue, blob, f"queue {name!r}", recover=False))
        jobs: list[pb.Job] = []
        skipped: list[str] = []
        for job_id, payload, status in self._rows():
            try:
                job = self._decode(pb.Job, status, f"job {job_id!r}", recover)
            except _Skip:
                skipped.append(job_id)
                continue
            job.payload = payload
            jobs.append(job)
        return Recovered(queues, jobs, skipped)

    def _rows(self) -> Iterator[tuple[str, bytes, bytes]]:
        # ULIDs sort by submit time: rows come back in submit order.
        yield from self.db.execute("SELECT id, payload, status FROM jobs ORDER BY id")

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
                db.executemany(
                    "INSERT OR REPLACE INTO jobs (id, payload, status) VALUES (?, ?, ?)",
                    batch.new_jobs,
                )
            if batch.statuses:
                db.executemany("UPDATE jobs SET status = ? WHERE id = ?", batch.statuses)
            if batch.forgotten:
                db.executemany("DELETE FROM jobs WHERE id = ?", batch.forgotten)
                # Give freed pages back a few at a time, so the file follows live data down
                # without a long stop-the-world VACUUM.
                db.execute("PRAGMA incremental_vacuum(64)")
            if batch.queues:
                db.executemany(
                    "INSERT OR REPLACE INTO queues (name, settings) VALUES (?, ?)", batch.queues
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def replace_all(
        self, queues: Sequence[tuple[str, bytes]], jobs: Sequence[tuple[str, bytes, bytes]]
    ) -> None:
        """Makes the journal hold exactly this (import, first start from a snapshot)."""
        db = self.db
        db.execute("BEGIN")
        try:
            db.execute("DELETE FROM jobs")
            db.execute("DELETE FROM queues")
            db.executemany("INSERT INTO queues (name, settings) VALUES (?, ?)", queues)
            db.executemany("INSERT INTO jobs (id, payload, status) VALUES (?, ?, ?)", jobs)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def size_bytes(self) -> int:
        wal = self.path.with_name(self.path.name + "-wal")
        return self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    def close(self) -> None:
        if self._db is not None:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None


class _Skip(Exception):
    pass
