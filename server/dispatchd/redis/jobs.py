"""Jobs and queues on Redis: submit, read, cancel, reprioritize, retry, purge, list, and
queue settings. Validation is the engine's own (engine/limits.py), so bad input gets the
same status and message as on the embedded backend."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Any

from redis.crc import key_slot

from dispatchd.engine import JobState, NewJob
from dispatchd.engine import limits as lim
from dispatchd.engine.errors import EngineError, FailedPrecondition
from dispatchd.engine.flows import batch_closed, check_flow_fields, parent_not_found
from dispatchd.engine.ids import IdSource
from dispatchd.engine.listing import page_plan
from dispatchd.engine.model import QueueFigures, QueueView
from dispatchd.engine.paging import encode
from dispatchd.engine.policies import KeyLimits
from dispatchd.redis import records
from dispatchd.redis.flows import RedisFlows
from dispatchd.redis.records import StoredJob
from dispatchd.redis.scripts import JOB_FIELDS
from dispatchd.redis.store import QUEUES_KEY


def _setting_args(
    width: int | None, paused: bool | None, lease: float | None, policies: dict[str, object]
) -> list[Any]:
    """update.lua's (setting, value) pairs for what the request names."""
    changes: list[Any] = []
    if width is not None:
        changes += ["width", width]
    if paused is not None:
        changes += ["paused", int(paused)]
    if lease is not None:
        changes += ["lease", repr(lease)]
    if "rate" in policies:
        changes += ["rate", records.rate_text(policies["rate"])]  # type: ignore[arg-type]
    if "retry_policy" in policies:
        changes += ["rp", records.policy_text(policies["retry_policy"])]  # type: ignore[arg-type]
    if "max_pending" in policies:
        changes += ["maxp", policies["max_pending"]]
    if "dedup_window" in policies:
        changes += ["dedup", repr(policies["dedup_window"])]
    if "key_limits" in policies:
        limits = policies["key_limits"]
        if isinstance(limits, KeyLimits):
            changes += ["kcap", limits.max_in_flight_per_key]
            changes += ["krate", records.rate_text(limits.per_key_rate)]
            changes += ["kwin", records.windows_text(limits.windows)]
        else:
            changes += ["kcap", "", "krate", "", "kwin", ""]
    if "http_target" in policies:
        changes += ["ht", records.target_text(policies["http_target"])]  # type: ignore[arg-type]
    return changes + _throttle_args(policies)


def _throttle_args(policies: dict[str, object]) -> list[Any]:
    """update.lua's pairs for the throttle settings (docs/rate-limits.md)."""
    changes: list[Any] = []
    if "max_throttle_bounces" in policies:
        changes += ["mtb", policies["max_throttle_bounces"]]
    if "adaptive" in policies:
        changes += ["ad", records.adaptive_text(policies["adaptive"])]  # type: ignore[arg-type]
    if "windows" in policies:
        changes += ["win", records.windows_text(policies["windows"])]  # type: ignore[arg-type]
    return changes


def _check_flows(specs: Sequence[NewJob]) -> None:
    """The shape of batch ids and parents, and (Redis: one hash tag per queue) that every
    parent is of its child's queue, as the embedded engine requires too (engine/flows.py)."""
    check_flow_fields(specs)
    for i, spec in enumerate(specs):
        for parent in spec.parent_ids:
            queue = records.queue_of(parent)
            if queue == spec.queue and records.JOB_ID.fullmatch(parent):
                continue
            why = "is unknown (or purged)" if queue is None else f"is of queue {queue!r}"
            error = parent_not_found(parent, spec.queue, why)
            raise error.under(f"jobs[{i}]", label=True) if len(specs) > 1 else error


def _slot_parts(specs: Sequence[NewJob]) -> list[list[int]]:
    """The indexes of ``specs`` grouped by their queue's Cluster slot, in request order."""
    by_slot: dict[int, list[int]] = {}
    for i, spec in enumerate(specs):
        by_slot.setdefault(key_slot(records.cfg_key(spec.queue).encode()), []).append(i)
    return list(by_slot.values())


