"""The embedded engine's schedules: the records by id and a heap of next fire times, so an
idle server with 10,000 schedules does nothing until the earliest one is due (the pump's one
timer covers it through next_wakeup). Firing submits into the engine itself in the same
synchronous call that moves the schedule's cursor, so the journal commits both together."""

from __future__ import annotations

import base64
import binascii
import heapq
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dispatchd.engine.errors import AlreadyExists, InvalidArgument, NotFound, Reason
from dispatchd.engine.model import JobView, NewJob
from dispatchd.engine.schedules import (
    MAX_FIRINGS_PER_PASS,
    Firing,
    Overlap,
    ScheduleRecord,
    backfill,
    backfill_ticks,
    changed,
    check_note,
    check_schedule_id,
    fire_due,
    started,
    trigger,
)
from dispatchd.engine.state import EngineState

MAX_PAGE = 1000
DEFAULT_PAGE = 100


def not_found_schedule(schedule_id: str) -> NotFound:
    return NotFound(
        f"schedule {schedule_id!r} does not exist",
        field="id",
        reason=Reason.SCHEDULE_NOT_FOUND,
        metadata={"schedule_id": schedule_id},
    )


def page_bounds(page_size: int, page_token: str) -> tuple[int, str]:
    """The page size and the id after which a page of ListSchedules starts."""
    if not 0 <= page_size <= MAX_PAGE:
        raise InvalidArgument(f"page_size must be 0-{MAX_PAGE}, got {page_size}", field="page_size")
    after = ""
    if page_token:
        try:
            after = base64.urlsafe_b64decode(page_token.encode()).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidArgument(
                "page_token is not one this server made", field="page_token"
            ) from None
    return page_size or DEFAULT_PAGE, after


def page_token_after(schedule_id: str) -> str:
    return base64.urlsafe_b64encode(schedule_id.encode()).decode()


class _EngineFirer:
    """Firing submits into this engine at ``now``."""

    def __init__(self, engine: ScheduleMixin, now: float) -> None:
        self._engine = engine
        self._now = now

    def unfinished(self, job_id: str) -> bool:
        return job_id in self._engine._jobs

    def submit(self, job: NewJob) -> tuple[str, bool]:
        ((view, duplicate),) = self._engine.submit_many([job], self._now)
        return view.id, duplicate


