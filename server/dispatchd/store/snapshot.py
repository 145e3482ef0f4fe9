"""The drain snapshot: unfinished jobs and queue settings in one versioned protobuf file.

Written atomically (temp file, fsync, rename, fsync of the directory) so a crash
mid-write leaves the previous file intact. Never pickle: the format is the
``dispatchd.v1.Snapshot`` message, readable from any language; its last fields are a
CRC-32 of the bytes before them and an end marker.
"""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError

from dispatchd import convert, flows_convert, schedule_convert
from dispatchd.engine import EngineError, JobRecord, JobState, QueueSettings
from dispatchd.engine.flows import BatchView
from dispatchd.engine.schedules import ScheduleRecord
from dispatchd_client.v1 import snapshot_pb2

log = logging.getLogger("dispatchd.snapshot")

FORMAT_VERSION = 1
SNAPSHOT_NAME = "snapshot.pb"
# A truncated protobuf often parses, silently shorter: the writer appends a trailer
# (content_crc32, complete) after the body so the reader can tell, while the file stays
# one plain Snapshot message for any protobuf reader.


class SnapshotError(Exception):
    """The snapshot file cannot be read; the message names the file and the reason."""


@dataclass(frozen=True, slots=True)
class SnapshotData:
    queues: list[tuple[str, QueueSettings]]
    jobs: list[JobRecord]
    """In submit order (the engine's unfinished_jobs()); the file holds them in dispatch
    order with each one's place in this list."""
    schedules: list[ScheduleRecord] = field(default_factory=list)
    window_usage: dict[str, convert.WindowUsage] = field(default_factory=dict)
    """Queue name -> its quota windows' counts (kept in each Queue's windows)."""
    key_window_usage: dict[str, convert.KeyWindowUsage] = field(default_factory=dict)
    """Queue name -> its fairness keys' quota counts (Queue.key_window_counts)."""
    batches: list[BatchView] = field(default_factory=list)


