"""The drain snapshot file: round trip, atomic replace, clear refusal of bad files."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from dispatchd import convert
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
    body = snapshot_pb2.Snapshot(format_version=99).SerializeToString()
    crc = zlib.crc32(body)
    trailer = snapshot_pb2.Snapshot(content_crc32=crc, complete=True).SerializeToString()
    store.path.write_bytes(body + trailer)
    with pytest.raises(SnapshotError, match="format version 99"):
        store.load()


def test_truncated_snapshot_is_refused_naming_the_offset(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.save(SnapshotData([], [_job("a", 1), _job("b", 2)]), now=1.0)
    whole = store.path.read_bytes()
    store.path.write_bytes(whole[:-10])
    with pytest.raises(SnapshotError, match=f"at offset {len(whole) - 10}"):
        store.load()
    assert store.load(recover=True) is None
    assert not store.path.exists()
    assert store.path.with_suffix(".pb.damaged").exists()


def test_flipped_byte_is_a_crc_mismatch(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.save(SnapshotData([], [_job("a", 1)]), now=1.0)
    data = bytearray(store.path.read_bytes())
    data[-5] ^= 0xFF
    store.path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="CRC mismatch"):
        store.load()


def test_the_file_is_one_plain_snapshot_message(tmp_path: Path) -> None:
    """Any protobuf reader can parse it; the trailer is just two more fields."""
    store = SnapshotStore(tmp_path)
    store.save(SnapshotData([("q", QueueSettings(width=2))], [_job("a", 1)]), now=1.0)
    msg = snapshot_pb2.Snapshot()
    msg.ParseFromString(store.path.read_bytes())
    assert (msg.format_version, msg.complete, [j.id for j in msg.jobs]) == (1, True, ["a"])


def test_a_file_without_the_end_marker_is_truncated(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.path.write_bytes(snapshot_pb2.Snapshot(format_version=1).SerializeToString())
    with pytest.raises(SnapshotError, match="no end marker"):
        store.load()


def test_a_snapshot_written_a_job_at_a_time_is_the_one_message_it_stands_for(
    tmp_path: Path,
) -> None:
    """The drain writes the file field by field (no million-job message in memory); the
    bytes are those of the whole Snapshot serialized at once, trailer aside."""
    store = SnapshotStore(tmp_path)
    jobs = [_job("a", 5), _job("b", 1), _job("c", 5)]
    queues = [("q", QueueSettings(width=3)), ("r", QueueSettings(width=1))]
    store.save(SnapshotData(queues=queues, jobs=jobs), now=1_700_000_002.0)
    raw = store.path.read_bytes()
    whole = snapshot_pb2.Snapshot(format_version=1, create_time=convert.timestamp(1_700_000_002.0))
    whole.queues.extend(convert.settings_to_pb(n, s) for n, s in queues)
    order = [0, 2, 1]  # dispatch order: priority, then submit order
    whole.jobs.extend(convert.job_to_pb(jobs[i]) for i in order)
    whole.submit_order.extend(order)
    body = whole.SerializeToString()
    assert raw.startswith(body)
    assert zlib.crc32(body) == store.read_message().content_crc32
