"""Recurring schedules: the records and the firing logic, with ``now`` passed in.

A schedule's cursor says which spec ticks are handled (every tick at or before it fired, was
skipped or missed). A firing pass takes the ticks after the cursor whose fire time has come:
those older than the catch-up window are missed (counted), the rest fire oldest first (or only
the latest), each under the overlap policy, and the cursor moves past each. A tick's job has
an idempotency key derived from the schedule id and the tick, so firing a tick twice (a crash
between the job and the cursor, two replicas racing, a backfill over fired ticks) finds the
first job instead of making a second one.

Both backends run this code: the embedded engine with a :class:`Firer` that submits into
itself, the Redis backend with one that plans the submits its firing script then makes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any, Protocol

from dispatchd.engine import limits as lim
from dispatchd.engine.errors import EngineError, InvalidArgument
from dispatchd.engine.model import NewJob
from dispatchd.engine.schedule_spec import CompiledSpec, SpecRecord, check_spec, tick_label

RECENT_FIRINGS = 10
MAX_FIRINGS_PER_PASS = 1000
"""Due ticks one pass fires at most (after long downtime with ALL); the next pass goes on."""
MAX_MISSED_COUNTED = 10_000
"""Missed ticks counted one by one; past that the cursor jumps to the catch-up window."""
MAX_BACKFILL_TICKS = 1000
DEFAULT_CATCHUP_SECONDS = 3600.0
MIN_CATCHUP_SECONDS = 1.0
MAX_CATCHUP_SECONDS = 366 * 86_400.0
MAX_NOTE_CHARS = 1000
SCHEDULE_KEY_PREFIX = "schedule:"


class Overlap(IntEnum):
    """Values equal the proto's ScheduleOverlapPolicy numbers."""

    SKIP = 1
    ALLOW = 2
    BUFFER_ONE = 3


class CatchupMode(IntEnum):
    ALL = 1
    LATEST = 2


class FiringOutcome(IntEnum):
    SUBMITTED = 1
    SKIPPED = 2
    DUPLICATE = 3
    REFUSED = 4
    MISSED = 5


class FiringCause(IntEnum):
    SCHEDULED = 1
    TRIGGERED = 2
    BACKFILL = 3


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    overlap: Overlap = Overlap.SKIP
    catchup_window: float = DEFAULT_CATCHUP_SECONDS
    catchup_mode: CatchupMode = CatchupMode.ALL


@dataclass(frozen=True, slots=True)
class JobTemplate:
    """The job each tick submits: ``job`` with no times and no idempotency key; ``ttl``
    counts from the firing."""

    job: NewJob
    ttl: float | None = None


@dataclass(frozen=True, slots=True)
class Firing:
    tick: float
    fire_time: float
    job_id: str
    outcome: FiringOutcome
    cause: FiringCause
    message: str = ""
    count: int = 1
    """Ticks it stands for (a MISSED record may stand for many)."""


@dataclass(slots=True)
class ScheduleRecord:
    """One schedule: its definition and its state."""

    id: str
    spec: SpecRecord
    template: JobTemplate
    policy: SchedulePolicy = SchedulePolicy()
    paused: bool = False
    note: str = ""
    create_time: float = 0.0
    update_time: float = 0.0
    owner: str = ""
    cursor: float = 0.0
    submitted: int = 0
    skipped: int = 0
    missed: int = 0
    refused: int = 0
    latest_jobs: list[str] = field(default_factory=list)
    recent: list[Firing] = field(default_factory=list)
    """Newest first."""
    compiled: CompiledSpec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.compiled = CompiledSpec(self.spec, self.id)

    def recompile(self) -> None:
        self.compiled = CompiledSpec(self.spec, self.id)

    def next_fire(self) -> float | None:
        """When the first unhandled tick fires; None when paused or no tick is left."""
        if self.paused:
            return None
        tick = self.compiled.next_tick(self.cursor)
        return None if tick is None else self.compiled.fire_time(tick)

    def next_fire_times(self, count: int) -> list[float]:
        if self.paused:
            return []
        ticks = self.compiled.ticks(self.cursor, math.inf, count)
        return [self.compiled.fire_time(t) for t in ticks]

    def copy(self) -> ScheduleRecord:
        return replace(self, latest_jobs=list(self.latest_jobs), recent=list(self.recent))


class Firer(Protocol):
    """What firing needs from a backend."""

    def unfinished(self, job_id: str) -> bool:
        """Whether the job is pending, scheduled or underway."""

    def submit(self, job: NewJob) -> tuple[str, bool]:
        """Submits ``job``: its id and whether it was an earlier job with its idempotency
        key. Raises EngineError when the job is refused."""


# ---- validation ---------------------------------------------------------------------


def check_schedule_id(schedule_id: str, field_name: str = "id") -> None:
    if not schedule_id or len(schedule_id) > 128 or not lim.QUEUE_NAME_RE.fullmatch(schedule_id):
        raise InvalidArgument(
            f"schedule id {schedule_id!r} must be 1-128 characters of [A-Za-z0-9._:-]",
            field=field_name,
        )