class SnapshotStore:
    """Reads and writes ``<data_dir>/snapshot.pb``; keeps the restored file as
    ``snapshot.pb.restored`` until the next snapshot replaces it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / SNAPSHOT_NAME
        self.restored_path = data_dir / (SNAPSHOT_NAME + ".restored")

    def load(self, recover: bool = False) -> SnapshotData | None:
        """Returns the snapshot's content, or None when there is no snapshot. A damaged
        file raises SnapshotError naming the offset, unless ``recover`` drops it."""
        try:
            msg = self._parse(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except SnapshotError:
            if not recover:
                raise
            damaged = self.path.with_suffix(".pb.damaged")
            os.replace(self.path, damaged)
            log.warning("--recover-truncated: moved the damaged snapshot to %s", damaged)
            return None
        if msg.format_version == 0 or msg.format_version > FORMAT_VERSION:
            raise SnapshotError(
                f"{self.path}: format version {msg.format_version}; this server reads "
                f"1..{FORMAT_VERSION}"
            )
        try:
            jobs = [convert.job_from_pb(j) for j in msg.jobs]
            if msg.submit_order:
                if sorted(msg.submit_order) != list(range(len(jobs))):
                    raise SnapshotError(f"{self.path}: invalid content (submit_order)")
                by_rank = dict(zip(msg.submit_order, jobs, strict=True))
                jobs = [by_rank[i] for i in range(len(jobs))]
            return SnapshotData(
                queues=[(q.name, convert.settings_from_pb(q)) for q in msg.queues],
                jobs=jobs,
                schedules=[schedule_convert.schedule_from_stored(s) for s in msg.schedules],
                window_usage={q.name: convert.window_usage(q) for q in msg.queues if q.windows},
                key_window_usage={
                    q.name: convert.key_window_usage(q) for q in msg.queues if q.key_window_counts
                },
                batches=[flows_convert.batch_from_pb(b) for b in msg.batches],
            )
        except EngineError as e:
            raise SnapshotError(f"{self.path}: invalid content ({e})") from None

    def _parse(self, raw: bytes) -> snapshot_pb2.Snapshot:
        msg = snapshot_pb2.Snapshot()
        try:
            msg.ParseFromString(raw)
        except DecodeError as e:
            raise SnapshotError(
                f"{self.path}: truncated or damaged: unreadable at offset {len(raw)} ({e}); "
                "start with --recover-truncated to drop it"
            ) from None
        if not msg.complete:
            raise SnapshotError(
                f"{self.path}: truncated at offset {len(raw)} (no end marker); start with "
                "--recover-truncated to drop it"
            )
        trailer = _trailer(msg.content_crc32)
        body = raw[: len(raw) - len(trailer)]
        if not raw.endswith(trailer) or zlib.crc32(body) != msg.content_crc32:
            raise SnapshotError(
                f"{self.path}: damaged between offsets 0 and {len(body)} (CRC mismatch); "
                "start with --recover-truncated to drop it"
            )
        return msg

    def read_message(self) -> snapshot_pb2.Snapshot:
        """The raw Snapshot message (for tools and tests), header checked."""
        return self._parse(self.path.read_bytes())

    def mark_restored(self) -> None:
        """Moves the loaded snapshot aside so a crash later does not restore it twice."""
        os.replace(self.path, self.restored_path)
        _fsync_dir(self.path.parent)

    def save(self, data: SnapshotData, now: float) -> int:
        """Writes the snapshot atomically; returns its size in bytes.

        Written a job at a time: the fields of a Snapshot serialized one after another are
        the bytes of the whole message (protobuf writes fields in number order and a
        repeated field as its entries one after another), so the file is what one
        SerializeToString would make, without a million Job messages in memory at once at
        the end of a drain."""
        head = snapshot_pb2.Snapshot(
            format_version=FORMAT_VERSION, create_time=convert.timestamp(now)
        )
        head.queues.extend(
            convert.settings_to_pb(
                name,
                s,
                usage=data.window_usage.get(name, ()),
                key_usage=data.key_window_usage.get(name, ()),
            )
            for name, s in data.queues
        )
        order = sorted(range(len(data.jobs)), key=lambda i: _dispatch_key(data.jobs[i], i))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".pb.tmp")
        size, crc = 0, 0
        with open(tmp, "wb") as f:

            def put(raw: bytes) -> None:
                nonlocal size, crc
                f.write(raw)
                size += len(raw)
                crc = zlib.crc32(raw, crc)

            put(head.SerializeToString())
            one = snapshot_pb2.Snapshot()
            for i in order:
                one.jobs.append(convert.job_to_pb(data.jobs[i]))
                put(one.SerializeToString())
                del one.jobs[:]
            put(snapshot_pb2.Snapshot(submit_order=order).SerializeToString())
            tail = snapshot_pb2.Snapshot()
            tail.schedules.extend(
                schedule_convert.schedule_to_pb(rec, next_fires=0) for rec in data.schedules
            )
            put(tail.SerializeToString())
            batches = snapshot_pb2.Snapshot()
            batches.batches.extend(flows_convert.batch_to_pb(v) for v in data.batches)
            put(batches.SerializeToString())
            trailer = _trailer(crc)
            f.write(trailer)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self.restored_path.unlink(missing_ok=True)
        return size + len(trailer)


def _dispatch_key(job: JobRecord, rank: int) -> tuple[str, int, float, int]:
    """Where a job of the submit-ordered list goes in the file: its queue, then pending
    jobs by priority and submit order, then scheduled ones by due time."""
    if job.state is JobState.SCHEDULED and job.not_before is not None:
        return (job.queue, 1, job.not_before, rank)
    return (job.queue, 0, -job.priority, rank)


def _trailer(crc: int) -> bytes:
    """Fields 14 and 15 of Snapshot, serialized: appended to a serialized Snapshot they
    merge into it (protobuf concatenation), and they always take the same bytes."""
    return snapshot_pb2.Snapshot(content_crc32=crc, complete=True).SerializeToString()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
