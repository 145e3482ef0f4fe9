"""The engine's state and the job transitions every part of it shares.

A job moves: (submit) -> waiting -> UNDERWAY -> finished, where waiting is PENDING
(ready, or blocked behind its ordering key) or SCHEDULED (not_before in the future,
also a retry's backoff). Every move between these goes through the methods here, so
the indexes of a queue (pending, ready lanes, chains, scheduled) never disagree.
"""

from __future__ import annotations

import heapq
import random
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from dispatchd.engine import limits as lim
from dispatchd.engine.deadlines import DeadlineHeap
from dispatchd.engine.errors import draining
from dispatchd.engine.ids import IdSource
from dispatchd.engine.limits import EngineLimits
from dispatchd.engine.model import (
    FinishedJob,
    JobRecord,
    JobState,
    JobView,
    LeaseRecord,
    QueueSettings,
    SlotRecord,
    SlotRequest,
    WorkerRecord,
)
from dispatchd.engine.observer import EngineObserver
from dispatchd.engine.queue import QueueState
from dispatchd.engine.ready import ReadySet
from dispatchd.engine.schedules import ScheduleRecord

if TYPE_CHECKING:
    from dispatchd.engine.flow_rules import BatchRecord
    from dispatchd.engine.model import NewJob

#: What a draining server says to any change (after "server is draining and ").
FROZEN = "accepts no changes until it restarts; retry then, or on another server"


