"""Workflows in the embedded engine: progress reports, batches and dependencies
(docs/workflows.md). The rules and words both backends share are in flow_rules.py; the
Redis backend makes the same decisions in lua/progress.lua, lua/batch.lua and
lua/includes/flows.lua."""

from __future__ import annotations

from collections.abc import Sequence

from dispatchd.engine import limits as lim
from dispatchd.engine.errors import FailedPrecondition, NotFound
from dispatchd.engine.flow_rules import (
    _FINAL_COUNTS as _FINAL_COUNTS,
)
from dispatchd.engine.flow_rules import (
    BATCH_CANCELLED as BATCH_CANCELLED,
)
from dispatchd.engine.flow_rules import (
    BATCH_HEADER as BATCH_HEADER,
)
from dispatchd.engine.flow_rules import (
    BATCH_ID as BATCH_ID,
)
from dispatchd.engine.flow_rules import (
    COUNT_HEADER as COUNT_HEADER,
)
from dispatchd.engine.flow_rules import (
    MAX_BATCH_DESCRIPTION as MAX_BATCH_DESCRIPTION,
)
from dispatchd.engine.flow_rules import (
    MAX_PARENTS as MAX_PARENTS,
)
from dispatchd.engine.flow_rules import (
    MAX_PROGRESS_MESSAGE as MAX_PROGRESS_MESSAGE,
)
from dispatchd.engine.flow_rules import (
    PARENT_FAILED as PARENT_FAILED,
)
from dispatchd.engine.flow_rules import (  # re-exported: the rules live there
    PROGRESS_INTERVAL as PROGRESS_INTERVAL,
)
from dispatchd.engine.flow_rules import (
    BatchRecord as BatchRecord,
)
from dispatchd.engine.flow_rules import (
    BatchView as BatchView,
)
from dispatchd.engine.flow_rules import (
    batch_closed as batch_closed,
)
from dispatchd.engine.flow_rules import (
    batch_exists as batch_exists,
)
from dispatchd.engine.flow_rules import (
    batch_not_found as batch_not_found,
)
from dispatchd.engine.flow_rules import (
    callback_headers as callback_headers,
)
from dispatchd.engine.flow_rules import (
    check_batch_id as check_batch_id,
)
from dispatchd.engine.flow_rules import (
    check_callback as check_callback,
)
from dispatchd.engine.flow_rules import (
    check_description as check_description,
)
from dispatchd.engine.flow_rules import (
    check_flow_fields as check_flow_fields,
)
from dispatchd.engine.flow_rules import (
    check_progress as check_progress,
)
from dispatchd.engine.flow_rules import (
    parent_not_found as parent_not_found,
)
from dispatchd.engine.model import FinishedJob, JobRecord, JobState, NewJob, WorkerRecord
from dispatchd.engine.state import EngineState

# ---- the embedded engine's part ---------------------------------------------------------