def check_template(template: JobTemplate, limits: lim.EngineLimits) -> None:
    job = template.job
    if job.not_before is not None or job.expire_at is not None:
        raise InvalidArgument(
            "a template takes no not_before or expire_at (absolute times); use ttl, which "
            "counts from each firing",
            field="not_before" if job.not_before is not None else "expire_at",
        )
    if job.idempotency_key:
        raise InvalidArgument(
            "a template takes no idempotency_key: each tick's job gets one derived from the "
            "schedule id and the tick",
            field="idempotency_key",
        )
    lim.check_new_job(job, limits)


def check_policy(policy: SchedulePolicy) -> None:
    if not MIN_CATCHUP_SECONDS <= policy.catchup_window <= MAX_CATCHUP_SECONDS:
        raise InvalidArgument(
            f"catchup_window must be 1 s to 366 days, got {policy.catchup_window:g} s",
            field="catchup_window",
        )


def check_note(note: str) -> None:
    if len(note) > MAX_NOTE_CHARS:
        raise InvalidArgument(
            f"note is {len(note)} characters; the limit is {MAX_NOTE_CHARS}", field="note"
        )


def check_record(rec: ScheduleRecord, limits: lim.EngineLimits) -> None:
    """Every check of a schedule definition; fields are named as in the Schedule message."""
    check_schedule_id(rec.id)
    try:
        check_spec(rec.spec)
    except InvalidArgument as e:
        raise e.under("spec") from None
    try:
        check_template(rec.template, limits)
    except EngineError as e:
        raise e.under("template") from None
    try:
        check_policy(rec.policy)
    except InvalidArgument as e:
        raise e.under("policies") from None
    check_note(rec.note)


def started(rec: ScheduleRecord, now: float, limits: lim.EngineLimits) -> ScheduleRecord:
    """A new schedule, checked; its state starts now (no tick before now fires)."""
    check_record(rec, limits)
    rec.create_time = rec.update_time = now
    rec.cursor = max(rec.cursor, now)
    return rec


def changed(
    rec: ScheduleRecord, changes: dict[str, object], now: float, limits: lim.EngineLimits
) -> ScheduleRecord:
    """A copy of ``rec`` with the definition fields named in ``changes`` (spec, template,
    policy or one of policy.overlap, policy.catchup_window, policy.catchup_mode, paused,
    note, owner), all checked first. A new spec, and a resume, go on from
    now: ticks before now do not catch up."""
    candidate = rec.copy()
    for name, value in changes.items():
        if name.startswith("policy."):  # one policy of several
            one: dict[str, Any] = {name[len("policy.") :]: value}
            candidate.policy = replace(candidate.policy, **one)
        else:
            setattr(candidate, name, value)
    if "spec" in changes:
        try:
            candidate.recompile()
        except InvalidArgument as e:
            raise e.under("spec") from None
    check_record(candidate, limits)
    if "spec" in changes or (rec.paused and not candidate.paused):
        candidate.cursor = max(candidate.cursor, now)
    candidate.update_time = now
    return candidate


# ---- firing -------------------------------------------------------------------------


def idempotency_key(schedule_id: str, tick: float) -> str:
    return f"{SCHEDULE_KEY_PREFIX}{schedule_id}@{tick_label(tick)}"


def _remember(rec: ScheduleRecord, firing: Firing) -> Firing:
    rec.recent.insert(0, firing)
    del rec.recent[RECENT_FIRINGS:]
    outcome = firing.outcome
    if outcome is FiringOutcome.SUBMITTED:
        rec.submitted += 1
    elif outcome is FiringOutcome.SKIPPED:
        rec.skipped += 1
    elif outcome is FiringOutcome.REFUSED:
        rec.refused += 1
    if firing.job_id and outcome in (FiringOutcome.SUBMITTED, FiringOutcome.DUPLICATE):
        if firing.job_id in rec.latest_jobs:
            rec.latest_jobs.remove(firing.job_id)
        rec.latest_jobs.append(firing.job_id)
        del rec.latest_jobs[:-2]
    return firing


def job_of(rec: ScheduleRecord, tick: float, now: float, overlap: Overlap) -> NewJob:
    """The job a tick submits."""
    template = rec.template
    job = template.job
    changes: dict[str, object] = {"idempotency_key": idempotency_key(rec.id, tick)}
    if template.ttl is not None:
        changes["expire_at"] = now + template.ttl
    if overlap is Overlap.BUFFER_ONE and not job.ordering_key:
        # The buffered job waits behind the unfinished one in the engine's own chain.
        changes["ordering_key"] = f"{SCHEDULE_KEY_PREFIX}{rec.id}"
    return job._replace(**changes)  # type: ignore[arg-type]


