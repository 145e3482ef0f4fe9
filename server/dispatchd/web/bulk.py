"""Bulk actions of the dashboard: retry a queue's dead jobs, cancel its waiting ones
(pending, scheduled, or waiting on parents), purge its finished ones, pause or resume
several queues.

Each is built on the Backend methods one job or queue at a time already has (retry_job,
cancel_job, purge_jobs, update_queue), so it works on every backend and each change is
validated, journaled and frozen by a drain like the single action. Each is bounded: one
request changes at most BULK_MAX jobs (the done page says how many remain; run it again),
and the confirmation's preview counts at most COUNT_CAP jobs ("at least" past it), so a
queue of a million jobs costs a bounded slice of the loop per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dispatchd.backend import Backend
from dispatchd.engine import JobState, JobView
from dispatchd.engine import errors as engine_errors
from dispatchd.engine.model import FINISHED_STATES
from dispatchd.web.errors import WebError
from dispatchd.web.links import url

#: Jobs one bulk request changes at most.
BULK_MAX = 1000
#: Jobs the preview counts at most.
COUNT_CAP = 10_000
#: Queues one "pause several" request changes at most.
MAX_PICKED = 1000
PAGE = 500
#: The form field prefix of a picked queue on the queues page (pick:NAME=1).
PICK = "pick:"
#: Longest key filter accepted (keys are short; this only bounds the form).
MAX_KEY = 1024

_PURGEABLE = {s.name: s for s in FINISHED_STATES}
#: What "Cancel waiting" cancels: jobs not yet dispatched, those waiting on parents too.
CANCELLABLE = (JobState.PENDING, JobState.SCHEDULED, JobState.WAITING)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which jobs of a queue a bulk action touches."""

    queue: str
    states: tuple[JobState, ...]
    key: str = ""
    """Only jobs whose ordering, fairness or idempotency key is this ('' = all)."""

    def matches(self, job: JobView) -> bool:
        k = self.key
        return not k or k in (job.ordering_key, job.fairness_key, job.idempotency_key)


async def _scan(
    backend: Backend, sel: Selection, limit: int, keep: Callable[[JobView], None]
) -> bool:
    """Feeds matching jobs to ``keep`` until ``limit`` matched; True if more may match."""
    seen = 0
    for state in sel.states:
        token = ""
        while True:
            jobs, token = await backend.list_jobs(sel.queue, state, PAGE, token)
            for job in jobs:
                if sel.matches(job):
                    if seen == limit:
                        return True
                    seen += 1
                    keep(job)
            if not token:
                break
    return False


async def count(backend: Backend, sel: Selection) -> tuple[int, bool]:
    """(matching jobs, True when there are more than COUNT_CAP)."""
    n = 0

    def one(job: JobView) -> None:
        nonlocal n
        n += 1

    more = await _scan(backend, sel, COUNT_CAP, one)
    return n, more


async def select(backend: Backend, sel: Selection, limit: int = BULK_MAX) -> tuple[list[str], bool]:
    """Ids of the first ``limit`` matching jobs, and whether more match."""
    ids: list[str] = []
    more = await _scan(backend, sel, limit, lambda job: ids.append(job.id))
    return ids, more


def key_filter(form: dict[str, str]) -> str:
    key = form.get("key", "").strip()
    if len(key) > MAX_KEY:
        raise WebError(400, f"key must be at most {MAX_KEY} characters")
    return key


def purge_state(form: dict[str, str]) -> JobState:
    """The finished state to purge, or UNSPECIFIED for every finished state ("ALL")."""
    name = form.get("state", "").upper()
    if name == "ALL":
        return JobState.UNSPECIFIED
    state = _PURGEABLE.get(name)
    if state is None:
        raise WebError(400, f"state must be ALL or one of {', '.join(_PURGEABLE)}, got {name!r}")
    return state


def picked(form: dict[str, str]) -> list[str]:
    """The queue names ticked on the queues page, sorted."""
    names = sorted(k[len(PICK) :] for k in form if k.startswith(PICK))
    if not names:
        raise WebError(400, "tick at least one queue")
    if len(names) > MAX_PICKED:
        raise WebError(400, f"at most {MAX_PICKED} queues at once, got {len(names)}")
    return names


def how_many(n: int, more: bool) -> str:
    return f"more than {n}" if more else str(n)