class FlowsMixin(EngineState):
    """Progress, batches and dependencies of the embedded engine."""

    # ---- progress ---------------------------------------------------------------------

    def report_progress(
        self,
        worker: WorkerRecord,
        job_id: str,
        lease_id: str,
        percent: int | None,
        message: str,
        now: float,
    ) -> bool:
        """Keeps a worker's report on a job it holds; returns whether it was stored (a
        report for a lease it does not hold, or within the interval, is dropped)."""
        now = self._clock(now)
        check_progress(percent, message)
        lease = worker.leases.get(lease_id)
        if lease is None or lease.job.id != job_id or lease.cancelled:
            return False
        job = lease.job
        if job.progress is not None and now - job.progress[2] < PROGRESS_INTERVAL:
            job.progress_dropped += 1
            return False
        job.progress = (percent, message, now)
        self.observer.job_progress(job)
        return True

    # ---- batches ----------------------------------------------------------------------

    def create_batch(
        self,
        queue: str,
        batch_id: str,
        description: str,
        on_success: NewJob | None,
        on_complete: NewJob | None,
        now: float,
    ) -> BatchView:
        now = self._clock(now)
        self._refuse_while_draining()
        lim.check_queue_name(queue, "queue")
        check_batch_id(batch_id)
        check_description(description)
        for what, spec in (("on_success", on_success), ("on_complete", on_complete)):
            if spec is not None:
                check_callback(spec, queue, what)
                lim.check_batch([spec], self.limits)
        if (queue, batch_id) in self._batches:
            raise batch_exists(queue, batch_id)
        self._ensure_queue(queue)
        batch = BatchRecord(queue, batch_id, description, now, on_success, on_complete)
        self._batches[(queue, batch_id)] = batch
        self.observer.batch_changed(queue, batch_id)
        return batch.view()

    def _batch(self, queue: str, batch_id: str) -> BatchRecord:
        lim.check_queue_name(queue, "queue")
        check_batch_id(batch_id)
        batch = self._batches.get((queue, batch_id))
        if batch is None:
            raise batch_not_found(queue, batch_id)
        return batch

    def get_batch(self, queue: str, batch_id: str) -> BatchView:
        return self._batch(queue, batch_id).view()

    def close_batch(self, queue: str, batch_id: str, now: float) -> BatchView:
        now = self._clock(now)
        self._refuse_while_draining()
        batch = self._batch(queue, batch_id)
        if not batch.closed:
            batch.closed = True
            self._batch_moved(batch, now)
        return batch.view()

    def cancel_batch(
        self, queue: str, batch_id: str, now: float
    ) -> tuple[BatchView, int, list[tuple[WorkerRecord, str]]]:
        """Closes the batch and cancels its unfinished jobs. Returns the batch, how many
        it cancelled, and the (worker, job id) pairs whose worker must be told."""
        now = self._clock(now)
        self._refuse_while_draining()
        batch = self._batch(queue, batch_id)
        batch.closed = True
        tell: list[tuple[WorkerRecord, str]] = []
        ids = sorted(batch.live, key=lambda i: self._jobs[i].seq)
        for job_id in ids:
            job = self._jobs.get(job_id)
            if job is None:  # a child cancelled with its parent meanwhile
                continue
            job.cancel_reason = BATCH_CANCELLED.format(batch=batch_id)
            _, worker = self.cancel(job_id, now)
            if worker is not None:
                tell.append((worker, job_id))
        self._batch_moved(batch, now)
        return batch.view(), len(ids), tell

    def _batch_moved(self, batch: BatchRecord, now: float) -> None:
        """Something changed the batch: once it is closed and its jobs are final, its
        callbacks are submitted (here, in the same engine call as the transition that made
        it so: the journal commits both or neither)."""
        if batch.closed and not batch.live and batch.complete_time is None:
            batch.complete_time = now
            view = batch.view()
            extra = callback_headers(view)
            all_ok = view.succeeded == view.total
            if batch.on_success is not None and all_ok:
                batch.on_success_job_id = self._submit_callback(batch.on_success, extra, now)
            if batch.on_complete is not None:
                batch.on_complete_job_id = self._submit_callback(batch.on_complete, extra, now)
            self.observer.batch_completed(batch.view())
        self.observer.batch_changed(batch.queue, batch.batch_id)
        if not batch.live:
            self.observer.batch_settled(batch.view())

    def _submit_callback(self, spec: NewJob, extra: dict[str, str], now: float) -> str:
        headers = {**spec.headers, **extra}
        job = self._admit(spec._replace(headers=headers), now)
        self.observer.jobs_submitted([job])
        return job.id

    def delete_batches_of(self, queue: str) -> None:
        for key in [k for k in self._batches if k[0] == queue]:
            del self._batches[key]
            self.observer.batch_deleted(key[0], key[1])

    def evict_batches(self, now: float) -> None:
        """Completed batches are forgotten after the finished-job retention."""
        horizon = now - self.limits.finished_retention_seconds
        for key, batch in list(self._batches.items()):
            if batch.complete_time is not None and batch.complete_time <= horizon:
                del self._batches[key]
                self.observer.batch_deleted(*key)

    # ---- admission (called by Engine.submit_many and _admit) -----------------------

    def _check_flows(self, specs: Sequence[NewJob]) -> None:
        """Refuses, before anything changes, a job whose batch is closed or whose parent
        is not a known job of its queue."""
        check_flow_fields(specs)
        for i, spec in enumerate(specs):
            if not spec.batch_id and not spec.parent_ids:
                continue  # most jobs: no batch, no parents
            try:
                if spec.batch_id:
                    batch = self._batches.get((spec.queue, spec.batch_id))
                    if batch is not None and batch.closed:
                        raise batch_closed(spec.queue, spec.batch_id)
                for parent in spec.parent_ids:
                    self._check_parent(parent, spec.queue)
            except (NotFound, FailedPrecondition) as e:
                where = f"jobs[{i}]" if len(specs) > 1 else ""
                raise (e.under(where, label=True) if where else e) from None

    def _check_parent(self, parent: str, queue: str) -> None:
        job = self._jobs.get(parent)
        if job is None:
            raw = self._done.get(parent)
            if raw is None:
                raise parent_not_found(parent, queue, "is unknown (or purged)")
            job_queue = raw[1]
        else:
            job_queue = job.queue
        if job_queue != queue:
            raise parent_not_found(parent, queue, f"is of queue {job_queue!r}")

    def _flows_admit(self, job: JobRecord, now: float) -> bool:
        """A new job joins its batch and waits for its parents. Returns True when it is
        not to wait in its queue (WAITING, or cancelled because a parent failed)."""
        if job.batch_id:
            key = (job.queue, job.batch_id)
            batch = self._batches.get(key)
            if batch is None:
                batch = BatchRecord(job.queue, job.batch_id, "", now)
                self._batches[key] = batch
            batch.total += 1
            batch.live.add(job.id)
            self.observer.batch_changed(job.queue, job.batch_id)
        if not job.parent_ids:
            return False
        waiting: set[str] = set()
        for parent in job.parent_ids:
            live = self._jobs.get(parent)
            if live is not None:
                waiting.add(parent)
                continue
            done = FinishedJob.unpack(self._done[parent])
            if done.state is not JobState.SUCCEEDED and not job.run_after_failed_parents:
                job.cancel_reason = PARENT_FAILED.format(parent=parent, state=done.state.name)
                self._finish(job, JobState.CANCELLED, now, release_key=False)
                return True
        if not waiting:
            return False
        job.state = JobState.WAITING
        job.waiting_on = waiting
        self._queues[job.queue].waiting.add((job.seq, job.id))
        for parent in waiting:
            self._children.setdefault(parent, []).append(job.id)
        return True

    # ---- finishing (called by EngineState._finish) ------------------------------------

    def _flows_finished(self, job: JobRecord, now: float) -> None:
        if job.batch_id:
            batch = self._batches.get((job.queue, job.batch_id))
            if batch is not None and job.id in batch.live:
                batch.live.discard(job.id)
                batch.finals[job.state] = batch.finals.get(job.state, 0) + 1
                self._batch_moved(batch, now)
        children = self._children.pop(job.id, None)
        if children:
            self._parent_final(job, children, now)

    def _parent_final(self, parent: JobRecord, children: list[str], now: float) -> None:
        succeeded = parent.state is JobState.SUCCEEDED
        for child_id in children:
            child = self._jobs.get(child_id)
            if child is None or child.state is not JobState.WAITING or child.waiting_on is None:
                continue
            if not succeeded and not child.run_after_failed_parents:
                child.cancel_reason = PARENT_FAILED.format(
                    parent=parent.id, state=parent.state.name
                )
                self._leave_waiting(child)
                self._finish(child, JobState.CANCELLED, now)  # its own children follow
                continue
            child.waiting_on.discard(parent.id)
            if not child.waiting_on:
                self._release_waiting(child, now)

    def _leave_waiting(self, job: JobRecord) -> None:
        """``job`` stops being WAITING (released, cancelled, expired): out of the listing."""
        job.waiting_on = None
        self._queues[job.queue].waiting.discard((job.seq, job.id))

    def _release_waiting(self, job: JobRecord, now: float) -> None:
        self._leave_waiting(job)
        self._wait(self._queues[job.queue], job, now)
        self.observer.job_changed(job)

    # ---- restore ----------------------------------------------------------------------

    def _restore_waiting(self, job: JobRecord) -> None:
        """A WAITING job from a journal or snapshot: resolved once every job is back."""
        self._queues[job.queue].waiting.add((job.seq, job.id))
        self._restored_waiting.append(job)

    def _resolve_restored(self, now: float) -> None:
        """Every job is back: waiting jobs wait for their parents that are still live
        (the journal committed each parent's end with its children's moves)."""
        pending, self._restored_waiting = self._restored_waiting, []
        for job in pending:
            waiting = {p for p in job.parent_ids if p in self._jobs}
            if not waiting:
                self._release_waiting(job, now)
                continue
            job.waiting_on = waiting
            for parent in waiting:
                self._children.setdefault(parent, []).append(job.id)

    def restore_batches(self, views: Sequence[BatchView]) -> None:
        """Batches from a journal or snapshot; their live jobs are found among the jobs
        restored before."""
        live: dict[tuple[str, str], set[str]] = {}
        for job in self._jobs.values():
            if job.batch_id:
                live.setdefault((job.queue, job.batch_id), set()).add(job.id)
        for v in views:
            finals = dict(zip([s for _, s in _FINAL_COUNTS], v[12:], strict=True))
            self._batches[(v.queue, v.batch_id)] = BatchRecord(
                v.queue,
                v.batch_id,
                v.description,
                v.create_time,
                v.on_success,
                v.on_complete,
                v.closed,
                v.complete_time,
                v.on_success_job_id,
                v.on_complete_job_id,
                v.total,
                {s: n for s, n in finals.items() if n},
                live.get((v.queue, v.batch_id), set()),
            )

    def all_batches(self) -> list[BatchView]:
        return [b.view() for _, b in sorted(self._batches.items())]
