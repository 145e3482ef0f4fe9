"""Workers and leases; results, retries and everything time drives (the pass: turns.py)."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

from dispatchd.engine import limits as lim
from dispatchd.engine.errors import draining
from dispatchd.engine.model import (
    AttemptRecord,
    JobFailure,
    JobRecord,
    JobState,
    LeaseRecord,
    Rejection,
    WorkerRecord,
)
from dispatchd.engine.queue import QueueState
from dispatchd.engine.reasons import (
    LEASE_EXPIRED,
    REQUEUED,
    STALE_LEASE,
    UNKNOWN_JOB,
    WORKER_LOST,
    retry_after_floor,
)
from dispatchd.engine.throttling import JobThrottle, ThrottleScope, reason_text, too_many
from dispatchd.engine.turns import TurnsMixin

#: A worker's answer: the output, a failure, or a throttle signal (engine/throttling.py).
Outcome = bytes | JobFailure | JobThrottle


class DispatchMixin(TurnsMixin):
    # ---- workers ------------------------------------------------------------------

    def connect(
        self,
        worker_id: str,
        queues: Sequence[str],
        max_in_flight: int,
        now: float,
        labels: dict[str, str] | None = None,
    ) -> WorkerRecord:
        now = self._clock(now)
        if self.draining:
            raise draining("takes no new workers")
        lim.check_hello(queues, max_in_flight, self.limits)
        self._check_new_queues(queues)
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
        self._consider_worker(worker, now)
        self.observer.worker_connected(worker)
        return worker

    def set_credit(self, worker: WorkerRecord, max_in_flight: int) -> None:
        lim.check_credit(max_in_flight, 0, self.limits)
        worker.max_in_flight = max_in_flight
        worker.heard()
        self._consider_worker(worker, self._now)

    def _hear(self, worker: WorkerRecord, now: float) -> None:
        """The worker sent something: a silent one may be sent jobs again, so its rated
        queues get their timers (engine/ready.py)."""
        if worker.silent:
            worker.heard()
            self._consider_worker(worker, now)

    def disconnect(self, worker: WorkerRecord, now: float) -> int:
        """The stream is gone: every job it held counts as a lost attempt. Returns how many."""
        now = self._clock(now)
        if self._workers.pop(worker.key, None) is None:
            return 0
        for name in worker.queues:
            self._queues[name].subscribers.remove(worker)
        held = list(worker.leases.values())
        for lease in held:
            self._release(lease, now)
            if not lease.cancelled:
                self._attempt_failed(lease, WORKER_LOST, now, lost=True)
        self.observer.worker_disconnected(worker, len(held))
        return len(held)

    def workers(self) -> list[WorkerRecord]:
        return list(self._workers.values())

    # ---- results ------------------------------------------------------------------

    def complete(
        self,
        worker: WorkerRecord,
        job_id: str,
        lease_id: str,
        outcome: Outcome,
        now: float,
        *,
        http_status: int = 0,
        latency: float | None = None,
    ) -> Rejection | None:
        """Records a worker's result. A result whose lease this worker does not hold
        (expired and re-dispatched, or never issued) changes nothing: fencing.
        ``http_status`` and ``latency`` describe an HTTP push attempt; they are kept on
        the attempt."""
        now = self._clock(now)
        self._hear(worker, now)
        lease = worker.leases.get(lease_id)
        if lease is None or lease.job.id != job_id:
            if lease_id in worker.lost:
                worker.let_go(lease_id)
                self._consider_worker(worker, now)  # the credit it kept is free again
            known = job_id in self._jobs or job_id in self._done
            reason = STALE_LEASE if known else UNKNOWN_JOB
            self.observer.result_rejected(self.get_job(job_id).queue if known else "", reason)
            return Rejection(job_id, lease_id, reason)
        self._release(lease, now)
        if lease.cancelled:
            return None  # already CANCELLED; the answer only frees the slot
        http = (http_status, latency)
        if isinstance(outcome, JobThrottle):
            self._throttled(lease, outcome, now, http)
        elif isinstance(outcome, JobFailure):
            self._attempt_failed(lease, outcome, now, lost=False, http=http)
        elif len(outcome) > self.limits.max_payload_bytes:
            failure = JobFailure(
                f"result of {len(outcome)} bytes exceeds the {self.limits.max_payload_bytes}"
                "-byte cap",
                retryable=False,
                code="ResultTooLarge",
            )
            self._attempt_failed(lease, failure, now, lost=False, http=http)
        else:
            job = lease.job
            job.attempts = (*job.attempts, self._attempt(lease, now, None, http))
            job.result = outcome
            self._finish(job, JobState.SUCCEEDED, now)
        return None

    def _attempt(
        self,
        lease: LeaseRecord,
        now: float,
        error: JobFailure | None,
        http: tuple[int, float | None] = (0, None),
    ) -> AttemptRecord:
        job = lease.job
        start = now if job.dispatch_time is None else job.dispatch_time  # 0.0 is a time
        return AttemptRecord(job.attempt, job.worker_id, start, now, error, *http)

    def _attempt_failed(
        self,
        lease: LeaseRecord,
        failure: JobFailure,
        now: float,
        *,
        lost: bool,
        http: tuple[int, float | None] = (0, None),
    ) -> None:
        """After a failed attempt: retry with backoff while the policy allows, else DEAD
        (under a policy) or FAILED. Without a policy a lost attempt (lease expired,
        worker gone) goes straight back, as it never reported failure."""
        job = lease.job
        job.attempts = (*job.attempts, self._attempt(lease, now, failure, http))
        q = self._queues[job.queue]
        policy = job.retry_policy or q.settings.retry_policy
        if policy is None:
            if lost:
                self._give_back(job, now, REQUEUED.get(failure.code, failure.message))
            else:
                job.error = failure
                self._finish(job, JobState.FAILED, now)
            return
        job.error = failure
        used = job.attempt - job.budget_start
        if not failure.retryable or used >= policy.max_attempts:
            self._finish(job, JobState.DEAD, now)
            return
        due = now + policy.backoff(used, self._rng)
        if failure.retry_after is not None:
            cap = self.limits.max_retry_after_seconds
            due = max(due, now + retry_after_floor(failure.retry_after, cap))
        if job.expire_at is not None and due >= job.expire_at:
            self._finish(job, JobState.EXPIRED, now)
            return
        job.not_before = due
        self._wait(q, job, now)
        self.observer.job_retrying(job, due)

    # ---- throttle signals (engine/throttling.py) ------------------------------------

    def _throttled(
        self, lease: LeaseRecord, throttle: JobThrottle, now: float, http: tuple[int, float | None]
    ) -> None:
        """The provider throttles: the scope is held, and the job goes back to its old place
        with the delivery not counted, unless it bounced more than the queue allows."""
        job = lease.job
        q = self._queues[job.queue]
        self._hold(q, job, throttle, now)
        job.throttle_count += 1
        if job.throttle_count > q.settings.max_throttle_bounces:
            self._attempt_failed(lease, too_many(throttle), now, lost=False, http=http)
            return
        job.attempt -= 1  # the delivery was not an attempt: the budget and numbers stay
        self._give_back(job, now, "throttled")

    def _hold(self, q: QueueState, job: JobRecord, throttle: JobThrottle, now: float) -> None:
        """Holds the queue, or the job's fairness key, until now + the delay (a hold already
        lasting longer stays). A held queue leaves the ready set; _consider arms its
        wake-up at the hold's end, so a pass never looks at it meanwhile."""
        sent, resume = job.dispatch_time, now + throttle.delay
        if throttle.scope is ThrottleScope.FAIRNESS_KEY:
            q.ready.throttled(job.fairness_key, now, sent, resume)  # AIMD of the key's rate
        elif q.aimd is not None:
            q.aimd.throttled(now, sent, resume)  # AIMD: the decrease (engine/policies.py)
            q.adapt(now)
        if throttle.delay <= 0:
            return
        until = now + throttle.delay
        reason = reason_text(throttle, job.fairness_key)
        if throttle.scope is ThrottleScope.FAIRNESS_KEY:
            q.ready.hold(job.fairness_key, until, now)
        else:
            if q.held_until is None or until > q.held_until:
                q.held_until = until
            q.hold_reason = reason
            if q.bucket is not None:
                q.bucket.hold(q.held_until)  # resume at the rate, not in a burst
            self._ready.discard(q)
        self.observer.job_throttled(job, int(throttle.scope), until, reason)

    def _give_back(self, job: JobRecord, now: float, reason: str) -> None:
        """An attempt ended without a verdict: the job waits again at its old place, unless
        its expire_at passed meanwhile (its expiry entry went by while it was underway)."""
        if job.expire_at is not None and job.expire_at <= now:
            self._finish(job, JobState.EXPIRED, now)
            return
        self._wait(self._queues[job.queue], job, now)
        self.observer.job_requeued(job, reason)

    def heartbeat(self, worker: WorkerRecord, lease_ids: Iterable[str], now: float) -> list[str]:
        """Extends the named leases (all held, when none are named). Returns unknown ids."""
        now = self._clock(now)
        self._hear(worker, now)
        ids = list(lease_ids)
        if ids and worker.lost:
            before = len(worker.lost)
            worker.still_holds(ids)
            if len(worker.lost) < before:
                self._consider_worker(worker, now)  # the credits they kept are free again
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

    def extend_leases(self, seconds: float) -> None:
        """Every lease and slot ends ``seconds`` later: the server was not running that
        long, so it cannot have seen the heartbeats and renewals sent meanwhile. The
        deadline heaps find their entries early and push them back."""
        for lease in self._leases.values():
            lease.deadline += seconds
        for slot in self._slots.values():
            slot.deadline += seconds

    def _release(self, lease: LeaseRecord, now: float) -> None:
        """Frees the lease's width slot and worker credit; the caller decides the job's fate."""
        job = lease.job
        del self._leases[lease.lease_id]
        del lease.worker.leases[lease.lease_id]
        q = self._queues[job.queue]
        del q.leases[lease.lease_id]
        q.ready.released(job, now)
        job.lease = None
        if lease.cancelled:
            self._cancelled_leases -= 1
            self._release_key(q, job, now)
        self._consider(q, now)  # a width slot (and its key's) is free
        self._consider_worker(lease.worker, now)  # and a credit: its rated queues get a timer
        self.observer.lease_released(job.queue)
        self._deadlines.compact(self._leases)

    # ---- time -----------------------------------------------------------------------

    def next_lease_deadline(self) -> float | None:
        """When expire_leases next has work; may be early (never late)."""
        return self._deadlines.earliest()

    def expire_leases(self, now: float) -> list[JobRecord]:
        """Takes back every lease past its deadline. Returns the affected jobs (jobs
        cancelled while underway among them stay CANCELLED)."""
        now = self._clock(now)
        expired: list[JobRecord] = []

        def expire(lease: LeaseRecord) -> None:
            expired.append(lease.job)
            self.observer.lease_expired(lease)
            worker = lease.worker
            worker.lost.add(lease.lease_id)
            worker.silent = True
            self._release(lease, now)
            if not lease.cancelled:
                self._attempt_failed(lease, LEASE_EXPIRED, now, lost=True)

        self._deadlines.pop_due(now, self._leases, expire)
        return expired

    def tick(self, now: float) -> None:
        """Everything due by ``now``: expired leases and slots, delayed jobs that became
        ready, jobs past their expire_at, finished jobs past retention."""
        now = self._clock(now)
        self.expire_leases(now)
        self._expire_slots(now)
        while self._timers and self._timers[0][0] <= now:
            due, _, job_id = heapq.heappop(self._timers)
            job = self._jobs.get(job_id)
            if job is not None and job.state is JobState.SCHEDULED and job.not_before == due:
                self._due(job, now)
        while self._expiries and self._expiries[0][0] <= now:
            at, _, job_id = heapq.heappop(self._expiries)
            job = self._jobs.get(job_id)
            if (
                job is not None
                and job.expire_at == at
                and job.state in (JobState.PENDING, JobState.SCHEDULED, JobState.WAITING)
            ):
                self._stop_waiting(self._queues[job.queue], job)
                self._finish(job, JobState.EXPIRED, now)
        self.evict_finished(now)

    def next_wakeup(self) -> float | None:
        """The earliest time tick() or dispatch() has work without any new call: one
        timer in the service is armed for it. May be early, never late."""
        times = [
            t
            for t in (
                self._deadlines.earliest(),
                self._timers[0][0] if self._timers else None,
                self._expiries[0][0] if self._expiries else None,
                self._slot_deadlines[0][0] if self._slot_deadlines else None,
                self._rate_wake,
                self._rate_wakeup(),
            )
            if t is not None
        ]
        return min(times) if times else None

    def underway_total(self) -> int:
        return len(self._leases) + len(self._slots)
