"""`dispatchd export` and `dispatchd import`: jobs as protobuf JSON, one job a line.

For backup and migration while the server is stopped (the journal has one writer).
Queue settings go to a separate file (``--queues``), one queue a line, so the jobs
file stays "one dispatchd.v1.Job per line" for any tool that reads it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO, TypeVar

from google.protobuf import json_format

from dispatchd import convert
from dispatchd.engine import EngineError
from dispatchd.store.journal import Batch, JournalError, SqliteJournal
from dispatchd.store.snapshot import SnapshotError, SnapshotStore
from dispatchd_client.v1 import dispatcher_pb2 as pb

M = TypeVar("M", pb.Job, pb.Queue)


class TransferError(Exception):
    """Export or import cannot proceed; the message says why and where."""


def _read_state(data_dir: Path) -> tuple[list[pb.Queue], list[pb.Job]]:
    journal = SqliteJournal(data_dir)
    if journal.exists():
        journal.open()
        try:
            recovered = journal.load(recover=False)
        finally:
            journal.close()
        return recovered.queues, recovered.jobs
    data = SnapshotStore(data_dir).load()
    if data is None:
        raise TransferError(f"{data_dir}: no journal.sqlite3 and no snapshot.pb to export")
    queues = [convert.settings_to_pb(name, s) for name, s in data.queues]
    return queues, [convert.job_to_pb(j) for j in data.jobs]


def export(data_dir: Path, out: TextIO, queues_out: TextIO | None) -> int:
    queues, jobs = _read_state(data_dir)
    for job in jobs:
        out.write(json_format.MessageToJson(job, indent=None) + "\n")
    if queues_out is not None:
        for q in queues:
            queues_out.write(json_format.MessageToJson(q, indent=None) + "\n")
    return len(jobs)


def _parse_lines(kind: type[M], lines: Iterable[str], source: str) -> list[M]:
    out: list[M] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json_format.Parse(line, kind()))
        except json_format.ParseError as e:
            raise TransferError(f"{source}:{n}: not a {kind.DESCRIPTOR.full_name} ({e})") from None
    return out


def import_(data_dir: Path, lines: Iterable[str], queue_lines: Iterable[str] | None) -> int:
    """Adds (or replaces, by id) the given jobs and queue settings in the journal; all or
    nothing: a bad line imports nothing."""
    jobs = _parse_lines(pb.Job, lines, "jobs")
    queues = _parse_lines(pb.Queue, queue_lines or [], "queues")
    for n, job in enumerate(jobs, 1):
        if not job.id or not job.queue:
            raise TransferError(f"jobs:{n}: a job needs an id and a queue")
        try:
            convert.job_from_pb(job)
        except EngineError as e:
            raise TransferError(f"jobs:{n}: invalid job ({e})") from None
    journal = SqliteJournal(data_dir)
    try:
        journal.open()
    except JournalError as e:
        raise TransferError(str(e)) from None
    try:
        rows = []
        for job in jobs:
            payload = job.payload
            status = pb.Job()
            status.CopyFrom(job)
            status.payload = b""
            rows.append((job.id, payload, status.SerializeToString()))
        journal.write(
            Batch(new_jobs=rows, queues=[(q.name, q.SerializeToString()) for q in queues])
        )
    finally:
        journal.close()
    return len(jobs)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="dispatchd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write every job as protobuf JSON, one a line")
    ex.add_argument("--data-dir", type=Path, required=True)
    ex.add_argument("--queues", type=Path, help="also write queue settings to this file")
    im = sub.add_parser("import", help="read jobs (protobuf JSON lines) from stdin or --input")
    im.add_argument("--data-dir", type=Path, required=True)
    im.add_argument("--input", type=Path, help="jobs file (default: standard input)")
    im.add_argument("--queues", type=Path, help="queue settings file from export --queues")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            with contextlib.ExitStack() as stack:
                qout = stack.enter_context(open(args.queues, "w")) if args.queues else None
                n = export(args.data_dir, sys.stdout, qout)
            print(f"dispatchd: exported {n} jobs", file=sys.stderr)
        else:
            lines = args.input.read_text().splitlines() if args.input else sys.stdin
            qlines = args.queues.read_text().splitlines() if args.queues else None
            n = import_(args.data_dir, lines, qlines)
            print(f"dispatchd: imported {n} jobs into {args.data_dir}", file=sys.stderr)
    except (TransferError, JournalError, SnapshotError, OSError) as e:
        print(f"dispatchd: {e}", file=sys.stderr)
        return 1
    return 0