def _partial(failed: EngineError, admitted: list[int], job_ids: list[str]) -> EngineError:
    """``failed`` (same class, status and reason), saying which jobs were admitted anyway."""
    shown = ", ".join(str(i) for i in admitted[:20]) + (" ..." if len(admitted) > 20 else "")
    message = (
        f"{failed}; this batch spans several Redis Cluster slots and was admitted per slot: "
        f"jobs [{shown}] ({len(admitted)} of them) were admitted, the others were not; a "
        "retry with idempotency keys finds the admitted ones"
    )
    metadata = {**failed.metadata, "admitted": str(len(admitted)), "first_admitted": job_ids[0]}
    error = type(failed)(
        message,
        field=failed.field,
        reason=failed.reason,
        retry_after=failed.retry_after,
        metadata=metadata,
    )
    return error


class RedisJobs(RedisFlows):
    """The request-side operations; leasing.py has the worker side."""

    _ids: IdSource | None = None

    def _new_ulid(self, now: float) -> str:
        if self._ids is None:
            self._ids = IdSource(self.rng)
        return self._ids.job_id(now)

    def new_ulid(self, now: float) -> str:
        """A fresh ULID (batch callbacks get their job ids when the batch is created)."""
        return self._new_ulid(now)

    #: The fleet's waiting jobs (pending and scheduled, every queue) at the last count,
    #: and how many this replica had admitted then (see waiting_estimate).
    _waiting_counted = 0
    _admitted_at_count = 0
    _admitted = 0

    def waiting_estimate(self) -> int:
        """The fleet's waiting jobs for --max-pending-total: the last count (count_waiting,
        every second) plus what this replica admitted since. Other replicas' admissions
        since the count are not in it: N replicas can pass the bound by what the others
        admit within a second."""
        return self._waiting_counted + self._admitted - self._admitted_at_count

    async def count_waiting(self) -> int:
        """Counts the waiting jobs of every queue (one pipeline of three reads a queue)."""
        mark = self._admitted
        names = await self.queue_names()
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.zcard(records.base(name) + ":pending")
            pipe.zcard(records.base(name) + ":sched")
            pipe.hget(records.cfg_key(name), "chained")
        total = sum(int(v or 0) for v in await self.send(pipe)) if names else 0
        self._waiting_counted, self._admitted_at_count = total, mark
        return total

    async def submit(self, specs: Sequence[NewJob], now: float) -> list[tuple[StoredJob, bool]]:
        """All of ``specs`` or none (one script); the engine's checks and messages. On a
        Redis Cluster a batch whose queues live on several slots is one script per slot
        (each part atomic), the answers in request order (see _submit_split)."""
        lim.check_batch(specs, self.limits)
        _check_flows(specs)
        queues = {s.queue for s in specs}
        await self.check_new_queues(queues)
        ids = [records.job_id(self._new_ulid(now), spec.queue) for spec in specs]
        await self._mark_timed(specs, now)
        parts = _slot_parts(specs) if self.cluster else [list(range(len(specs)))]
        if len(parts) == 1:
            return await self._submit_part(specs, ids)
        return await self._submit_split(specs, ids, parts)

    async def _submit_part(
        self, specs: Sequence[NewJob], ids: Sequence[str]
    ) -> list[tuple[StoredJob, bool]]:
        """One script: every job of ``specs`` (queues of one slot on a Cluster) or none."""
        queues = {s.queue for s in specs}
        args: list[Any] = [
            self.limits.default_width,
            self.limits.default_lease_seconds,
            self.limits.max_pending_total,
            self.waiting_estimate(),
        ]
        for spec, job_id in zip(specs, ids, strict=True):
            args += records.submit_args(spec, job_id)
        reply = await self.run("submit", [records.cfg_key(q) for q in sorted(queues)], args)
        if reply[0] == b"full":
            name, waiting, n, bound = reply[1].decode(), *(int(x) for x in reply[2:5])
            raise lim.queue_full(name, waiting, n, bound)
        if reply[0] == b"total":
            waiting, n, bound = (int(x) for x in reply[1:4])
            raise lim.server_full(waiting, n, bound)
        if reply[0] in (b"closed", b"parent"):  # workflows: submit.lua refused the batch
            queue, what, i = reply[1].decode(), reply[2].decode(), int(reply[3])
            error = (
                batch_closed(queue, what)
                if reply[0] == b"closed"
                else parent_not_found(what, queue, "is unknown (or purged)")
            )
            raise error.under(f"jobs[{i}]", label=True) if len(specs) > 1 else error
        await self.note_queues(queues, {q.decode() for q in reply[2]})
        out = [(records.job_of(item[1:]), item[0] == 1) for item in reply[1]]
        self._admitted += sum(1 for _, duplicate in out if not duplicate)
        return out

    async def _submit_split(
        self, specs: Sequence[NewJob], ids: Sequence[str], parts: list[list[int]]
    ) -> list[tuple[StoredJob, bool]]:
        """A Cluster batch over several slots: the parts run at once, each atomic. When
        one fails, the others' jobs stay admitted (no script can undo another slot's): the
        first failure is raised with which jobs were admitted, so a caller retries the
        batch (idempotency keys make the admitted ones come back as duplicates)."""
        answers = await asyncio.gather(
            *(self._submit_part([specs[i] for i in p], [ids[i] for i in p]) for p in parts),
            return_exceptions=True,
        )
        out: list[tuple[StoredJob, bool] | None] = [None] * len(specs)
        failed: BaseException | None = None
        for part, answer in zip(parts, answers, strict=True):
            if isinstance(answer, BaseException):
                failed = failed or answer
                continue
            for i, item in zip(part, answer, strict=True):
                out[i] = item
        if failed is None:
            return [item for item in out if item is not None]
        admitted = [i for i, item in enumerate(out) if item is not None]
        if not admitted or not isinstance(failed, EngineError):
            raise failed
        raise _partial(failed, admitted, [ids[i] for i in admitted])

    async def _mark_timed(self, specs: Sequence[NewJob], now: float) -> None:
        """Delayed and expiring jobs need a reaper at their time, whoever serves their
        queue (or nobody): filed in the due index before they exist (redis/reaping.py)."""
        soonest: dict[str, float] = {}
        for spec in specs:
            times = [t for t in (spec.not_before, spec.expire_at) if t is not None and t > now]
            if times:
                soonest[spec.queue] = min(soonest.get(spec.queue, math.inf), *times)
        for queue, when in soonest.items():
            await self.reap_index.mark(queue, when, now)

    @staticmethod
    def _queue_of(job_id: str) -> str:
        lim.check_job_id(job_id, records.JOB_ID, "a ULID, '@' and its queue's name")
        queue = records.queue_of(job_id)
        assert queue is not None  # the shape says it has one
        return queue

    async def get_job(self, job_id: str) -> StoredJob:
        queue = self._queue_of(job_id)
        values = await self.call("HMGET", records.job_key(queue, job_id), *JOB_FIELDS, "pl")
        if values[0] is None:
            raise lim.not_found_job(job_id)
        return records.job_of(values[:-1], values[-1] or b"")

    async def _job_op(
        self,
        op: str,
        job_id: str,
        *args: Any,
        finished: str = "",
        wrong_state: Callable[[str, str], FailedPrecondition] = lim.not_retryable,
    ) -> StoredJob:
        """Runs a job script; its codes become the engine's refusals: 'nf' not found, 'fin'
        already finished (``finished`` says why that matters), 'state' not in a state the
        operation takes (``wrong_state`` words it)."""
        queue = self._queue_of(job_id)
        reply = await self.run(op, [records.cfg_key(queue)], [job_id, *args])
        if reply[0] == b"nf":
            raise lim.not_found_job(job_id)
        if reply[0] == b"fin":
            raise lim.job_finished(job_id, JobState(int(reply[1])).name, finished)
        if reply[0] == b"state":
            raise wrong_state(job_id, JobState(int(reply[1])).name)
        fields = reply[1]  # the job's fields, then its payload (as the engine's record has it)
        return records.job_of(fields[:-1], fields[-1] or b"")

    async def cancel(self, job_id: str) -> StoredJob:
        return await self._job_op("cancel", job_id)

    async def reprioritize(self, job_id: str, priority: int) -> StoredJob:
        return await self._job_op(
            "reprioritize",
            job_id,
            priority,
            finished=lim.PRIORITY_IS_FINAL,
            wrong_state=lim.not_reprioritizable,
        )

    async def retry(self, job_id: str) -> StoredJob:
        return await self._job_op("retry", job_id)

    async def purge(self, queue: str, state: JobState) -> int:
        lim.check_queue_name(queue, "queue")
        lim.check_purge_state(state)
        await self.get_queue(queue)
        return int(await self.run("purge", [records.cfg_key(queue)], [int(state)]))

    # ---- queues ---------------------------------------------------------------------

    async def get_queue(self, name: str) -> QueueView:
        lim.check_queue_name(name)
        reply = await self.run("view", [records.cfg_key(name)], [])
        if not reply:
            raise lim.not_found_queue(name)
        return records.queue_of_view(name, reply)

    async def list_queues(self) -> list[QueueView]:
        views = []
        for name in await self.queue_names():
            reply = await self.run("view", [records.cfg_key(name)], [])
            if reply:
                views.append(records.queue_of_view(name, reply))
        return views

    async def queue_figures(self) -> list[QueueFigures]:
        """Each queue's view and figures: two reads per queue (each on its own slot)."""
        out = []
        for view in await self.list_queues():
            reply = await self.run("figures", [records.cfg_key(view.name)], [])
            if reply:
                out.append(records.figures_of(view, reply))
        return out

    async def update_queue(
        self,
        name: str,
        *,
        width: int | None = None,
        paused: bool | None = None,
        lease_seconds: float | None = None,
        create: bool = False,
        **policies: object,
    ) -> QueueView:
        lim.check_queue_update(name, width, lease_seconds, policies, self.limits)
        if create:
            await self.check_new_queues({name})
        changes = _setting_args(width, paused, lease_seconds, policies)
        defaults = [self.limits.default_width, self.limits.default_lease_seconds]
        reply = await self.run(
            "update", [records.cfg_key(name)], [int(create), *defaults, *changes]
        )
        if reply == b"nf":
            raise lim.not_found_queue(name)
        await self.note_queues({name}, {name} if reply == b"new" else None)
        return await self.get_queue(name)

    async def delete_queue(self, name: str) -> int:
        """One script checks the queue is empty and deletes it with its finished jobs and
        its registry entry; the engine's refusals and messages."""
        lim.check_queue_name(name)
        # On a Cluster the registry is on another slot than the queue: its entry goes in a
        # command of its own after the script (a crash between leaves a name the listing
        # skips, as it skips any registered queue that is gone).
        keys = [records.cfg_key(name)] if self.cluster else [records.cfg_key(name), QUEUES_KEY]
        reply = await self.run("delete", keys, [])
        if reply[0] == b"nf":
            raise lim.not_found_queue(name)
        if reply[0] == b"busy":
            names = ("pending", "scheduled", "underway", "slots", "workers")
            holds = {k: int(x) for k, x in zip(names, reply[1:6], strict=True)}
            raise lim.queue_not_empty(name, holds, reply[6] == 1)
        if self.cluster:
            await self.call("SREM", QUEUES_KEY, name)
        self.forget_queue(name)
        return int(reply[1])

    async def ensure_queue(self, name: str) -> QueueView:
        """A queue a worker names exists from then on (as on the embedded backend)."""
        return await self.update_queue(name, create=True)

    # ---- listing --------------------------------------------------------------------

    async def list_jobs(
        self, queue: str, state: JobState, page_size: int, page_token: str
    ) -> tuple[list[StoredJob], str]:
        """One page in the embedded engine's orders and token format (engine/listing.py),
        read by one script: a page resumes strictly after the last job of the page before,
        so a job that stays in its state the whole listing is listed exactly once, whatever
        is submitted, finished or moved meanwhile."""
        lim.check_queue_name(queue, "queue")
        limit, cursor, phases = page_plan(queue, state, page_size, page_token)
        args: list[Any] = [limit + 1]
        for phase in phases:
            args += [int(phase), *records.page_start(phase, cursor)]
        reply = await self.run("list", [records.cfg_key(queue)], args)
        if reply == b"nf":
            raise lim.not_found_queue(queue)
        items, resume = reply
        jobs = [records.job_of(item[3:-1], item[-1] or b"") for item in items[:limit]]
        last = items[limit - 1] if len(items) > limit else resume
        if not last:
            return jobs, ""
        after = records.cursor_of(JobState(int(last[0])), last[1], last[2])
        return jobs, encode(queue, int(state), after)
