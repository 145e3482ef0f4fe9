"""Schedules on Redis: every replica may fire, exactly one wins each firing.

A schedule lives in a hash (``ds:s:<id>``: its stored definition, cursor, counts, latest
jobs and a version) beside a list of its recent firings, an index of next fire times
(``ds:due``) and one of ids (``ds:ids``). A replica plans a firing with the same pure code as
the embedded engine (engine/schedules.py) from what it read, then fire.lua submits the jobs
and records the firing in one script, only if the version is still the one it read: two
replicas racing for a tick both plan it, one script wins, the other is told it lost. Each
tick's job also carries the idempotency key of (schedule, tick), so not even a lost reply
(the script ran, the answer did not come back) can make a second job for one tick.

Every key here is outside the queues' hash tags. On one Redis a firing is one script over
the schedule's keys and its queue's. On a Cluster those are two slots (the schedule's keys
share the hash tag ``{ds}``), so a firing is two scripts in a fixed order, each atomic on its
slot: fire_jobs.lua submits the jobs on the queue's slot and keeps what it decided under the
firing's token (the schedule's create time and the version read), then fire_record.lua
records that, version-checked as fire.lua. A replica racing the first, or the next pass
after a crash between the two, plans from the same version, gets the first decision back
from fire_jobs.lua instead of submitting again, and records it (docs/redis.md, Cluster)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from dispatchd import schedule_convert
from dispatchd.engine import EngineError, EngineLimits, NewJob
from dispatchd.engine import limits as lim
from dispatchd.engine.errors import AlreadyExists, Reason, Unavailable
from dispatchd.engine.ids import IdSource
from dispatchd.engine.schedule_book import not_found_schedule, page_bounds, page_token_after
from dispatchd.engine.schedules import (
    MAX_FIRINGS_PER_PASS,
    Firing,
    FiringCause,
    FiringOutcome,
    Overlap,
    ScheduleRecord,
    backfill,
    backfill_ticks,
    changed,
    check_schedule_id,
    fire_due,
    started,
    trigger,
)
from dispatchd.redis import records
from dispatchd.redis.store import RedisStore
from dispatchd_client.v1 import dispatcher_pb2 as pb

log = logging.getLogger("dispatchd.redis")

#: The schedules' keys: on a Cluster under one hash tag, so a schedule's script is on one slot.
PREFIX, CLUSTER_PREFIX = "ds:", "{ds}:"
#: How often a replica looks for fire times another replica set (its own it knows at once).
POLL_SECONDS = 1.0
#: A firing that lost its race to another replica, or a change that met a firing, is planned
#: again from a fresh read this many times.
RETRIES = 5
_UNFINISHED = {b"1", b"2", b"6"}  # PENDING, UNDERWAY, SCHEDULED


def _due_arg(rec: ScheduleRecord) -> str:
    fire = rec.next_fire()
    return "" if fire is None else repr(fire)


def _stored(rec: ScheduleRecord) -> bytes:
    msg = schedule_convert.schedule_to_pb(rec, next_fires=0, recent=0)
    return msg.SerializeToString()


def _message(outcome: int, message: str, queue: str, waiting: int, bound: int) -> str:
    """A firing's message; the script names a full queue by numbers, the words are here."""
    if outcome == FiringOutcome.REFUSED and not message:
        return str(lim.queue_full(queue, waiting, 1, bound))
    return message


def _decided(item: dict[str, Any], queue: str) -> Firing:
    """One firing of a record fire_jobs.lua decided."""
    outcome = int(item["o"])
    return Firing(
        tick=float(item["t"]),
        fire_time=float(item["f"]),
        job_id=item["j"],
        outcome=FiringOutcome(outcome),
        cause=FiringCause(int(item["c"])),
        message=_message(outcome, item["m"], queue, int(item["w"]), int(item["b"])),
        count=int(item["n"]),
    )


def _firing_of(raw: bytes, queue: str) -> Firing:
    item = json.loads(raw)
    outcome = int(item["o"])
    return Firing(
        tick=float(item["t"]),
        fire_time=float(item["f"]),
        job_id=item["j"],
        outcome=FiringOutcome(outcome),
        cause=FiringCause(int(item["c"])),
        message=_message(outcome, item["m"], queue, int(item.get("w", 0)), int(item.get("b", 0))),
    )


