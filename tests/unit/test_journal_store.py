"""The SQLite journal file: round trip, damage detected and named, schema versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dispatchd.store.journal import Batch, JournalError, SqliteJournal
from dispatchd_client.v1 import dispatcher_pb2 as pb


def _status(job_id: str, state: int = pb.JOB_STATE_PENDING) -> bytes:
    return pb.Job(id=job_id, queue="q", state=state).SerializeToString()  # type: ignore[arg-type]


def test_round_trip_in_submit_order(tmp_path: Path) -> None:
    j = SqliteJournal(tmp_path)
    j.open()
    j.write(
        Batch(
            new_jobs=[("B", b"p2", _status("B")), ("A", b"p1", _status("A"))],
            queues=[("q", pb.Queue(name="q", width=3).SerializeToString())],
        )
    )
    j.write(Batch(statuses=[(_status("A", pb.JOB_STATE_SUCCEEDED), "A")]))
    j.close()
    again = SqliteJournal(tmp_path)
    again.open()
    rec = again.load(recover=False)
    assert [(job.id, job.payload, job.state) for job in rec.jobs] == [
        ("A", b"p1", pb.JOB_STATE_SUCCEEDED),
        ("B", b"p2", pb.JOB_STATE_PENDING),
    ]
    assert [(q.name, q.width) for q in rec.queues] == [("q", 3)]
    again.write(Batch(forgotten=[("A",)]))
    assert [job.id for job in again.load(recover=False).jobs] == ["B"]
    again.close()


def test_damaged_record_is_named_unless_recovering(tmp_path: Path) -> None:
    j = SqliteJournal(tmp_path)
    j.open()
    j.write(Batch(new_jobs=[("A", b"", _status("A")), ("B", b"", b"\xff\xff\xff")]))
    with pytest.raises(JournalError, match=r"journal.sqlite3: job 'B' has a damaged record"):
        j.load(recover=False)
    rec = j.load(recover=True)
    assert [job.id for job in rec.jobs] == ["A"]
    assert rec.skipped == ["B"]
    j.close()


def test_garbage_file_is_refused_with_its_name(tmp_path: Path) -> None:
    (tmp_path / "journal.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalError, match=r"journal\.sqlite3: not a usable dispatchd journal"):
        SqliteJournal(tmp_path).open()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    j = SqliteJournal(tmp_path)
    j.open()
    j.close()
    db = sqlite3.connect(tmp_path / "journal.sqlite3")
    db.execute("UPDATE meta SET value='99' WHERE key='schema'")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match="schema version 99"):
        SqliteJournal(tmp_path).open()


def _poke(path: Path, sql: str, *args: object) -> None:
    db = sqlite3.connect(path)
    db.execute(sql, args)
    db.commit()
    db.close()


def test_a_changed_status_or_queue_fails_its_checksum(tmp_path: Path) -> None:
    j = SqliteJournal(tmp_path)
    j.open()
    queue = pb.Queue(name="q", width=3).SerializeToString()
    j.write(Batch(new_jobs=[("A", b"p", _status("A"))], queues=[("q", queue)]))
    j.close()
    path = tmp_path / "journal.sqlite3"
    # Still a valid Job message, with another priority: only the checksum can tell.
    other = pb.Job(id="A", queue="q", priority=7).SerializeToString()
    _poke(path, "UPDATE jobs SET status = ? WHERE id = 'A'", other)
    j.open()
    with pytest.raises(JournalError, match=r"job 'A' has a damaged record .*its status"):
        j.load(recover=False)
    assert j.load(recover=True).skipped == ["A"]
    j.close()
    _poke(path, "UPDATE queues SET settings = ?", pb.Queue(name="q", width=4).SerializeToString())
    j.open()
    with pytest.raises(JournalError, match=r"queue 'q' has a damaged record .*its settings"):
        j.load(recover=True)  # a queue is never dropped
    j.close()


def test_a_schema_1_journal_gets_checksums_on_open(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "journal.sqlite3")
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE queues (name TEXT PRIMARY KEY, settings BLOB NOT NULL);
        CREATE TABLE jobs (id TEXT PRIMARY KEY, payload BLOB NOT NULL, status BLOB NOT NULL)
            WITHOUT ROWID;
        INSERT INTO meta VALUES ('schema', '1');
        """
    )
    db.execute("INSERT INTO jobs VALUES ('A', ?, ?)", (b"old payload", _status("A")))
    db.execute("INSERT INTO queues VALUES ('q', ?)", (pb.Queue(name="q").SerializeToString(),))
    db.commit()
    db.close()
    j = SqliteJournal(tmp_path)
    j.open()
    rec = j.load(recover=False)
    assert [(job.id, job.payload) for job in rec.jobs] == [("A", b"old payload")]
    assert [q.name for q in rec.queues] == ["q"]
    j.write(Batch(new_jobs=[("B", b"new", _status("B"))]))
    j.close()
    db = sqlite3.connect(tmp_path / "journal.sqlite3")
    assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)
    db.close()
    _poke(tmp_path / "journal.sqlite3", "UPDATE jobs SET payload = ? WHERE id = 'A'", b"0ld")
    j.open()
    with pytest.raises(JournalError, match=r"job 'A' has a damaged record .*its payload"):
        j.load(recover=False)
    j.close()
