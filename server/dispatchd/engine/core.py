"""The dispatch engine: every scheduling decision, with time passed in as ``now``.

Pure and synchronous: no I/O, no clock, no asyncio. The service layer calls it and
turns its return values into messages. Every call either succeeds or raises an
EngineError before changing anything.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import replace

from dispatchd.engine import limits as lim
from dispatchd.engine.dispatching import DispatchMixin, Outcome
from dispatchd.engine.errors import FailedPrecondition, draining
from dispatchd.engine.figures import figures_of
from dispatchd.engine.flows import FlowsMixin
from dispatchd.engine.listing import page_of_jobs
from dispatchd.engine.model import (
    FINISHED_STATES,
    NO_HEADERS,
    FinishedJob,
    JobRecord,
    JobState,
    JobView,
    NewJob,
    QueueFigures,
    QueueSettings,
    QueueView,
    WorkerRecord,
    dedup_name,
)
from dispatchd.engine.queue import QueueState
from dispatchd.engine.schedule_book import ScheduleMixin
from dispatchd.engine.slots import SlotMixin
from dispatchd.engine.turns import Dispatches

__all__ = ["Dispatches", "Engine", "Outcome"]


class Engine(FlowsMixin, DispatchMixin, SlotMixin, ScheduleMixin):
    """Queues, jobs, leases, workers, slots and schedules of one dispatchd server."""

    def tick(self, now: float) -> None:
        """What is due by ``now`` (see DispatchMixin.tick), then the schedules due."""
        super().tick(now)
        self.fire_schedules(now)
        self.evict_batches(now)

    def next_wakeup(self) -> float | None:
        due = super().next_wakeup()
        fire = self.next_schedule_due()
        if fire is None or (due is not None and due <= fire):
            return due
        return fire

    # ---- queues -------------------------------------------------------------

    def _view(self, q: QueueState) -> QueueView:
        return QueueView(
            name=q.name,
            settings=q.settings,
            pending_count=len(q.pending),
            underway_count=q.underway,
            worker_count=len(q.subscribers),
            scheduled_count=len(q.scheduled),
            slot_count=len(q.slots),
            throttled_until=q.throttled_until(self._now),
            throttle_reason=q.hold_reason if q.throttled_until(self._now) is not None else "",
            throttled_key_count=q.ready.held_keys(self._now),
            effective_rate=q.effective_rate(self._now),
            window_usage=() if q.windows is None else q.windows.usage(self._now),
            key_window_usage=q.ready.key_usage(self._now) if q.ready.limits.windows else (),
        )

    def restore_window_usage(
        self,
        name: str,
        usage: tuple[tuple[float, float, int], ...],
        key_usage: tuple[tuple[str, tuple[tuple[float, float, int], ...]], ...] = (),
    ) -> None:
        """After restore: the quota counts a journal or snapshot kept for queue ``name`` (and
        for its fairness keys)."""
        q = self._queues.get(name)
        if q is None:
            return
        if q.windows is not None and usage:
            q.windows.restore(usage)
        for key, counts in key_usage:
            q.ready.restore_key_usage(key, counts)

    def get_queue(self, name: str) -> QueueView:
        lim.check_queue_name(name)
        return self._view(self._queue(name))

    def lease_of(self, name: str) -> float | None:
        """The queue's lease_duration in seconds; None when there is no such queue."""
        q = self._queues.get(name)
        return None if q is None else q.settings.lease_seconds

    def subscribers(self, name: str) -> list[WorkerRecord]:
        """The connected workers that serve queue ``name``."""
        q = self._queues.get(name)
        return [] if q is None else list(q.subscribers)

    def list_queues(self) -> list[QueueView]:
        return [self._view(self._queues[n]) for n in sorted(self._queues)]

    def queue_figures(self, now: float, names: Sequence[str] | None = None) -> list[QueueFigures]:
        """Every queue's /metrics figures (model.QueueFigures), sorted by name; with
        ``names``, those of the named queues that exist, in that order (a caller on an
        event loop reads a thousand queues in slices: queue_names, then a slice each)."""
        queues = self._queues
        chosen = sorted(queues) if names is None else [n for n in names if n in queues]
        return [figures_of(self._view(queues[n]), queues[n], self._jobs, now) for n in chosen]

    def queue_names(self) -> list[str]:
        """Every queue's name, sorted."""
        return sorted(self._queues)

    def update_queue(
        self,
        name: str,
        *,
        width: int | None = None,
        paused: bool | None = None,
        lease_seconds: float | None = None,
        create: bool = False,
        now: float | None = None,
        **policies: object,
    ) -> QueueView:
        """Changes take effect at once for new dispatches. Narrowing never touches
        underway jobs: it only holds back dispatches until underway < width.
        ``policies`` may set rate, retry_policy, key_limits (None clears each),
        max_pending and dedup_window."""
        now = self._clock(now)
        self._refuse_while_draining()
        lim.check_queue_update(name, width, lease_seconds, policies, self.limits)
        q = self._ensure_queue(name) if create else self._queue(name)
        s = q.settings
        changes: dict[str, object] = dict(policies)
        if width is not None:
            changes["width"] = width
        if paused is not None:
            changes["paused"] = paused
        if lease_seconds is not None:
            changes["lease_seconds"] = lease_seconds
        q.apply_settings(replace(s, **changes), now)  # type: ignore[arg-type]
        self._consider(q, now)  # resumed, widened, a new rate or key limits
        if q.settings != s:
            self.observer.queue_changed(name, q.settings)
        return self._view(q)

    def delete_queue(self, name: str) -> int:
        """Forgets an empty queue, its settings and its finished jobs; returns how many
        finished jobs went with it. A queue with waiting or underway jobs, held or
        requested slots, or connected workers is refused (QUEUE_NOT_EMPTY) and stays."""
        self._refuse_while_draining()
        lim.check_queue_name(name)
        q = self._queue(name)
        requests = sum(1 for _, _, rid in q.slot_waiters if rid in self._slot_requests)
        holds = {
            "pending": len(q.pending),
            "scheduled": len(q.scheduled),
            "underway": len(q.leases),
            "slots": len(q.slots) + requests,
            "workers": len(q.subscribers),
        }
        holds["pending"] += len(q.waiting)  # WAITING for their parents (engine/flows.py)
        if any(holds.values()):
            raise lim.queue_not_empty(name, holds, q.settings.http_target is not None)
        self.delete_batches_of(name)
        forgotten = [job_id for s in FINISHED_STATES for _, job_id in q.finished[s].after(None)]
        for job_id in forgotten:
            del self._done[job_id]
        del self._queues[name]
        self._ready.discard(q)
        self._slot_waiting.pop(name, None)
        if forgotten:
            self.observer.jobs_forgotten(forgotten)
        self.observer.queue_deleted(name)
        return len(forgotten)

    def pause(self, name: str) -> QueueView:
        return self.update_queue(name, paused=True)

    def resume(self, name: str, width: int | None = None) -> QueueView:
        return self.update_queue(name, paused=False, width=width)

    # ---- jobs ---------------------------------------------------------------

    def submit(self, specs: Sequence[NewJob], now: float) -> list[JobView]:
        return [job for job, _ in self.submit_many(specs, now)]

    def submit_many(self, specs: Sequence[NewJob], now: float) -> list[tuple[JobView, bool]]:
        """Admits all of ``specs`` or, when any is invalid or a queue's max_pending would
        be passed, none of them. Each result says whether it is an earlier job returned
        for a repeated idempotency key (within the batch too)."""
        now = self._clock(now)
        if self.draining:
            raise draining("accepts no new jobs; retry on another")
        lim.check_batch(specs, self.limits)
        self._check_flows(specs)  # batches open, parents known (engine/flows.py)
        plan = self._plan_admission(specs, now)
        out: list[tuple[JobView, bool]] = []
        fresh: list[JobRecord] = []
        made: dict[tuple[str, str], JobRecord] = {}
        for spec, existing in zip(specs, plan, strict=True):
            if existing is not None:
                out.append((existing, True))
                continue
            dedup = (spec.queue, dedup_name(spec.headers, spec.idempotency_key))
            if spec.idempotency_key and dedup in made:
                out.append((made[dedup], True))
                continue
            job = self._admit(spec, now)
            if spec.idempotency_key:
                made[dedup] = job
            fresh.append(job)
            out.append((job, False))
        if fresh:
            self.observer.jobs_submitted(fresh)
        return out

    def _plan_admission(self, specs: Sequence[NewJob], now: float) -> list[JobView | None]:
        """Finds idempotency hits and checks max_pending before anything changes."""
        plan: list[JobView | None] = []
        adding: dict[str, int] = {}
        seen: set[tuple[str, str]] = set()
        for spec in specs:
            name = dedup_name(spec.headers, spec.idempotency_key)
            existing = self._known_by_key(spec.queue, name, now)
            plan.append(existing)
            key = (spec.queue, name)
            if existing is None and not (spec.idempotency_key and key in seen):
                adding[spec.queue] = adding.get(spec.queue, 0) + 1
            if spec.idempotency_key:
                seen.add(key)
        for name, n in adding.items():
            q = self._queues.get(name)
            bound = q.settings.max_pending if q is not None else 0
            if bound and q is not None and q.waiting_count() + n > bound:
                raise lim.queue_full(name, q.waiting_count(), n, bound)
        new_queues = sum(1 for name in adding if name not in self._queues)
        lim.check_server_bounds(
            self.limits, len(self._queues), new_queues, self.waiting_total(), sum(adding.values())
        )
        return plan

    def _known_by_key(self, queue: str, key: str, now: float) -> JobView | None:
        """The job a queue knows by dedup name ``key`` (model.dedup_name), if any."""
        q = self._queues.get(queue)
        if not key or q is None or key not in q.dedup:
            return None
        job_id = q.dedup[key]
        live = self._jobs.get(job_id)
        if live is not None:
            return live
        raw = self._done.get(job_id)
        if raw is None:
            return None
        done = FinishedJob.unpack(raw)
        if done.finish_time + q.settings.dedup_window < now:
            return None
        return done

    def _admit(self, spec: NewJob, now: float) -> JobRecord:
        q = self._ensure_queue(spec.queue)
        job = JobRecord(
            id=self._ids.job_id(now),
            queue=spec.queue,
            payload=spec.payload,
            priority=spec.priority,
            headers=dict(spec.headers) if spec.headers else NO_HEADERS,
            content_type=spec.content_type,
            seq=self._next_seq(),
            submit_time=now,
            not_before=spec.not_before,
            expire_at=spec.expire_at,
            ordering_key=spec.ordering_key,
            fairness_key=spec.fairness_key,
            idempotency_key=spec.idempotency_key,
            fairness_weight=spec.fairness_weight,
            retry_policy=spec.retry_policy,
            batch_id=spec.batch_id,
            parent_ids=spec.parent_ids,
            run_after_failed_parents=spec.run_after_failed_parents,
        )
        self._jobs[job.id] = job
        if spec.idempotency_key:
            q.dedup[dedup_name(job.headers, spec.idempotency_key)] = job.id
        if job.expire_at is not None:
            heapq.heappush(self._expiries, (job.expire_at, job.seq, job.id))
        if job.expire_at is not None and job.expire_at <= now:
            self._flows_admit(job, now)  # joins its batch (parents do not matter)
            if job.state is not JobState.CANCELLED:
                self._finish(job, JobState.EXPIRED, now, release_key=False)
        elif not self._flows_admit(job, now):  # WAITING for parents: engine/flows.py
            self._wait(q, job, now)
        return job

    def get_job(self, job_id: str) -> JobView:
        job = self._jobs.get(job_id)
        if job is not None:
            return job
        raw = self._done.get(job_id)
        if raw is None:
            lim.check_job_id(job_id)
            raise lim.not_found_job(job_id)
        return FinishedJob.unpack(raw)

    def _live_job(self, job_id: str, refusal: str) -> JobRecord:
        job = self.get_job(job_id)
        if isinstance(job, FinishedJob):
            raise lim.job_finished(job_id, job.state.name, refusal)
        return job

    def cancel(self, job_id: str, now: float) -> tuple[JobView, WorkerRecord | None]:
        """Cancels a waiting job at once, or an underway one whose worker must be told:
        its slot (and its ordering key) free when the worker answers or the lease ends."""
        now = self._clock(now)
        self._refuse_while_draining()
        job = self._live_job(job_id, "")
        q = self._queues[job.queue]
        if job.state is JobState.UNDERWAY and job.lease is not None:
            job.lease.cancelled = True
            self._cancelled_leases += 1
            return self._finish(job, JobState.CANCELLED, now, release_key=False), job.lease.worker
        self._stop_waiting(q, job)
        return self._finish(job, JobState.CANCELLED, now), None

    def reprioritize(self, job_id: str, priority: int) -> JobRecord:
        """A waiting job (pending or scheduled) takes its new place at once. An underway
        job is refused: its priority would only matter if it came back, and a caller
        who meant to hurry it would be told nothing happened."""
        self._refuse_while_draining()
        job = self._live_job(job_id, "; its priority is final")
        if job.state is JobState.UNDERWAY:
            raise FailedPrecondition(
                f"job {job_id} is UNDERWAY; only a pending or scheduled job can be reprioritized"
            )
        q = self._queues[job.queue]
        if job.state is JobState.PENDING:
            q.remove_pending(job)
            job.priority = priority
            q.add_pending(job)
            if job.in_lane:
                q.ready.discard(job)
                q.ready.push(job, self._now)
        else:
            job.priority = priority  # used when it is due
        self.observer.job_changed(job)
        return job

    def retry(self, job_id: str, now: float) -> JobRecord:
        """Puts a DEAD or FAILED job back to waiting, with a fresh retry budget."""
        now = self._clock(now)
        self._refuse_while_draining()
        job = self.get_job(job_id)
        if not isinstance(job, FinishedJob) or job.state not in (JobState.DEAD, JobState.FAILED):
            raise lim.not_retryable(job_id, job.state.name)
        q = self._queues[job.queue]
        del self._done[job.id]
        q.finished[job.state].discard(job.finish_seq, job.id)
        record = JobRecord(
            id=job.id,
            queue=job.queue,
            payload=job.payload,
            priority=job.priority,
            headers=dict(job.headers),
            content_type=job.content_type,
            seq=self._next_seq(),
            submit_time=job.submit_time,
            attempt=job.attempt,
            dispatch_time=job.dispatch_time,
            first_dispatch_time=job.first_dispatch_time,
            error=job.error,
            worker_id=job.worker_id,
            ordering_key=job.ordering_key,
            fairness_key=job.fairness_key,
            idempotency_key=job.idempotency_key,
            retry_policy=job.retry_policy,
            attempts=job.attempts,
            budget_start=job.attempt,
            # Workflow fields stay; its batch counted it final already and does not again.
            batch_id=job.batch_id,
            parent_ids=job.parent_ids,
            run_after_failed_parents=job.run_after_failed_parents,
            progress=job.progress,
        )
        self._jobs[job.id] = record
        self._wait(q, record, now)
        self.observer.job_changed(record)
        return record

    def purge(self, queue: str, state: JobState) -> int:
        """Forgets finished jobs of a queue, of one finished state or all of them."""
        self._refuse_while_draining()
        lim.check_queue_name(queue, "queue")
        q = self._queue(queue)
        lim.check_purge_state(state)
        states = FINISHED_STATES if state is JobState.UNSPECIFIED else (state,)
        purged: list[str] = []
        for s in states:
            for _, job_id in list(q.finished[s].after(None)):
                done = FinishedJob.unpack(self._done.pop(job_id))
                q.forget_finished(done)
                purged.append(job_id)
        if purged:
            self.observer.jobs_forgotten(purged)
        return len(purged)

    def evict_finished(self, now: float) -> int:
        """Forgets finished jobs past the retention period or the count bound. Once the
        bound is reached this runs for every job that finishes, so it reads the few fields
        it needs from the stored form instead of unpacking whole jobs."""
        horizon = now - self.limits.finished_retention_seconds
        bound = self.limits.max_finished_jobs
        evicted: list[str] = []
        done = self._done
        while done:
            job_id, queue, state, finish_time, finish_seq, key = FinishedJob.index_fields(
                done[next(iter(done))]
            )
            if len(done) <= bound and finish_time > horizon:
                break
            done.popitem(last=False)
            self._queues[queue].forget(state, finish_seq, job_id, key)
            evicted.append(job_id)
        if evicted:
            self.observer.jobs_forgotten(evicted)
        return len(evicted)

    def list_jobs(
        self, queue: str, state: JobState, page_size: int, page_token: str
    ) -> tuple[list[JobView], str]:
        """One page of a queue's jobs; see listing.page_of_jobs for the order."""
        lim.check_queue_name(queue, "queue")
        return page_of_jobs(
            self._queue(queue), self._jobs, self._done, state, page_size, page_token
        )

    # ---- drain and snapshot -------------------------------------------------

    def begin_drain(self) -> None:
        """Stops intake and dispatch; underway jobs may still finish."""
        self.draining = True
        for worker in self._workers.values():
            worker.draining = True

    def reclaim_underway(self) -> int:
        """Puts every underway job back to waiting (the drain grace ran out)."""
        leases = list(self._leases.values())
        for lease in leases:
            self._release(lease, self._now)
            if not lease.cancelled:
                self._give_back(lease.job, self._now, "drain grace ran out")
        return len(leases)

    def unfinished_jobs(self) -> list[JobRecord]:
        """Every queue's unfinished jobs: in submit order per queue, so a restore rebuilds
        ordering-key chains as they were; dispatch order comes back from (priority, seq)."""
        return sorted(self._jobs.values(), key=lambda j: (j.queue, j.seq))

    def _restore_finished(self, job: JobRecord) -> None:
        """A finished job from a journal: readable again until its retention ends."""
        q = self._ensure_queue(job.queue, bounded=False)
        done = FinishedJob.of(job, job.finish_time or self._now, self._next_seq())
        self._done[job.id] = done.pack()
        q.record_finished(done)
        if job.idempotency_key:
            q.dedup[dedup_name(job.headers, job.idempotency_key)] = job.id

    def restore(
        self,
        queues: Sequence[tuple[str, QueueSettings]],
        jobs: Iterable[JobRecord],
        now: float = 0.0,
    ) -> None:
        """Loads a snapshot or journal into an empty engine; jobs keep ids, priorities,
        attempts, keys and their relative order (given in submit order; finished jobs in
        finish order). A job that was underway waits again: its lease is gone. The engine
        takes ownership of the records (copying 1,000,000 of them would double start-up);
        ``jobs`` may be a generator, so a journal is restored as it is read."""
        now = self._clock(now)
        if self._jobs or self._queues:
            raise FailedPrecondition("restore needs an empty engine")
        for name, settings in queues:
            lim.check_queue_name(name)
            self._ensure_queue(name, bounded=False).apply_settings(settings, now)
        filed: dict[str, tuple[QueueState, list[tuple[int, int, str]]]] = {}
        for job in jobs:
            if job.state.finished:
                self._restore_finished(job)
                continue
            restored = job
            restored.seq = self._next_seq()
            restored.lease = None
            restored.in_lane = False
            at = filed.get(restored.queue)
            if at is None:
                at = filed[restored.queue] = (self._ensure_queue(restored.queue, False), [])
            q, entries = at
            restored.queue = q.name  # one string per queue, not one per job read back
            if not restored.headers:
                restored.headers = NO_HEADERS
            self._jobs[restored.id] = restored
            if restored.idempotency_key:
                q.dedup[dedup_name(restored.headers, restored.idempotency_key)] = restored.id
            if restored.expire_at is not None:
                heapq.heappush(self._expiries, (restored.expire_at, restored.seq, restored.id))
            if restored.state is JobState.WAITING:
                self._restore_waiting(restored)  # its parents may come later: flows.py
                continue
            if restored.ordering_key or (
                restored.not_before is not None and restored.not_before > now
            ):
                self._wait(q, restored, now)
                continue
            # What _wait does for a job ready now, with its pending index filed in one
            # sort per queue at the end rather than one SortedList.add per job.
            restored.state = JobState.PENDING
            entry = restored.pending_entry = (-restored.priority, restored.seq, restored.id)
            entries.append(entry)
            q.ready.push(restored, now)
        for q, entries in filed.values():
            q.pending.update(entries)
            self._consider(q, now)
        self._resolve_restored(now)
