"""The drain snapshot file: round trip, atomic replace, clear refusal of bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatchd.engine import JobFailure, JobRecord, QueueSettings
from dispatchd.store.snapshot import SnapshotData, SnapshotError, SnapshotStore
from dispatchd_client.v1 import snapshot_pb2


def _job(job_id: str, priority: int) -> JobRecord:
    return JobRecord(
        id=job_id,
        queue="q",
        payload=b"\x00\xffbytes",
        priority=priority,
        headers={"traceparent": "00-abc-def-01"},
        content_type="application/octet-stream",
        seq=0,
        submit_time=1_700_000_000.25,
        attempt=2,
        dispatch_time=1_700_000_001.5,
        first_dispatch_time=1_700_000_000.75,
        error=JobFailure("earlier try", True, "Timeout"),
    )


def test_round_trip_keeps_jobs_and_settings(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    assert store.load() is None
    data = SnapshotData(
        queues=[("q", QueueSettings(width=3, paused=True, lease_seconds=12.5))],
        jobs=[_job("a", 5), _job("b", 1)],
    )
    size = store.save(data, now=1_700_000_002.0)
    assert size == store.path.stat().st_size
    loaded = store.load()
    assert loaded is not None
    assert loaded.queues == data.queues
    assert [(j.id, j.priority) for j in loaded.jobs] == [("a", 5), ("b", 1)]
    job = loaded.jobs[0]
    original = data.jobs[0]
    for field in ("payload", "headers", "content_type", "attempt", "error"):
        assert getattr(job, field) == getattr(original, field)
    assert job.submit_time == pytest.approx(original.submit_time)
    assert job.first_dispatch_time == pytest.approx(original.first_dispatch_time)


def test_restored_file_is_kept_aside_until_the_next_snapshot(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.save(SnapshotData([], [_job("a", 0)]), now=1.0)
    store.mark_restored()
    assert not store.path.exists()
    assert store.restored_path.exists()
    assert store.load() is None
    store.save(SnapshotData([], []), now=2.0)
    assert not store.restored_path.exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_garbage_is_refused_with_the_file_name(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.path.write_bytes(b"\xff\xff\xff not protobuf")
    with pytest.raises(SnapshotError, match=str(store.path)):
        store.load()


def test_newer_format_is_refused(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.path.write_bytes(snapshot_pb2.Snapshot(format_version=99).SerializeToString())
    with pytest.raises(SnapshotError, match="format version 99"):
        store.load()
