"""The JournalWriter's group commit against a real SQLite journal, driven by a real engine."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from dispatchd.embedded.journaling import JournalWriter
from dispatchd.engine import Engine, JobFailure, JobState, NewJob, ObserverChain
from dispatchd.store.journal import SqliteJournal
from dispatchd_client.v1 import dispatcher_pb2 as pb


def _journaled(tmp_path: Path) -> tuple[Engine, JournalWriter, SqliteJournal]:
    chain = ObserverChain([])
    engine = Engine(observer=chain, rng=random.Random(0))
    journal = SqliteJournal(tmp_path)
    journal.open()
    writer = JournalWriter(engine, journal)
    chain.add(writer)
    return engine, writer, journal


def _states(journal: SqliteJournal) -> dict[str, int]:
    return {j.id: j.state for j in journal.load(recover=False).jobs}


async def test_a_job_finished_and_retried_in_one_commit_is_written_as_retried(
    tmp_path: Path,
) -> None:
    """The writer serializes finished jobs from the record the engine handed over; a
    RetryJob before the commit must win over that record."""
    engine, writer, journal = _journaled(tmp_path)
    [job] = engine.submit([NewJob("q", b"p")], 0.0)
    w = engine.connect("w", ["q"], 1, 0.0)
    [(_, [lease])] = engine.dispatch(0.0)
    engine.complete(w, job.id, lease.lease_id, JobFailure("no", retryable=False), 1.0)
    assert engine.get_job(job.id).state is JobState.FAILED
    engine.retry(job.id, 2.0)  # same loop tick: one commit carries both changes
    await writer.sync()
    assert _states(journal) == {job.id: pb.JOB_STATE_PENDING}
    await writer.close()


async def test_finished_jobs_are_written_with_their_outcome_and_payload_once(
    tmp_path: Path,
) -> None:
    engine, writer, journal = _journaled(tmp_path)
    jobs = engine.submit([NewJob("q", f"{i}".encode()) for i in range(3)], 0.0)
    await writer.sync()
    w = engine.connect("w", ["q"], 3, 1.0)
    [(_, leases)] = engine.dispatch(1.0)
    for lease in leases:
        engine.complete(w, lease.job.id, lease.lease_id, b"done", 2.0)
    await writer.sync()
    recovered = {j.id: j for j in journal.load(recover=False).jobs}
    assert {k: j.state for k, j in recovered.items()} == {
        j.id: pb.JOB_STATE_SUCCEEDED for j in jobs
    }
    assert {k: (j.payload, j.result, j.attempt) for k, j in recovered.items()} == {
        j.id: (j.payload, b"done", 1) for j in jobs
    }
    await writer.close()


async def test_closing_twice_at_once_closes_once(tmp_path: Path) -> None:
    """A drain's end and a stop may both close the writer: the second call waits for the
    first (it used to hand the journal's close to a writer thread already shut down)."""
    engine, writer, _ = _journaled(tmp_path)
    [job] = engine.submit([NewJob("q", b"p")], 0.0)
    assert list(await asyncio.gather(writer.close(), writer.close())) == [True, True]
    assert await writer.close()
    reopened = SqliteJournal(tmp_path)
    reopened.open()
    assert {j.id for j in reopened.load(recover=False).jobs} == {job.id}
