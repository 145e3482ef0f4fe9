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