def _record_of(
    fields: dict[bytes, bytes], firings: list[bytes]
) -> tuple[ScheduleRecord, bytes] | None:
    """A schedule as its hash and firings list hold it (None: no such schedule)."""
    if not fields:
        return None
    f = {k.decode(): v for k, v in fields.items()}
    msg = pb.Schedule()
    msg.ParseFromString(f["def"])
    rec = schedule_convert.schedule_from_stored(msg)
    rec.cursor = float(f["cur"])
    rec.submitted, rec.skipped = int(f["sub"]), int(f["skp"])
    rec.missed, rec.refused = int(f["mis"]), int(f["ref"])
    rec.latest_jobs = [j for j in f["lj"].decode().split(",") if j]
    rec.recent = [_firing_of(raw, rec.template.job.queue) for raw in firings]
    return rec, f["ver"]


class _Plan:
    """A Firer that submits nothing: it notes each job for fire.lua, with its id.
    ``refusal`` is what a submit raises instead (the queue it would create is past
    --max-queues): the planning records the firing as REFUSED, as the embedded engine's
    submit would make it."""

    def __init__(
        self,
        states: dict[str, bool],
        new_id: Callable[[NewJob], str],
        refusal: EngineError | None = None,
    ) -> None:
        self._states = states
        self._new_id = new_id
        self._refusal = refusal
        self.jobs: dict[str, NewJob] = {}

    def unfinished(self, job_id: str) -> bool:
        return self._states.get(job_id, False)

    def submit(self, job: NewJob) -> tuple[str, bool]:
        if self._refusal is not None:
            raise self._refusal
        job_id = self._new_id(job)
        self.jobs[job_id] = job
        return job_id, False