class EngineState:
    """Fields and transitions; the public API lives in Engine and its mixins."""

    def __init__(
        self,
        limits: EngineLimits | None = None,
        observer: EngineObserver | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.limits = limits or EngineLimits()
        self.observer = observer or EngineObserver()
        self._rng = rng or random.SystemRandom()
        self._ids = IdSource(self._rng)
        self._queues: dict[str, QueueState] = {}
        self._jobs: dict[str, JobRecord] = {}
        self._workers: dict[int, WorkerRecord] = {}
        self._leases: dict[str, LeaseRecord] = {}
        self._deadlines = DeadlineHeap()
        # Finished jobs in finish order, packed into plain tuples the collector untracks
        # (FinishedJob.pack); FinishedJob views are unpacked on access.
        self._done: OrderedDict[str, tuple[object, ...]] = OrderedDict()
        self._ready = ReadySet()  # the queues that can dispatch now (engine/ready.py)
        self._timers: list[tuple[float, int, str]] = []  # (not_before, seq, job id)
        self._expiries: list[tuple[float, int, str]] = []  # (expire_at, seq, job id)
        self._slots: dict[str, SlotRecord] = {}
        self._slot_deadlines: list[tuple[float, int, str]] = []
        self._slot_requests: dict[str, SlotRequest] = {}
        self._slot_waiting: dict[str, None] = {}  # ordered set of queues with acquirers
        self._rate_wake: float | None = None
        # Recurring schedules (engine/schedule_book.py): by id, and a heap of their next
        # fire times (fire time, generation, id); an entry whose generation is not the
        # schedule's latest is stale and skipped.
        self._schedules: dict[str, ScheduleRecord] = {}
        self._schedule_heap: list[tuple[float, int, str]] = []
        self._schedule_gen: dict[str, int] = {}
        self._cancelled_leases = 0  # leases of jobs cancelled while running
        # Workflows (engine/flows.py): batches by (queue, batch id); the WAITING children of
        # each live parent; WAITING jobs a restore resolves once every job is back.
        self._batches: dict[tuple[str, str], BatchRecord] = {}
        self._children: dict[str, list[str]] = {}
        self._restored_waiting: list[JobRecord] = []
        self._seq = 0
        self._worker_seq = 0
        self._rr_offset = 0
        self._turn_after = 0  # key of the worker served last: the next pass starts after it
        self._now = 0.0  # the latest time any call passed in
        self.draining = False

    def _clock(self, now: float | None) -> float:
        if now is not None and now > self._now:
            self._now = now
        return self._now if now is None else now

    def _refuse_while_draining(self) -> None:
        """A draining server is frozen: what it snapshots is what it had when the drain
        began, so every change but the results of underway jobs is refused."""
        if self.draining:
            raise draining(FROZEN)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # ---- queues -----------------------------------------------------------------

    def _queue(self, name: str) -> QueueState:
        q = self._queues.get(name)
        if q is None:
            raise lim.not_found_queue(name)
        return q

    def waiting_total(self) -> int:
        """Jobs waiting (pending and scheduled) across every queue: the live jobs, less the
        ones underway (a cancelled job still running is finished, not live)."""
        return len(self._jobs) - (len(self._leases) - self._cancelled_leases)

    def _check_new_queues(self, names: Iterable[str]) -> None:
        """Refuses (TOO_MANY_QUEUES) before anything changes when creating the ones of
        ``names`` that do not exist would pass --max-queues."""
        if self.limits.max_queues:
            new = {n for n in names if n not in self._queues}
            lim.check_server_bounds(self.limits, len(self._queues), len(new), 0, 0)

    def _ensure_queue(self, name: str, bounded: bool = True) -> QueueState:
        """The queue, created with the defaults when there is none (refused past
        --max-queues unless ``bounded`` is False: a restore keeps what it finds)."""
        q = self._queues.get(name)
        if q is None:
            if bounded:
                self._check_new_queues((name,))
            settings = QueueSettings(
                width=self.limits.default_width, lease_seconds=self.limits.default_lease_seconds
            )
            q = self._queues[name] = QueueState(name, settings, self._jobs, self._now)
            for worker in self._workers.values():
                if name in worker.queues:
                    q.subscribers.append(worker)
            self.observer.queue_changed(name, settings)
        return q

    # ---- waiting ------------------------------------------------------------------

    def _wait(self, q: QueueState, job: JobRecord, now: float) -> None:
        """Puts a job that may run (new, retried, given back) where it waits its turn."""
        if job.ordering_key:
            chain = q.chains.setdefault(job.ordering_key, deque())
            if job not in chain:
                chain.append(job)
            if chain[0] is not job:  # an earlier job of its key holds the key
                job.state = JobState.PENDING
                q.add_pending(job)
                return
        if job.not_before is not None and job.not_before > now:
            job.state = JobState.SCHEDULED
            q.scheduled.add((job.not_before, job.seq, job.id))
            heapq.heappush(self._timers, (job.not_before, job.seq, job.id))
            return
        job.state = JobState.PENDING
        q.add_pending(job)
        q.ready.push(job, now)
        self._consider(q, now)

    def _consider(self, q: QueueState, now: float) -> None:
        """Something that may let ``q`` dispatch happened (a job became ready, width or a
        key's slot freed, its settings changed, a worker of it got credit, its next token
        is due): it joins the ready set if it can dispatch now, or waits for its next token.
        A paused or full queue, or one with nothing ready, needs nothing: resume, a freed
        slot or a new job calls this again; nor does one that no worker with a free credit
        serves need a timer (a credit calls this again; a timer would spin)."""
        if q.ring_key is not None:  # in the ready set already: a pass files it if need be
            return
        s = q.settings
        if s.paused or q.underway >= s.width:
            return
        if q.held_until is not None:  # a throttle signal holds it: wake at the hold's end
            if q.held_until > now:
                if q.has_free_worker():
                    self._ready.wake(q, q.held_until)
                return
            q.held_until, q.hold_reason = None, ""
        q.adapt(now)
        if q.ready.has_ready(now):  # (lets lanes whose token came back into the ring)
            wake = q.rate_wake(now)  # its token, and the end of its exhausted quota windows
            if wake <= now:
                self._ready.add(q)
                return
        else:
            lane_wake = q.ready.next_wake()  # every ready key is out of its own tokens
            if lane_wake is None:
                return
            wake = lane_wake
        if q.has_free_worker():
            self._ready.wake(q, wake)

    def _rate_wakeup(self) -> float | None:
        """When the next queue held back only by a rate may go. Wake-ups of queues paused,
        full or without a free worker since they were armed are dropped here (the event
        that frees them arms a new one), so no timer is kept for them."""
        ready = self._ready
        while (top := ready.peek_wake()) is not None:
            when, name = top
            q = self._queues.get(name)
            if q is not None and q.wake_due == when:
                s = q.settings
                if not s.paused and q.underway < s.width and q.has_free_worker():
                    return when
                q.wake_due = None
            ready.drop_wake()
        return None

    def _consider_worker(self, worker: WorkerRecord, now: float) -> None:
        """A worker got free credits (connected, raised them): its queues held back by a
        rate get their timer (they are in the ready set already if nothing else holds
        them)."""
        for name in worker.queues:
            q = self._queues.get(name)
            if q is not None:
                self._consider(q, now)

    def _stop_waiting(self, q: QueueState, job: JobRecord) -> None:
        """Takes a PENDING or SCHEDULED job out of every index (cancel, expiry); a
        WAITING one is in none (its parents' lists skip it once it is not WAITING)."""
        if job.state is JobState.WAITING:
            job.waiting_on = None
            q.waiting.discard((job.seq, job.id))
            return
        if job.state is JobState.SCHEDULED:
            assert job.not_before is not None
            q.scheduled.discard((job.not_before, job.seq, job.id))
        else:
            q.remove_pending(job)
            q.ready.discard(job)

    def _due(self, job: JobRecord, now: float) -> None:
        """A SCHEDULED job's time came: it becomes ready."""
        q = self._queues[job.queue]
        assert job.not_before is not None
        q.scheduled.discard((job.not_before, job.seq, job.id))
        job.state = JobState.PENDING
        q.add_pending(job)
        q.ready.push(job, now)
        self._consider(q, now)

    def _release_key(self, q: QueueState, job: JobRecord, now: float) -> None:
        """A job left for good: the next job of its ordering key may go."""
        if not job.ordering_key:
            return
        chain = q.chains.get(job.ordering_key)
        if chain is None:
            return
        if chain and chain[0] is job:
            chain.popleft()
            if chain:
                head = chain[0]
                q.remove_pending(head)  # it was pending-but-blocked
                self._wait(q, head, now)
        elif job in chain:
            chain.remove(job)
        if not chain:
            del q.chains[job.ordering_key]

    # ---- finishing ----------------------------------------------------------------

    def _finish(
        self, job: JobRecord, state: JobState, now: float, release_key: bool = True
    ) -> FinishedJob:
        """Replaces the live record by a frozen FinishedJob. The record keeps the final
        state too, for whoever still holds it (a lease of a cancelled job, which keeps
        its ordering key until the worker lets go: ``release_key=False``)."""
        q = self._queues[job.queue]
        job.state = state
        job.finish_time = now
        job.finish_seq = self._next_seq()
        done = FinishedJob.of(job, now, job.finish_seq)
        del self._jobs[job.id]
        self._done[job.id] = done.pack()
        q.record_finished(done)
        if release_key:
            self._release_key(q, job, now)
        self.observer.job_finished(done)
        # Workflows: its batch's counts and callbacks, its waiting children (flows.py).
        if job.batch_id or job.id in self._children:
            self._flows_finished(job, now)
        return done

    # ---- implemented by Engine and its mixins -----------------------------------------

    def get_job(self, job_id: str) -> JobView:
        raise NotImplementedError

    def evict_finished(self, now: float) -> int:
        raise NotImplementedError

    def cancel(self, job_id: str, now: float) -> tuple[JobView, WorkerRecord | None]:
        raise NotImplementedError

    def _admit(self, spec: NewJob, now: float) -> JobRecord:
        raise NotImplementedError

    def _flows_finished(self, job: JobRecord, now: float) -> None:
        raise NotImplementedError

    def _grant_slots(self, now: float) -> None:
        raise NotImplementedError

    def _expire_slots(self, now: float) -> None:
        raise NotImplementedError