async def apply(
    ids: list[str],
    change: Callable[[str], Awaitable[object]],
    already: Callable[[str], Awaitable[bool]] | None = None,
) -> tuple[int, int]:
    """Runs ``change`` on each id: (changed, skipped). A job that moved on meanwhile (no
    longer dead, already finished, forgotten) is skipped, never a failed request, unless
    ``already`` says it is as asked (a waiting child cancelled with its parent, a moment
    before its own turn); any other refusal (a drain, Redis away) stops the request with
    its message."""
    done = skipped = 0
    for job_id in ids:
        try:
            await change(job_id)
        except (engine_errors.FailedPrecondition, engine_errors.NotFound):
            if already is not None and await already(job_id):
                done += 1
            else:
                skipped += 1
            continue
        done += 1
    return done, skipped


@dataclass(frozen=True, slots=True)
class Preview:
    """What the confirmation page says a bulk action will touch."""

    what: str
    count: str
    """How many jobs or queues ("more than N" past the count cap)."""
    unit: str
    note: str = ""


def _queue_url(name: str) -> str:
    return url("queues", name)


class Bulk:
    """The bulk actions over one backend: ``preview`` before the confirmation, ``run``
    after it. Both validate the form first (raising WebError), so bad input never acts."""

    NAMES = ("retry_dead", "cancel_pending", "purge", "pause_many")

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def _selection(self, action: str, form: dict[str, str]) -> Selection:
        queue = form.get("queue", "")
        if not queue:
            raise WebError(400, "missing form field 'queue'")
        await self._backend.get_queue(queue)  # NotFound -> 404 before anything
        if action == "retry_dead":
            return Selection(queue, (JobState.DEAD,), key_filter(form))
        return Selection(queue, CANCELLABLE, key_filter(form))

    async def preview(self, action: str, form: dict[str, str]) -> Preview:
        if action == "pause_many":
            names = await self._queues(form)
            verb = "Pause" if _pausing(form) else "Resume"
            return Preview(f"{verb} queues {', '.join(names)}", str(len(names)), "queues")
        if action == "purge":
            queue = form.get("queue", "")
            state = purge_state(form)
            await self._backend.get_queue(queue)
            states = FINISHED_STATES if state is JobState.UNSPECIFIED else (state,)
            n, more = await count(self._backend, Selection(queue, states))
            label = "finished" if state is JobState.UNSPECIFIED else state.name
            return Preview(
                f"Purge (forget) the {label} jobs of queue {queue}", how_many(n, more), "jobs"
            )
        sel = await self._selection(action, form)
        n, more = await count(self._backend, sel)
        verb = "Retry the dead" if action == "retry_dead" else "Cancel the waiting"
        keyed = f" whose key is {sel.key!r}" if sel.key else ""
        notes = []
        if more or n > BULK_MAX:
            notes.append(
                f"One confirmation changes at most {BULK_MAX}; confirm again for the rest."
            )
        if action == "cancel_pending":
            notes.append(
                "Waiting means pending, scheduled or waiting on parents; the jobs waiting on "
                "a cancelled job are cancelled with it, in any queue."
            )
        note = " ".join(notes)
        return Preview(f"{verb} jobs of queue {sel.queue}{keyed}", how_many(n, more), "jobs", note)

    async def run(self, action: str, form: dict[str, str]) -> tuple[str, str]:
        b = self._backend
        if action == "pause_many":
            names = await self._queues(form)
            for name in names:
                await b.update_queue(name, paused=_pausing(form))
            changed = "paused" if _pausing(form) else "resumed"
            return f"{len(names)} queues {changed}: {', '.join(names)}", "/"
        if action == "purge":
            purged = await b.purge_jobs(form["queue"], purge_state(form))
            return f"{purged} finished jobs of queue {form['queue']} purged", _queue_url(
                form["queue"]
            )
        sel = await self._selection(action, form)
        ids, more = await select(b, sel)
        if action == "retry_dead":
            done, skipped = await apply(ids, b.retry_job)
        else:
            done, skipped = await apply(ids, b.cancel_job, self._cancelled)
        verb = "retried" if action == "retry_dead" else "cancelled"
        message = f"{done} jobs of queue {sel.queue} {verb}"
        if skipped:
            message += f"; {skipped} had moved on meanwhile and were left alone"
        if more:
            message += f"; more remain (at most {BULK_MAX} a request): run it again"
        return message, _queue_url(sel.queue)

    async def _cancelled(self, job_id: str) -> bool:
        try:
            return (await self._backend.get_job(job_id)).state is JobState.CANCELLED
        except engine_errors.NotFound:
            return False

    async def _queues(self, form: dict[str, str]) -> list[str]:
        names = picked(form)
        for name in names:
            await self._backend.get_queue(name)  # every one exists, or nothing changes
        return names


def _pausing(form: dict[str, str]) -> bool:
    value = form.get("paused", "")
    if value not in ("yes", "no"):
        raise WebError(400, f"paused must be yes or no, got {value!r}")
    return value == "yes"
