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

from bisect import bisect_right

from dispatchd.engine.model import JobRecord, JobState, LeaseRecord, WorkerRecord
from dispatchd.engine.queue import QueueState
from dispatchd.engine.state import EngineState

Dispatches = list[tuple[WorkerRecord, list[LeaseRecord]]]


class TurnsMixin(EngineState):
    def dispatch(self, now: float) -> Dispatches:
        """Leases every job that may run now, in credit-filling worker turns. The queue
        rounds start at a queue that rotates between passes. A pass looks only at the
        ready set (engine/ready.py) through the workers with free credits: its cost
        follows what can move now, not how many queues hold jobs."""
        now = self._clock(now)
        self._rate_wake = None
        self._grant_slots(now)
        ready = self._ready
        for name in ready.due(now):
            q = self._queues.get(name)
            if q is not None:
                q.wake_due = None
                self._consider(q, now)
        if self.draining or not ready:
            return []
        start = ready.key_at(self._rr_offset % len(ready))
        out = self._turns(start, now)
        if out:  # a pass that dispatched nothing (an extra kick) must not skip a queue's turn
            self._rr_offset += 1
        return out

    def _turn_order(self) -> list[WorkerRecord]:
        """Workers with a free credit, starting after the one served last (keys grow with
        each connect, so key order is a stable ring)."""
        free = [w for w in self._workers.values() if w.free_credits > 0]
        after = self._turn_after
        k = next((i for i, w in enumerate(free) if w.key > after), 0)
        return free[k:] + free[:k]

    def _turns(self, start: int, now: float) -> Dispatches:
        """The worker turns of one pass; the queue rounds begin at ring key ``start``. A
        queue that cannot give a job leaves the ready set for the rest of the pass (none
        of width, pause, rate or the lanes loosen while it runs) and is filed after it."""
        out: Dispatches = []
        ready, queues = self._ready, self._queues
        held: list[QueueState] = []  # queues that gave out this pass: re-filed at the end

        def position(q: QueueState) -> tuple[int, int]:
            key = q.ring_key
            assert key is not None
            return (0, key) if key >= start else (1, key)

        cursor = (0, start - 1)  # the queue whose round-robin turn came last
        for worker in self._turn_order():
            mine = sorted(
                (position(q), q)
                for name in worker.queues
                if (q := queues.get(name)) is not None and q.ring_key is not None
            )
            if not mine:
                continue
            k = bisect_right(mine, cursor, key=lambda entry: entry[0])
            mine = mine[k:] + mine[:k]
            room = worker.free_credits
            leases: list[LeaseRecord] = []
            i = 0
            while mine and room > 0:
                at, q = mine[i]
                lease = self._take(q, worker, now) if q.ring_key is not None else None
                if lease is None:
                    if q.ring_key is not None:
                        ready.discard(q)
                        held.append(q)
                    del mine[i]
                    if i >= len(mine):
                        i = 0
                    continue
                leases.append(lease)
                room -= 1
                cursor = at
                i = (i + 1) % len(mine)
            if leases:
                out.append((worker, leases))
                self._turn_after = worker.key
            if not ready:
                break
        for q in held:  # back in the set if it can after all, or waiting for its token
            self._consider(q, now)
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
        if q.windows is not None:  # quotas (engine/policies.py WindowCounts): counted, stored
            q.windows.take(now)
            self.observer.quota_used(q.name)
        elif q.ready.limits.windows:  # per-key quotas (counted by the lane's pop): stored
            self.observer.quota_used(q.name)
        q.remove_pending(job)
        return self._lease(q, job, worker, now)

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