class RedisSchedules:
    """The schedule calls of one replica, and its firing loop."""

    def __init__(self, ops: RedisStore, clock: Callable[[], float]) -> None:
        self.ops = ops
        self.limits: EngineLimits = ops.limits
        self._prefix = CLUSTER_PREFIX if ops.cluster else PREFIX
        self.due_key, self.ids_key = self._prefix + "due", self._prefix + "ids"
        self.clock = clock
        self._ids = IdSource(ops.rng)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        #: Told of every firing this replica made (metrics, logs).
        self.on_fired: Callable[[str, str, Firing], None] = lambda sid, queue, firing: None

    def _key(self, schedule_id: str) -> str:
        return f"{self._prefix}s:{schedule_id}"

    def _keys(self, schedule_id: str) -> list[str]:
        return [self._key(schedule_id), self._key(schedule_id) + ":f", self.due_key, self.ids_key]

    # ---- reading ------------------------------------------------------------------------

    async def _read_many(self, ids: list[str]) -> list[tuple[ScheduleRecord, bytes] | None]:
        """The schedules named (None for one that is gone), read in one round trip."""
        pipe = self.ops.client.pipeline(transaction=False)
        for schedule_id in ids:
            pipe.hgetall(self._key(schedule_id))
            pipe.lrange(self._key(schedule_id) + ":f", 0, 9)
        replies = await self.ops.send(pipe)
        return [_record_of(f, raw) for f, raw in zip(replies[::2], replies[1::2], strict=True)]

    async def _read(self, schedule_id: str) -> tuple[ScheduleRecord, bytes]:
        check_schedule_id(schedule_id)
        (found,) = await self._read_many([schedule_id])
        if found is None:
            raise not_found_schedule(schedule_id)
        return found

    async def get(self, schedule_id: str) -> ScheduleRecord:
        return (await self._read(schedule_id))[0]

    async def list_page(self, page_size: int, page_token: str) -> tuple[list[ScheduleRecord], str]:
        size, after = page_bounds(page_size, page_token)
        start = f"({after}" if after else "-"
        ids = [
            i.decode()
            for i in await self.ops.call(
                "ZRANGE", self.ids_key, start, "+", "BYLEX", "LIMIT", 0, size + 1
            )
        ]
        found = await self._read_many(ids[:size]) if ids else []
        page = [rec for rec, _ in filter(None, found)]  # one deleted meanwhile is left out
        token = page_token_after(ids[size - 1]) if len(ids) > size else ""
        return page, token

    # ---- changing -----------------------------------------------------------------------

    async def _script(self, mode: str, rec: ScheduleRecord, version: bytes | str) -> str:
        reply = await self.ops.run(
            "schedule",
            self._keys(rec.id),
            [mode, rec.id, version, _stored(rec), repr(rec.cursor), _due_arg(rec)],
        )
        return str(reply.decode() if isinstance(reply, bytes) else reply)

    async def create(self, rec: ScheduleRecord) -> ScheduleRecord:
        check_schedule_id(rec.id)
        started(rec, self.clock(), self.limits)
        reply = await self._script("create", rec, "")
        if reply == "exists":
            raise AlreadyExists(
                f"schedule {rec.id!r} exists already; update or delete it",
                field="id",
                reason=Reason.SCHEDULE_EXISTS,
                metadata={"schedule_id": rec.id},
            )
        self._wake.set()
        return rec

    async def update(self, schedule_id: str, changes: dict[str, object]) -> ScheduleRecord:
        for _ in range(RETRIES):
            rec, version = await self._read(schedule_id)
            candidate = changed(rec, changes, self.clock(), self.limits)
            reply = await self._script("put", candidate, version)
            if reply == "nf":
                raise not_found_schedule(schedule_id)
            if reply == "ok":
                self._wake.set()
                return candidate
        raise _busy(schedule_id)

    async def delete(self, schedule_id: str) -> None:
        check_schedule_id(schedule_id)
        reply = await self.ops.run(
            "schedule", self._keys(schedule_id), ["delete", schedule_id, "", "", "", ""]
        )
        if reply == b"nf":
            raise not_found_schedule(schedule_id)

    # ---- firing -------------------------------------------------------------------------

    async def _states(self, rec: ScheduleRecord) -> dict[str, bool]:
        """Whether each of the schedule's latest jobs is unfinished (overlap)."""
        states: dict[str, bool] = {}
        for job_id in rec.latest_jobs:
            queue = records.queue_of(job_id)
            if queue is None:
                continue
            state = await self.ops.call("HGET", records.job_key(queue, job_id), "st")
            states[job_id] = state in _UNFINISHED
        return states

    async def _fire(
        self,
        schedule_id: str,
        plan: Callable[[ScheduleRecord, float, _Plan], list[Firing]],
    ) -> list[Firing] | None:
        """Plans from a fresh read and runs fire.lua; None when no firing was planned.
        Retries when another replica (or a change) got there first."""
        for _ in range(RETRIES):
            rec, version = await self._read(schedule_id)
            now = self.clock()
            planner = _Plan(
                await self._states(rec), self._job_ids(now), await self._queue_refusal(rec)
            )
            firings = plan(rec, now, planner)
            if not firings:
                return None
            queue = rec.template.job.queue
            if self.ops.cluster:
                done = await self._fire_split(rec, version, firings, planner)
            else:
                done = await self._fire_once(rec, version, firings, planner)
            if done is None:
                continue
            await self.ops.note_queues({queue})
            if not self.ops.cluster:  # _fire_split told of what it recorded itself
                for firing in done:
                    self.on_fired(schedule_id, queue, firing)
            return done
        raise _busy(schedule_id)

    def _firing_args(self, rec: ScheduleRecord, firings: list[Firing], planner: _Plan) -> list[Any]:
        """fire.lua's (and fire_jobs.lua's) arguments from the new cursor on."""
        args: list[Any] = [repr(rec.cursor), _due_arg(rec)]
        args += [self.limits.default_width, self.limits.default_lease_seconds]
        for firing in firings:
            args += [repr(firing.tick), repr(firing.fire_time), int(firing.outcome)]
            args += [int(firing.cause), firing.message]
            if firing.outcome is FiringOutcome.MISSED:
                args.append(firing.count)
            elif firing.outcome is FiringOutcome.SUBMITTED:
                args += records.submit_args(planner.jobs[firing.job_id], firing.job_id)
        return args

    async def _fire_once(
        self, rec: ScheduleRecord, version: bytes, firings: list[Firing], planner: _Plan
    ) -> list[Firing] | None:
        """One Redis: the jobs and the record in one script (None: lost the race)."""
        args = [rec.id, version, *self._firing_args(rec, firings, planner)]
        reply = await self.ops.run("fire", self._keys(rec.id)[:3], args)
        if reply[0] == b"lost":
            return None
        queue = rec.template.job.queue
        return [
            Firing(
                f.tick,
                f.fire_time,
                job_id.decode(),
                FiringOutcome(int(outcome)),
                f.cause,
                _message(int(outcome), message.decode(), queue, int(waiting), int(bound)),
                f.count,
            )
            for f, (outcome, job_id, message, waiting, bound) in zip(firings, reply[1], strict=True)
        ]

    async def _fire_split(
        self, rec: ScheduleRecord, version: bytes, firings: list[Firing], planner: _Plan
    ) -> list[Firing] | None:
        """A Cluster: the jobs on the queue's slot, then the record on the schedule's (None:
        lost the race, or recorded another plan's decision: plan again). What is recorded
        is what the first fire_jobs.lua for this version decided, whichever replica's (or
        call's: a trigger racing the loop) plan that was."""
        decided = await self.submit_step(rec, version, firings, planner)
        reply = await self.ops.run(
            "fire_record", self._keys(rec.id)[:3], [rec.id, version, decided]
        )
        done = [_decided(item, rec.template.job.queue) for item in json.loads(decided)["f"]]
        if reply == b"lost":
            return None
        await self.ops.note_queues({rec.template.job.queue})
        for firing in done:
            self.on_fired(rec.id, rec.template.job.queue, firing)
        planned = [(f.tick, f.cause) for f in firings]
        if [(f.tick, f.cause) for f in done] != planned:
            return None  # another plan's ticks were recorded (helped along); ours come next
        return done

    async def submit_step(
        self, rec: ScheduleRecord, version: bytes, firings: list[Firing], planner: _Plan
    ) -> bytes:
        """A Cluster firing's first step alone (fire_jobs.lua): the record it decided, as
        JSON. Tests run it without the second to stand for a replica that died between."""
        queue = rec.template.job.queue
        token = f"{rec.create_time!r}/{version.decode()}"
        marker = f"{records.base(queue)}:sf:{rec.id}"
        args = [token, *self._firing_args(rec, firings, planner)]
        decided: bytes = await self.ops.run("fire_jobs", [marker], args)
        return decided

    async def _queue_refusal(self, rec: ScheduleRecord) -> EngineError | None:
        """Why a job of ``rec`` may not be submitted now (its queue does not exist and one
        more would pass --max-queues), or None."""
        try:
            await self.ops.check_new_queues({rec.template.job.queue})
        except EngineError as e:
            return e
        return None

    def _job_ids(self, now: float) -> Callable[[NewJob], str]:
        return lambda job: records.job_id(self._ids.job_id(now), job.queue)

    async def trigger(self, schedule_id: str, overlap: Overlap | None) -> Firing:
        def plan(rec: ScheduleRecord, now: float, planner: _Plan) -> list[Firing]:
            return [trigger(rec, now, overlap, planner)]

        firings = await self._fire(schedule_id, plan)
        assert firings
        return firings[0]

    async def backfill(
        self, schedule_id: str, start: float, end: float, overlap: Overlap | None
    ) -> list[Firing]:
        rec = await self.get(schedule_id)
        backfill_ticks(rec, start, end, self.clock())  # refuses a bad range before anything

        def plan(rec: ScheduleRecord, now: float, planner: _Plan) -> list[Firing]:
            return backfill(rec, backfill_ticks(rec, start, end, now), now, overlap, planner)

        return await self._fire(schedule_id, plan) or []

    async def fire_pass(self) -> int:
        """One pass over the schedules due by now; returns how many ticks were handled."""
        now = self.clock()
        due = await self.ops.call(
            "ZRANGE", self.due_key, "-inf", repr(now), "BYSCORE", "LIMIT", 0, 100
        )
        handled = 0
        for raw in due:
            schedule_id = raw.decode()
            try:
                firings = await self._fire(schedule_id, lambda r, t, p: fire_due(r, t, p))
            except EngineError as e:
                if e.reason is Reason.SCHEDULE_NOT_FOUND:
                    await self.ops.call("ZREM", self.due_key, schedule_id)
                    continue
                log.warning("schedule %s: firing failed (%s); next pass retries", schedule_id, e)
                continue
            handled += len(firings or [])
        return handled

    async def next_due(self) -> float | None:
        top = await self.ops.call("ZRANGE", self.due_key, 0, 0, "WITHSCORES")
        return float(top[0][1]) if top else None  # redis-py pairs (member, score)

    # ---- the loop ---------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="schedules")

    async def stop(self) -> None:
        """Ends the loop. It also leaves on its own at the flag: a cancellation that lands
        while its wait times out can be swallowed (asyncio.wait_for in 3.11)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        task.cancel()
        await asyncio.wait({task}, timeout=5.0)

    async def _loop(self) -> None:
        """Sleeps until the earliest fire time (at most POLL_SECONDS: another replica may
        have set an earlier one), fires what is due, again."""
        while not self._stopping:
            wait = POLL_SECONDS
            try:
                handled = await self.fire_pass()
                due = await self.next_due()
                if due is not None:
                    wait = min(wait, max(0.001, due - self.clock()))
                if handled >= MAX_FIRINGS_PER_PASS:
                    wait = 0.0
            except (EngineError, OSError) as e:
                log.warning("schedule pass failed (%s); next in %.1f s", e, POLL_SECONDS)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)


def _busy(schedule_id: str) -> Unavailable:
    return Unavailable(
        f"schedule {schedule_id!r} kept changing while this call tried to change it; retry",
        reason=Reason.UNAVAILABLE,
        metadata={"schedule_id": schedule_id},
    )
