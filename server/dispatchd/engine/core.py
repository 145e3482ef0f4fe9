"""The dispatch engine: every scheduling decision, with time passed in as ``now``.

Pure and synchronous: no I/O, no clock, no asyncio. The service layer calls it and
turns its return values into messages. Every call either succeeds or raises an
EngineError before changing anything.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import replace

from dispatchd.engine import limits as lim
from dispatchd.engine.deadlines import DeadlineHeap
from dispatchd.engine.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from dispatchd.engine.ids import IdSource
from dispatchd.engine.limits import EngineLimits
from dispatchd.engine.listing import page_of_jobs
from dispatchd.engine.model import (
    FinishedJob,
    JobFailure,
    JobRecord,
    JobState,
    JobView,
    LeaseRecord,
    NewJob,
    QueueSettings,
    QueueView,
    Rejection,
)
from dispatchd.engine.observer import EngineObserver
from dispatchd.engine.queue import QueueState
from dispatchd.engine.workers import WorkerRecord

Outcome = bytes | JobFailure
Dispatches = list[tuple[WorkerRecord, list[LeaseRecord]]]


class Engine:
    """Queues, leases and workers of one dispatchd server."""

    def __init__(
        self,
        limits: EngineLimits | None = None,
        observer: EngineObserver | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.limits = limits or EngineLimits()
        self.observer = observer or EngineObserver()
        self._ids = IdSource(rng or random.SystemRandom())
        self._queues: dict[str, QueueState] = {}
        self._jobs: dict[str, JobRecord] = {}
        self._workers: dict[int, WorkerRecord] = {}
        self._leases: dict[str, LeaseRecord] = {}
        self._deadlines = DeadlineHeap()
        # Finished jobs in finish order, packed into plain tuples the collector untracks
        # (FinishedJob.pack); FinishedJob views are unpacked on access.
        self._done: OrderedDict[str, tuple[object, ...]] = OrderedDict()
        self._with_pending: dict[str, None] = {}  # ordered set of queues with work
        self._seq = 0
        self._worker_seq = 0
        self._rr_offset = 0
        self.draining = False

    # ---- queues -------------------------------------------------------------

    def _queue(self, name: str) -> QueueState:
        q = self._queues.get(name)
        if q is None:
            raise NotFound(f"queue {name!r} does not exist")
        return q

    def _ensure_queue(self, name: str) -> QueueState:
        q = self._queues.get(name)
        if q is None:
            settings = QueueSettings(
                width=self.limits.default_width, lease_seconds=self.limits.default_lease_seconds
            )
            q = self._queues[name] = QueueState(name, settings)
            for worker in self._workers.values():
                if name in worker.queues:
                    q.subscribers.append(worker)
        return q

    def _view(self, q: QueueState) -> QueueView:
        return QueueView(
            name=q.name,
            settings=q.settings,
            pending_count=len(q.pending),
            underway_count=len(q.leases),
            worker_count=len(q.subscribers),
        )

    def get_queue(self, name: str) -> QueueView:
        lim.check_queue_name(name)
        return self._view(self._queue(name))

    def list_queues(self) -> list[QueueView]:
        return [self._view(self._queues[n]) for n in sorted(self._queues)]

    def update_queue(
        self,
        name: str,
        *,
        width: int | None = None,
        paused: bool | None = None,
        lease_seconds: float | None = None,
        create: bool = False,
    ) -> QueueView:
        """Changes take effect at once for new dispatches. Narrowing never touches
        underway jobs: it only holds back dispatches until underway < width."""
        lim.check_queue_name(name)
        if width is not None:
            lim.check_width(width)
        if lease_seconds is not None:
            lim.check_lease_seconds(lease_seconds, self.limits)
        q = self._ensure_queue(name) if create else self._queue(name)
        s = q.settings
        q.settings = QueueSettings(
            width=s.width if width is None else width,
            paused=s.paused if paused is None else paused,
            lease_seconds=s.lease_seconds if lease_seconds is None else lease_seconds,
        )
        return self._view(q)

    def pause(self, name: str) -> QueueView:
        return self.update_queue(name, paused=True)

    def resume(self, name: str, width: int | None = None) -> QueueView:
        return self.update_queue(name, paused=False, width=width)

    # ---- jobs ---------------------------------------------------------------

    def submit(self, specs: Sequence[NewJob], now: float) -> list[JobRecord]:
        """Admits all of ``specs`` or, when any is invalid, none of them."""
        if self.draining:
            raise Unavailable("server is draining and accepts no new jobs; retry on another")
        if not specs:
            raise InvalidArgument("no jobs given")
        if len(specs) > self.limits.max_batch_jobs:
            raise InvalidArgument(
                f"{len(specs)} jobs in one batch; the limit is {self.limits.max_batch_jobs}"
            )
        many = len(specs) > 1
        for i, spec in enumerate(specs):
            lim.check_new_job(spec, self.limits, i if many else None)
        jobs = [self._admit(spec, now) for spec in specs]
        self.observer.jobs_submitted(jobs)
        return jobs

    def _admit(self, spec: NewJob, now: float) -> JobRecord:
        self._seq += 1
        job = JobRecord(
            id=self._ids.job_id(now),
            queue=spec.queue,
            payload=spec.payload,
            priority=spec.priority,
            headers=dict(spec.headers),
            content_type=spec.content_type,
            seq=self._seq,
            submit_time=now,
        )
        self._jobs[job.id] = job
        self._push_pending(self._ensure_queue(spec.queue), job)
        return job

    def _push_pending(self, q: QueueState, job: JobRecord) -> None:
        q.add_pending(job)
        self._with_pending[q.name] = None

    def get_job(self, job_id: str) -> JobView:
        if not job_id:
            raise InvalidArgument("job_id is empty")
        job = self._jobs.get(job_id)
        if job is not None:
            return job
        raw = self._done.get(job_id)
        if raw is None:
            raise NotFound(f"job {job_id!r} does not exist or is no longer retained")
        return FinishedJob.unpack(raw)

    def _live_job(self, job_id: str, refusal: str) -> JobRecord:
        job = self.get_job(job_id)
        if isinstance(job, FinishedJob):
            raise FailedPrecondition(f"job {job_id} already finished ({job.state.name}){refusal}")
        return job

    def cancel(self, job_id: str, now: float) -> tuple[JobView, WorkerRecord | None]:
        """Cancels a pending job at once, or an underway one whose worker must be told:
        its slot frees when the worker answers or the lease ends."""
        job = self._live_job(job_id, "")
        worker = None
        if job.state is JobState.PENDING:
            self._queues[job.queue].remove_pending(job)
        elif job.lease is not None:
            job.lease.cancelled = True
            worker = job.lease.worker
        return self._finish(job, JobState.CANCELLED, now), worker

    def reprioritize(self, job_id: str, priority: int) -> JobRecord:
        job = self._live_job(job_id, "; its priority is final")
        if job.state is JobState.PENDING:
            q = self._queues[job.queue]
            q.remove_pending(job)
            job.priority = priority
            q.add_pending(job)
        else:
            job.priority = priority  # used if the job goes back to pending
        return job

    def _finish(self, job: JobRecord, state: JobState, now: float) -> FinishedJob:
        """Replaces the live record by a frozen FinishedJob. The record keeps the final
        state too, for whoever still holds it (a lease of a cancelled job)."""
        job.state = state
        job.finish_time = now
        self._seq += 1
        job.finish_seq = self._seq
        done = FinishedJob.of(job, now, self._seq)
        del self._jobs[job.id]
        self._done[job.id] = done.pack()
        self._queues[job.queue].record_finished(done)
        self.observer.job_finished(done)
        return done

    def evict_finished(self, now: float) -> int:
        """Forgets finished jobs past the retention period or the count bound."""
        horizon = now - self.limits.finished_retention_seconds
        evicted = 0
        done = self._done
        while done:
            oldest = FinishedJob.unpack(done[next(iter(done))])
            too_many = len(done) > self.limits.max_finished_jobs
            if not too_many and oldest.finish_time > horizon:
                break
            done.popitem(last=False)
            self._queues[oldest.queue].forget_finished(oldest)
            evicted += 1
        return evicted

    def list_jobs(
        self, queue: str, state: JobState, page_size: int, page_token: str
    ) -> tuple[list[JobView], str]:
        """One page of a queue's jobs; see listing.page_of_jobs for the order."""
        lim.check_queue_name(queue)
        return page_of_jobs(
            self._queue(queue), self._jobs, self._done, state, page_size, page_token
        )

    # ---- workers and leases -------------------------------------------------

    def connect(
        self,
        worker_id: str,
        queues: Sequence[str],
        max_in_flight: int,
        now: float,
        labels: dict[str, str] | None = None,
    ) -> WorkerRecord:
        if self.draining:
            raise Unavailable("server is draining and takes no new workers")
        if not queues:
            raise InvalidArgument("hello names no queues; list the queues this worker serves")
        if len(queues) > self.limits.max_queues_per_worker:
            raise InvalidArgument(
                f"hello names {len(queues)} queues; the limit is "
                f"{self.limits.max_queues_per_worker}"
            )
        for name in queues:
            lim.check_queue_name(name)
        self._check_credit(max_in_flight, minimum=1)
        self._worker_seq += 1
        worker = WorkerRecord(
            key=self._worker_seq,
            worker_id=worker_id or f"worker-{self._worker_seq}",
            queues=tuple(dict.fromkeys(queues)),
            max_in_flight=max_in_flight,
            labels=dict(labels or {}),
            connect_time=now,
        )
        for name in worker.queues:
            self._ensure_queue(name).subscribers.append(worker)
        # Registered after subscribing: _ensure_queue subscribes every registered
        # worker to a queue it creates, which would list this one twice.
        self._workers[worker.key] = worker
        self.observer.worker_connected(worker)
        return worker

    def _check_credit(self, n: int, minimum: int) -> None:
        top = self.limits.max_in_flight_per_worker
        if not minimum <= n <= top:
            raise InvalidArgument(f"max_in_flight must be between {minimum} and {top}, got {n}")

    def set_credit(self, worker: WorkerRecord, max_in_flight: int) -> None:
        self._check_credit(max_in_flight, minimum=0)
        worker.max_in_flight = max_in_flight

    def disconnect(self, worker: WorkerRecord, now: float) -> int:
        """The stream is gone: every job it held goes back to pending. Returns how many."""
        if self._workers.pop(worker.key, None) is None:
            return 0
        for name in worker.queues:
            subs = self._queues[name].subscribers
            subs.remove(worker)
        held = list(worker.leases.values())
        for lease in held:
            self._release(lease, requeue_reason="worker disconnected")
        self.observer.worker_disconnected(worker, len(held))
        return len(held)

    def workers(self) -> list[WorkerRecord]:
        return list(self._workers.values())

    def complete(
        self, worker: WorkerRecord, job_id: str, lease_id: str, outcome: Outcome, now: float
    ) -> Rejection | None:
        """Records a worker's result. A result whose lease this worker does not hold
        (expired and re-dispatched, or never issued) changes nothing: fencing."""
        lease = worker.leases.get(lease_id)
        if lease is None or lease.job.id != job_id:
            known = job_id in self._jobs or job_id in self._done
            reason = (
                "stale lease: it expired or was taken back, and the job may run elsewhere"
                if known
                else "unknown job"
            )
            self.observer.result_rejected(self.get_job(job_id).queue if known else "", reason)
            return Rejection(job_id, lease_id, reason)
        job = lease.job
        self._release(lease, requeue_reason=None)
        if lease.cancelled:
            return None  # already CANCELLED; the answer only frees the slot
        if isinstance(outcome, JobFailure):
            job.error = outcome
            self._finish(job, JobState.FAILED, now)
        elif len(outcome) > self.limits.max_payload_bytes:
            job.error = JobFailure(
                f"result of {len(outcome)} bytes exceeds the {self.limits.max_payload_bytes}"
                "-byte cap",
                retryable=False,
                code="ResultTooLarge",
            )
            self._finish(job, JobState.FAILED, now)
        else:
            job.result = outcome
            self._finish(job, JobState.SUCCEEDED, now)
        return None

    def heartbeat(self, worker: WorkerRecord, lease_ids: Iterable[str], now: float) -> list[str]:
        """Extends the named leases (all held, when none are named). Returns unknown ids."""
        ids = list(lease_ids)
        targets = ids or list(worker.leases)
        unknown = []
        for lease_id in targets:
            lease = worker.leases.get(lease_id)
            if lease is None:
                unknown.append(lease_id)
                continue
            deadline = now + self._queues[lease.job.queue].settings.lease_seconds
            if deadline < lease.deadline:  # lease_seconds was cut: the heap entry is late
                self._deadlines.push(lease, deadline)
            lease.deadline = deadline
        return unknown

    def _release(self, lease: LeaseRecord, requeue_reason: str | None) -> None:
        job = lease.job
        del self._leases[lease.lease_id]
        del lease.worker.leases[lease.lease_id]
        q = self._queues[job.queue]
        del q.leases[lease.lease_id]
        job.lease = None
        if requeue_reason is not None and not lease.cancelled:
            job.state = JobState.PENDING
            self._push_pending(q, job)
            self.observer.job_requeued(job, requeue_reason)
        self.observer.lease_released(job.queue)
        self._deadlines.compact(self._leases)

    def next_lease_deadline(self) -> float | None:
        """When expire_leases next has work; may be early (never late)."""
        return self._deadlines.earliest()

    def expire_leases(self, now: float) -> list[JobRecord]:
        """Takes back every lease past its deadline. Returns the affected jobs (jobs
        cancelled while underway among them stay CANCELLED)."""
        expired: list[JobRecord] = []

        def expire(lease: LeaseRecord) -> None:
            expired.append(lease.job)
            self.observer.lease_expired(lease)
            self._release(lease, requeue_reason="lease expired")

        self._deadlines.pop_due(now, self._leases, expire)
        return expired

    def underway_total(self) -> int:
        return len(self._leases)

    # ---- dispatch -----------------------------------------------------------

    def dispatch(self, now: float) -> Dispatches:
        """Leases every job that may run now. One job per queue per round, rounds
        starting at a rotating queue, so queues sharing workers are served fairly."""
        if self.draining or not self._with_pending:
            return []
        out: dict[int, tuple[WorkerRecord, list[LeaseRecord]]] = {}
        names = list(self._with_pending)
        start = self._rr_offset % len(names)
        self._rr_offset += 1
        active = [self._queues[n] for n in names[start:] + names[:start]]
        while active:
            still = []
            for q in active:
                if not q.can_dispatch():
                    continue
                worker = q.next_worker()
                if worker is None:
                    continue
                lease = self._lease(q, worker, now)
                entry = out.get(worker.key)
                if entry is None:
                    out[worker.key] = (worker, [lease])
                else:
                    entry[1].append(lease)
                still.append(q)
            active = still
        for name in names:
            if not self._queues[name].pending:
                del self._with_pending[name]
        return list(out.values())

    def _lease(self, q: QueueState, worker: WorkerRecord, now: float) -> LeaseRecord:
        job = self._jobs[q.pop_next_id()]
        self._seq += 1
        lease = LeaseRecord(
            lease_id=self._ids.lease_id(),
            job=job,
            worker=worker,
            deadline=now + q.settings.lease_seconds,
            dispatch_seq=self._seq,
        )
        job.state = JobState.UNDERWAY
        job.attempt += 1
        job.dispatch_time = now
        if job.first_dispatch_time is None:
            job.first_dispatch_time = now
        job.worker_id = worker.worker_id
        job.lease = lease
        self._leases[lease.lease_id] = lease
        worker.leases[lease.lease_id] = lease
        q.leases[lease.lease_id] = lease
        self._deadlines.push(lease)
        self.observer.job_dispatched(lease)
        return lease

    # ---- drain and snapshot -------------------------------------------------

    def begin_drain(self) -> None:
        """Stops intake and dispatch; underway jobs may still finish."""
        self.draining = True
        for worker in self._workers.values():
            worker.draining = True

    def reclaim_underway(self) -> int:
        """Puts every underway job back to pending (the drain grace ran out)."""
        leases = list(self._leases.values())
        for lease in leases:
            self._release(lease, requeue_reason="drain grace ran out")
        return len(leases)

    def unfinished_jobs(self) -> list[JobRecord]:
        """Pending jobs of every queue in dispatch order, then underway ones by dispatch."""
        out: list[JobRecord] = []
        for name in sorted(self._queues):
            q = self._queues[name]
            out.extend(self._jobs[entry[2]] for entry in q.pending)
            out.extend(lease.job for lease in q.leases.values() if not lease.cancelled)
        return out

    def restore(
        self, queues: Sequence[tuple[str, QueueSettings]], jobs: Sequence[JobRecord]
    ) -> None:
        """Loads a snapshot into an empty engine; jobs keep ids, priorities, attempts and
        their relative order (given in dispatch order)."""
        if self._jobs or self._queues:
            raise FailedPrecondition("restore needs an empty engine")
        for name, settings in queues:
            lim.check_queue_name(name)
            self._ensure_queue(name).settings = settings
        for job in jobs:
            self._seq += 1
            restored = replace(job, seq=self._seq, state=JobState.PENDING, lease=None)
            self._jobs[restored.id] = restored
            self._push_pending(self._ensure_queue(restored.queue), restored)