def fire_tick(
    rec: ScheduleRecord,
    tick: float,
    now: float,
    cause: FiringCause,
    overlap: Overlap,
    firer: Firer,
) -> Firing:
    """One tick under ``overlap``: skipped, or its job submitted (or found)."""
    if overlap is not Overlap.ALLOW:
        running = sum(1 for job_id in rec.latest_jobs if firer.unfinished(job_id))
        if running >= (1 if overlap is Overlap.SKIP else 2):
            return _remember(rec, Firing(tick, now, "", FiringOutcome.SKIPPED, cause))
    try:
        job_id, duplicate = firer.submit(job_of(rec, tick, now, overlap))
    except EngineError as e:
        return _remember(rec, Firing(tick, now, "", FiringOutcome.REFUSED, cause, str(e)))
    outcome = FiringOutcome.DUPLICATE if duplicate else FiringOutcome.SUBMITTED
    return _remember(rec, Firing(tick, now, job_id, outcome, cause))


def _miss(rec: ScheduleRecord, ticks: int, latest: float, now: float, why: str) -> Firing:
    rec.missed += ticks
    firing = Firing(latest, now, "", FiringOutcome.MISSED, FiringCause.SCHEDULED, why, ticks)
    return _remember(rec, firing)


def fire_due(rec: ScheduleRecord, now: float, firer: Firer) -> list[Firing]:
    """Handles every unhandled tick whose fire time has come by ``now`` (at most
    MAX_FIRINGS_PER_PASS fire; call again while :func:`due` says so)."""
    if rec.paused:
        return []
    spec, policy = rec.compiled, rec.policy
    out: list[Firing] = []
    horizon = now - policy.catchup_window
    first = spec.next_tick(rec.cursor)
    if first is not None and first < horizon:
        old = spec.ticks(rec.cursor, math.ceil(horizon) - 1.0, MAX_MISSED_COUNTED)
        rec.cursor = old[-1] if len(old) < MAX_MISSED_COUNTED else math.ceil(horizon) - 1.0
        why = f"{len(old)} ticks older than the catch-up window ({policy.catchup_window:g} s)"
        out.append(_miss(rec, len(old), old[-1], now, why))
    if policy.catchup_mode is CatchupMode.LATEST:
        due = _latest_due(spec, rec.cursor, now)
        if due:
            passed = spec.ticks(rec.cursor, due[0] - 0.5, MAX_MISSED_COUNTED)
            if passed:
                why = f"{len(passed)} ticks passed over: catch-up mode LATEST fires the latest"
                out.append(_miss(rec, len(passed), passed[-1], now, why))
    else:
        due = []
        for tick in spec.ticks(rec.cursor, now, MAX_FIRINGS_PER_PASS):
            if spec.fire_time(tick) > now:
                break
            due.append(tick)
    for tick in due:
        out.append(fire_tick(rec, tick, now, FiringCause.SCHEDULED, policy.overlap, firer))
        rec.cursor = tick
    return out


def _latest_due(spec: CompiledSpec, after: float, now: float) -> list[float]:
    """The latest tick in (after, now] whose fire time has come, as a list of one (or
    none): found by looking back from now over doubling spans, so a schedule of one tick a
    second and a window of a year costs a few dozen steps, not a year of ticks."""
    span = 1.0
    while True:
        start = max(after, now - span)
        found = [
            t for t in spec.ticks(start, now, MAX_FIRINGS_PER_PASS) if spec.fire_time(t) <= now
        ]
        if found:
            return found[-1:]
        if start <= after:
            return []
        span *= 2


def due(rec: ScheduleRecord, now: float) -> bool:
    fire = rec.next_fire()
    return fire is not None and fire <= now


def trigger(rec: ScheduleRecord, now: float, overlap: Overlap | None, firer: Firer) -> Firing:
    """A firing now, outside the spec; the cursor stays."""
    tick = math.floor(now * 1000) / 1000
    return fire_tick(rec, tick, now, FiringCause.TRIGGERED, overlap or rec.policy.overlap, firer)


def backfill_ticks(rec: ScheduleRecord, start: float, end: float, now: float) -> list[float]:
    """The spec's ticks in start..end (both inclusive), checked: a past range of at most
    MAX_BACKFILL_TICKS ticks."""
    if not (math.isfinite(start) and math.isfinite(end)) or end < start:
        raise InvalidArgument("end_time must not be before start_time", field="end_time")
    if end > now:
        raise InvalidArgument(
            "end_time is in the future: a backfill fires past ticks (the schedule fires the "
            "rest when they come)",
            field="end_time",
        )
    ticks = rec.compiled.ticks(math.ceil(start) - 1.0, end, MAX_BACKFILL_TICKS + 1)
    if len(ticks) > MAX_BACKFILL_TICKS:
        raise InvalidArgument(
            f"the range holds more than {MAX_BACKFILL_TICKS} ticks; backfill it in parts",
            field="end_time",
        )
    return ticks


def backfill(
    rec: ScheduleRecord,
    ticks: list[float],
    now: float,
    overlap: Overlap | None,
    firer: Firer,
) -> list[Firing]:
    policy = overlap or rec.policy.overlap
    return [fire_tick(rec, t, now, FiringCause.BACKFILL, policy, firer) for t in ticks]


#: Maps a job id to whether it is unfinished (for backends that look jobs up by id).
UnfinishedLookup = Callable[[str], bool]
