"""Group commit of engine changes into the journal.

An engine observer marks jobs and queues dirty as they change; a commit takes every
dirty record at once, serializes the live ones on the event loop (where the engine lives;
finished jobs are frozen records, serialized on the writer thread) and writes them in one
SQLite transaction on that thread. While one commit runs, the
next batch gathers, so a thousand concurrent Submits share a handful of fsyncs.
``sync()`` returns once everything marked before it is durable: Submit and every change
an operator or a producer is answered for (queue settings, cancel, retry, reprioritize,
purge, delete) await it; dispatches and results do not (a crash before their commit loses
nothing that was promised: the job runs again).

A commit that fails (a full disk, an I/O error) is not the end: its records stay dirty,
the callers waiting for it hear the cause, ``trouble`` says it (the backend reports
NOT_SERVING meanwhile), and the commit is tried again with a growing pause until one
succeeds, which clears the trouble: freeing the disk is enough, no restart needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from dispatchd import convert, flows_convert, schedule_convert
from dispatchd.engine import Engine, EngineObserver, FinishedJob, JobRecord, LeaseRecord
from dispatchd.engine.errors import NotFound
from dispatchd.engine.model import QueueSettings
from dispatchd.engine.schedules import ScheduleRecord
from dispatchd.observability.metrics import StorageStats
from dispatchd.store.journal import Batch, SqliteJournal
from dispatchd_client.v1 import dispatcher_pb2 as pb

log = logging.getLogger("dispatchd.journal")

#: Pauses between tries of a commit that failed: from the first to the longest, doubling.
RETRY_FIRST_SECONDS = 0.05
RETRY_LONGEST_SECONDS = 2.0


class JournalUnavailable(OSError):
    """The journal cannot be written now; the message says why (the error SQLite or the
    operating system gave: "database or disk is full", "No space left on device")."""


def cause_of(error: BaseException) -> str:
    """What went wrong, in the words of whoever noticed (SQLite, the kernel)."""
    return str(error) or type(error).__name__


class JournalWriter(EngineObserver):
    def __init__(
        self,
        engine: Engine,
        journal: SqliteJournal,
        on_trouble: Callable[[str | None], None] = lambda trouble: None,
        stats: StorageStats | None = None,
    ) -> None:
        self._engine = engine
        self._journal = journal
        self._stats = stats or StorageStats()
        self._on_trouble = on_trouble
        self._new: set[str] = set()
        self._changed: set[str] = set()
        # Jobs that finished since the last commit, as the engine handed them over: their
        # record is final, so _take serializes it without looking it up and unpacking the
        # engine's stored form again.
        self._finished: dict[str, FinishedJob] = {}
        self._forgotten: set[str] = set()
        self._queues: set[str] = set()
        self._schedules: set[str] = set()
        self._deleted_schedules: set[str] = set()
        # Batches (engine/flows.py), as the engine last reported them: marked in the same
        # engine call as the job transitions that moved them (and the callback jobs that
        # call submitted), so one commit holds both: a callback fires exactly once.
        self._batches: dict[str, tuple[str, str]] = {}  # row id -> (queue, batch id)
        self._deleted_batches: set[str] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="dispatchd-journal")
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.busy = False  # a commit is on its way to disk
        self.trouble: str | None = None
        """Why the last commit failed, while no later one succeeded; None: all is well."""
        self._closing = False
        self._closed: asyncio.Task[bool] | None = None  # the one close, however many ask

    # ---- marking (engine observer) ------------------------------------------------

    def jobs_submitted(self, jobs: Sequence[JobRecord]) -> None:
        for job in jobs:
            self._new.add(job.id)
            self._forgotten.discard(job.id)
        self._kick()

    def _mark(self, job_id: str) -> None:
        """A live job changed (a finished one may come back through RetryJob)."""
        self._finished.pop(job_id, None)
        if job_id not in self._new:
            self._changed.add(job_id)
        self._kick()

    def job_dispatched(self, lease: LeaseRecord) -> None:
        self._mark(lease.job.id)

    def job_finished(self, job: FinishedJob) -> None:
        self._mark(job.id)
        self._finished[job.id] = job

    def job_requeued(self, job: JobRecord, reason: str) -> None:
        self._mark(job.id)

    def job_retrying(self, job: JobRecord, due: float) -> None:
        self._mark(job.id)

    def job_changed(self, job: JobRecord) -> None:
        self._mark(job.id)

    def jobs_forgotten(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            self._new.discard(job_id)
            self._changed.discard(job_id)
            self._finished.pop(job_id, None)
            self._forgotten.add(job_id)
        self._kick()

    def quota_used(self, queue: str) -> None:
        """A dispatch was counted in the queue's quota windows: its record (with the
        counts) is written with the next commit."""
        self._queues.add(queue)
        self._kick()

    def queue_changed(self, name: str, settings: QueueSettings) -> None:
        self._queues.add(name)
        self._kick()

    def schedule_changed(self, schedule: ScheduleRecord) -> None:
        # Marked in the same engine call as the jobs its firing submitted: one commit
        # takes both, so a crash never keeps the job without the cursor move or back.
        self._schedules.add(schedule.id)
        self._deleted_schedules.discard(schedule.id)
        self._kick()

    def schedule_deleted(self, schedule_id: str) -> None:
        self._schedules.discard(schedule_id)
        self._deleted_schedules.add(schedule_id)

    def queue_deleted(self, name: str) -> None:
        self._queues.add(name)  # _take finds it gone and deletes its row
        self._kick()

    def batch_changed(self, queue: str, batch_id: str) -> None:
        key = batch_key(queue, batch_id)
        self._batches[key] = (queue, batch_id)
        self._deleted_batches.discard(key)
        self._kick()

    def batch_deleted(self, queue: str, batch_id: str) -> None:
        key = batch_key(queue, batch_id)
        self._batches.pop(key, None)
        self._deleted_batches.add(key)
        self._kick()

    # ---- committing -----------------------------------------------------------------

    def _dirty(self) -> bool:
        return bool(
            self._new
            or self._changed
            or self._forgotten
            or self._queues
            or self._schedules
            or self._deleted_schedules
            or self._batches
            or self._deleted_batches
        )

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # restore at start-up: nothing to write, the rows are there
            self._task = loop.create_task(self._commit_loop())

    def check(self) -> None:
        """Raises JournalUnavailable while commits fail: a change made now would not be
        durable, so the caller refuses it before making it."""
        if self.trouble is not None:
            raise JournalUnavailable(f"the journal cannot be written: {self.trouble}")

    async def sync(self) -> None:
        """Waits until everything marked so far is durable; raises JournalUnavailable if
        the commit carrying it failed (the change stays in memory and is written by a later
        commit, once one succeeds)."""
        self.check()
        if not self._dirty() and (self._task is None or self._task.done()):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._kick()
        await fut

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        pause = RETRY_FIRST_SECONDS
        while self._dirty() or self._waiters:
            batch, later = self._take()
            waiters, self._waiters = self._waiters, []
            try:
                if batch or later.rows:
                    self.busy = True
                    start = time.perf_counter()
                    try:
                        await loop.run_in_executor(self._executor, self._write, batch, later)
                    finally:
                        self.busy = False
                    # Timed on the loop: what a Submit waiting for this commit waits.
                    self._stats.journal_commit.observe(time.perf_counter() - start)
                    self._stats.journal_batch.observe(len(batch) + later.rows)
                    self.commits += 1
            except Exception as e:  # noqa: BLE001 - any failure must reach every waiter
                # (disk full, I/O error, a closed journal); a waiter left pending would hang
                # its Submit until the caller's deadline.
                self._stats.journal_failures += 1
                self._failed(e, batch, later, waiters)
                if self._closing:
                    return
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_LONGEST_SECONDS)
                continue
            pause = RETRY_FIRST_SECONDS
            if self.trouble is not None:
                log.warning("the journal is written again: %s is over", self.trouble)
                self.trouble = None
                self._on_trouble(None)
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    def _failed(
        self, error: Exception, batch: Batch, later: _Later, waiters: list[asyncio.Future[None]]
    ) -> None:
        """A commit failed: its records are dirty again (the next try writes them as they
        are then), its waiters hear why, and the trouble is reported once per outage."""
        cause = cause_of(error)
        if self.trouble is None:
            log.error(
                "journal commit of %d records failed: %s; retrying until it succeeds",
                len(batch) + later.rows,
                cause,
            )
            self._on_trouble(f"the journal cannot be written: {cause}")
        self.trouble = cause
        self._new.update(job_id for job_id, _, _ in batch.new_jobs)
        self._new.update(job.id for job in later.new)
        self._changed.update(job_id for _, job_id in batch.statuses)
        self._changed.update(job.id for job in later.changed)
        self._forgotten.update(job_id for (job_id,) in batch.forgotten)
        self._queues.update(name for name, _ in batch.queues)
        self._queues.update(batch.deleted_queues)
        for key, blob in batch.batches:  # rewritten by the next try, as they are then
            view = flows_convert.batch_from_pb(_parse_batch(blob))
            self._batches.setdefault(key, (view.queue, view.batch_id))
        self._deleted_batches.update(key for (key,) in batch.deleted_batches)
        failure = JournalUnavailable(f"the journal cannot be written: {cause}")
        for w in waiters:
            if not w.done():
                w.set_exception(failure)

    def _take(self) -> tuple[Batch, _Later]:
        """The rows of every dirty record. A job's payload goes into its row once, when it
        is new; later changes rewrite only its status (the Job message without payload),
        and several changes inside one commit cost one status. Live jobs are encoded here,
        on the loop that changes them; finished ones are frozen records, handed to the
        writer thread to encode (``_write``), so the loop does not spend its time there."""
        engine, finished = self._engine, self._finished
        batch, later = Batch(), _Later()
        for job_id in self._new:
            done = finished.get(job_id)
            if done is not None:
                later.new.append(done)
                continue
            job = _current(engine, job_id)
            if job is not None:
                batch.new_jobs.append((job_id, job.payload, _status(job)))
        for job_id in self._changed:
            done = finished.get(job_id)
            if done is not None:
                later.changed.append(done)
                continue
            job = _current(engine, job_id)
            if job is not None:
                batch.statuses.append((_status(job), job_id))
        self._finished = {}
        batch.forgotten = [(job_id,) for job_id in self._forgotten]
        for name in self._queues:
            try:
                view = engine.get_queue(name)
            except NotFound:  # deleted (DeleteQueue): its row goes
                batch.deleted_queues.append(name)
                continue
            record = convert.settings_to_pb(
                name, view.settings, usage=view.window_usage, key_usage=view.key_window_usage
            )
            batch.queues.append((name, record.SerializeToString()))
        for schedule_id in self._schedules:
            rec = engine.get_schedule(schedule_id)
            stored = schedule_convert.schedule_to_pb(rec, next_fires=0).SerializeToString()
            batch.schedules.append((schedule_id, stored))
        batch.deleted_schedules = [(i,) for i in self._deleted_schedules]
        for key, (queue, batch_id) in self._batches.items():
            try:
                batch_view = engine.get_batch(queue, batch_id)
            except NotFound:  # forgotten meanwhile: its row goes (batch_deleted marked it)
                continue
            blob = flows_convert.batch_to_pb(batch_view).SerializeToString()
            batch.batches.append((key, blob))
        batch.deleted_batches = [(key,) for key in self._deleted_batches]
        self._batches, self._deleted_batches = {}, set()
        self._new, self._changed, self._forgotten, self._queues = set(), set(), set(), set()
        self._schedules, self._deleted_schedules = set(), set()
        return batch, later

    def _write(self, batch: Batch, later: _Later) -> None:
        """On the writer thread: the finished jobs' rows, then one transaction."""
        batch.new_jobs.extend((job.id, job.payload, _status(job)) for job in later.new)
        batch.statuses.extend((_status(job), job.id) for job in later.changed)
        self._journal.write(batch)

    async def close(self) -> bool:
        """Commits what is dirty (one last try when commits were failing) and closes the
        journal; returns whether everything was written. Never hangs on a disk that stays
        full: what could not be written is logged, and the journal keeps the state of its
        last commit. A second call (a drain's end racing a stop) waits for the first one
        instead of using the writer thread after it was shut down."""
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_task(self._close())
        return await asyncio.shield(self._closed)

    async def _close(self) -> bool:
        self._closing = True
        task = self._task
        if task is not None and not task.done():
            if self.trouble is not None and not self.busy:
                task.cancel()  # pausing between tries: the last try is below
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._dirty():
            self._task = asyncio.get_running_loop().create_task(self._commit_loop())
            await self._task
        written = not self._dirty()
        if not written:
            log.error(
                "closing the journal with changes it could not write (%s): it holds the "
                "state of its last commit",
                self.trouble,
            )
        await asyncio.get_running_loop().run_in_executor(self._executor, self._journal.close)
        self._executor.shutdown(wait=True)
        return written


@dataclass(slots=True)
class _Later:
    """Finished jobs of one commit, encoded on the writer thread."""

    new: list[FinishedJob] = field(default_factory=list)
    changed: list[FinishedJob] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.new) + len(self.changed)


def batch_key(queue: str, batch_id: str) -> str:
    """A batch's journal row id: unique per (queue, batch id)."""
    return f"{queue}\x00{batch_id}"


def _parse_batch(blob: bytes) -> pb.Batch:
    msg = pb.Batch()
    msg.ParseFromString(blob)
    return msg


def _status(job: JobRecord | FinishedJob) -> bytes:
    """A job's status row: the Job message without its payload."""
    return convert.job_to_pb(job, with_payload=False).SerializeToString()


def _current(engine: Engine, job_id: str) -> JobRecord | FinishedJob | None:
    try:
        return engine.get_job(job_id)
    except NotFound:  # forgotten meanwhile: nothing to write
        return None
