"""The dispatch pass: credit-filling turns over workers, queues served round-robin.

A pass walks the workers with free credits, starting after the worker served last in
the previous pass, so over time every worker gets turns. The worker whose turn it is
takes as many ready jobs as its free credits allow before the turn moves on: credits
(max_in_flight) are the worker's own statement of how many jobs it can run now, as
with BullMQ's concurrency or Celery's prefetch, and filling them makes one turn one
delivery message instead of one message (and one results message) per job. A worker
that wants jobs spread over its peers declares fewer credits.

Within a turn the worker's queues give one job each per round, the rounds going on
where the previous turn of the same pass stopped, so queues sharing workers are served
fairly whatever the workers' credits.
"""

from __future__ import annotations

from bisect import bisect_left

from dispatchd.engine.model import JobRecord, JobState, LeaseRecord, WorkerRecord
from dispatchd.engine.queue import QueueState
from dispatchd.engine.state import EngineState

Dispatches = list[tuple[WorkerRecord, list[LeaseRecord]]]


class TurnsMixin(EngineState):
    def dispatch(self, now: float) -> Dispatches:
        """Leases every job that may run now, in credit-filling worker turns. The queue
        rounds start at a queue that rotates between passes."""
        now = self._clock(now)
        self._rate_wake = None
        self._grant_slots(now)
        if self.draining or not self._with_pending:
            return []
        names = list(self._with_pending)
        start = self._rr_offset % len(names)
        order = [self._queues[n] for n in names[start:] + names[:start]]
        out = self._turns(order, now)
        if out:  # a pass that dispatched nothing (an extra kick) must not skip a queue's turn
            self._rr_offset += 1
        for name in names:
            q = self._queues[name]
            if not q.pending:
                del self._with_pending[name]
            else:
                self._note_wake(q, now)
        return out

    def _turn_order(self) -> list[WorkerRecord]:
        """Workers with a free credit, starting after the one served last (keys grow with
        each connect, so key order is a stable ring)."""
        free = [w for w in self._workers.values() if w.free_credits > 0]
        after = self._turn_after
        k = next((i for i, w in enumerate(free) if w.key > after), 0)
        return free[k:] + free[:k]

    def _turns(self, order: list[QueueState], now: float) -> Dispatches:
        out: Dispatches = []
        pos = {q.name: i for i, q in enumerate(order)}
        live = [True] * len(order)  # False once a queue can give nothing more this pass
        left = len(order)
        cursor = 0  # position in ``order`` of the queue whose round-robin turn is next
        for worker in self._turn_order():
            mine = sorted(pos[n] for n in worker.queues if n in pos and live[pos[n]])
            if not mine:
                continue
            k = bisect_left(mine, cursor)
            mine = mine[k:] + mine[:k]
            room = worker.free_credits
            leases: list[LeaseRecord] = []
            i = 0
            while mine and room > 0:
                at = mine[i]
                lease = self._take(order[at], worker, now) if live[at] else None
                if lease is None:
                    if live[at]:
                        live[at] = False
                        left -= 1
                    del mine[i]
                    if i >= len(mine):
                        i = 0
                    continue
                leases.append(lease)
                room -= 1
                cursor = at + 1
                i = (i + 1) % len(mine)
            if leases:
                out.append((worker, leases))
                self._turn_after = worker.key
            if left == 0:
                break
        return out

    def _take(self, q: QueueState, worker: WorkerRecord, now: float) -> LeaseRecord | None:
        """One job of ``q`` for ``worker``, or None when width, pause, rate or the lanes
        allow no more in this pass (none of those loosen while the pass runs)."""
        if not q.may_dispatch(now):
            return None
        job = q.ready.pop(now)
        if job is None:
            return None
        if q.bucket is not None:
            q.bucket.take(now)
        q.remove_pending(job)
        return self._lease(q, job, worker, now)

    def _note_wake(self, q: QueueState, now: float) -> None:
        """Remembers when a queue held back only by a rate (its own or a key's) can go
        again. A paused or full queue, or one with no free worker, needs no timer: resume,
        a freed slot or a credit kicks the pump anyway; arming one would spin."""
        s = q.settings
        if s.paused or q.underway >= s.width or not q.has_free_worker():
            return
        wakes = []
        if q.bucket is not None and q.blocked_only_by_rate(now):
            wakes.append(q.bucket.next_time(now))
        q.ready.has_ready(now)  # lets lanes whose token came back into the ring
        lane_wake = q.ready.next_wake()
        if lane_wake is not None and lane_wake > now:
            wakes.append(lane_wake)
        for t in wakes:
            if self._rate_wake is None or t < self._rate_wake:
                self._rate_wake = t

    def _lease(
        self, q: QueueState, job: JobRecord, worker: WorkerRecord, now: float
    ) -> LeaseRecord:
        lease = LeaseRecord(
            lease_id=self._ids.lease_id(),
            job=job,
            worker=worker,
            deadline=now + q.settings.lease_seconds,
            dispatch_seq=self._next_seq(),
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