class ScheduleMixin(EngineState):
    if TYPE_CHECKING:  # core.Engine, which mixes this in, has it

        def submit_many(
            self, specs: Sequence[NewJob], now: float
        ) -> list[tuple[JobView, bool]]: ...

    def _schedule(self, schedule_id: str) -> ScheduleRecord:
        rec = self._schedules.get(schedule_id)
        if rec is None:
            check_schedule_id(schedule_id)
            raise not_found_schedule(schedule_id)
        return rec

    def _arm(self, rec: ScheduleRecord) -> None:
        gen = self._schedule_gen.get(rec.id, 0) + 1
        self._schedule_gen[rec.id] = gen
        due = rec.next_fire()
        if due is not None:
            heapq.heappush(self._schedule_heap, (due, gen, rec.id))

    def _changed(self, rec: ScheduleRecord) -> None:
        self._arm(rec)
        self.observer.schedule_changed(rec)

    def create_schedule(self, rec: ScheduleRecord, now: float) -> ScheduleRecord:
        """Adds ``rec`` (its definition; its state starts now)."""
        now = self._clock(now)
        self._refuse_while_draining()
        check_schedule_id(rec.id)
        if rec.id in self._schedules:
            raise AlreadyExists(
                f"schedule {rec.id!r} exists already; update or delete it",
                field="id",
                reason=Reason.SCHEDULE_EXISTS,
                metadata={"schedule_id": rec.id},
            )
        started(rec, now, self.limits)
        self._schedules[rec.id] = rec
        self._changed(rec)
        return rec

    def get_schedule(self, schedule_id: str) -> ScheduleRecord:
        return self._schedule(schedule_id)

    def list_schedules(self, page_size: int, page_token: str) -> tuple[list[ScheduleRecord], str]:
        size, after = page_bounds(page_size, page_token)
        ids = sorted(i for i in self._schedules if i > after)
        page = [self._schedules[i] for i in ids[:size]]
        token = page_token_after(page[-1].id) if len(ids) > size else ""
        return page, token

    def update_schedule(
        self, schedule_id: str, changes: dict[str, object], now: float
    ) -> ScheduleRecord:
        """See schedules.changed."""
        now = self._clock(now)
        self._refuse_while_draining()
        candidate = changed(self._schedule(schedule_id), changes, now, self.limits)
        self._schedules[schedule_id] = candidate
        self._changed(candidate)
        return candidate

    def delete_schedule(self, schedule_id: str) -> None:
        self._refuse_while_draining()
        self._schedule(schedule_id)
        del self._schedules[schedule_id]
        self._schedule_gen.pop(schedule_id, None)
        self.observer.schedule_deleted(schedule_id)

    def pause_schedule(self, schedule_id: str, note: str, now: float) -> ScheduleRecord:
        check_note(note)
        return self.update_schedule(schedule_id, {"paused": True, "note": note}, now)

    def resume_schedule(self, schedule_id: str, note: str | None, now: float) -> ScheduleRecord:
        changes: dict[str, object] = {"paused": False}
        if note is not None:
            check_note(note)
            changes["note"] = note
        return self.update_schedule(schedule_id, changes, now)

    def trigger_schedule(self, schedule_id: str, overlap: Overlap | None, now: float) -> Firing:
        now = self._clock(now)
        self._refuse_while_draining()
        rec = self._schedule(schedule_id)
        firing = trigger(rec, now, overlap, _EngineFirer(self, now))
        self._fired(rec, [firing])
        return firing

    def backfill_schedule(
        self, schedule_id: str, start: float, end: float, overlap: Overlap | None, now: float
    ) -> list[Firing]:
        now = self._clock(now)
        self._refuse_while_draining()
        rec = self._schedule(schedule_id)
        ticks = backfill_ticks(rec, start, end, now)
        firings = backfill(rec, ticks, now, overlap, _EngineFirer(self, now))
        self._fired(rec, firings)
        return firings

    def _fired(self, rec: ScheduleRecord, firings: list[Firing]) -> None:
        queue = rec.template.job.queue
        for firing in firings:
            self.observer.schedule_fired(rec.id, queue, firing)
        self.observer.schedule_changed(rec)

    def fire_schedules(self, now: float) -> int:
        """Fires every schedule due by ``now``; returns how many ticks were handled. A
        draining server fires nothing: the ticks wait for the next start's catch-up."""
        if self.draining:
            return 0
        heap, handled = self._schedule_heap, 0
        while heap and heap[0][0] <= now and handled < MAX_FIRINGS_PER_PASS:
            _, gen, schedule_id = heapq.heappop(heap)
            rec = self._schedules.get(schedule_id)
            if rec is None or self._schedule_gen.get(schedule_id) != gen:
                continue  # deleted or re-armed since
            firings = fire_due(rec, now, _EngineFirer(self, now))
            handled += len(firings)
            self._arm(rec)
            if firings:
                self._fired(rec, firings)
        return handled

    def next_schedule_due(self) -> float | None:
        """The earliest armed fire time (maybe of a stale entry: early, never late)."""
        return self._schedule_heap[0][0] if self._schedule_heap else None

    def all_schedules(self) -> list[ScheduleRecord]:
        return [self._schedules[i] for i in sorted(self._schedules)]

    def restore_schedules(self, records: list[ScheduleRecord]) -> None:
        """Schedules from a journal or snapshot, state included: the next fire pass catches
        up the ticks missed while the server was down."""
        for rec in records:
            self._schedules[rec.id] = rec
            self._arm(rec)
