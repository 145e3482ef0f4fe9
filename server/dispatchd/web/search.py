"""Finding jobs for the dashboard: by id, idempotency key, ordering key or fairness key.

An id is one ``get_job`` (both backends index ids); a hit ends the search. The keys have
no index the Backend interface can ask (the embedded engine keeps idempotency keys per
submitter and ordering chains only for jobs still waiting; Redis likewise), so they are
found by a bounded scan of ``list_jobs`` pages: at most SCAN_CAP jobs per search, waiting
and underway jobs first, then dead and the other finished ones, queue by queue. The page
says when the cap cut the scan short, so an empty answer is never mistaken for "no such
job": narrow it to a queue. Every read is a Backend method, so it works the same on every
backend.
"""

from __future__ import annotations

from dataclasses import dataclass

from dispatchd.backend import Backend
from dispatchd.engine import EngineError, JobState, JobView

#: Jobs one search reads at most (list_jobs pages of SCAN_PAGE).
SCAN_CAP = 20_000
SCAN_PAGE = 500
#: Matches shown at most.
MAX_MATCHES = 100
#: The order states are scanned in: what an operator looks for first.
SCAN_ORDER = (
    JobState.PENDING,
    JobState.SCHEDULED,
    JobState.WAITING,
    JobState.UNDERWAY,
    JobState.DEAD,
    JobState.FAILED,
    JobState.SUCCEEDED,
    JobState.CANCELLED,
    JobState.EXPIRED,
)
#: Searchable fields: the form's value -> the label shown with a match.
FIELDS = {
    "any": "any",
    "id": "id",
    "idempotency_key": "idempotency key",
    "ordering_key": "ordering key",
    "fairness_key": "fairness key",
}


@dataclass(frozen=True, slots=True)
class Match:
    job: JobView
    field: str
    """Which field matched (a FIELDS label)."""


@dataclass(frozen=True, slots=True)
class Found:
    matches: list[Match]
    scanned: int
    """Jobs the scan read."""
    cut: bool
    """The scan stopped at SCAN_CAP (or MAX_MATCHES) before reading every job."""


def _matched(job: JobView, text: str, field: str) -> str:
    """The label of the first key field of ``job`` equal to ``text`` (under ``field``)."""
    for name in ("idempotency_key", "ordering_key", "fairness_key"):
        if field in ("any", name) and getattr(job, name) == text:
            return FIELDS[name]
    return ""


async def _by_id(backend: Backend, text: str) -> JobView | None:
    try:
        return await backend.get_job(text)
    except EngineError:  # not an id at all, or no such job: the keys may still match
        return None


async def find_jobs(
    backend: Backend, text: str, field: str = "any", queue: str = "", cap: int = SCAN_CAP
) -> Found:
    """Jobs whose id or key is ``text``; ``queue`` narrows the scan to one queue."""
    matches: list[Match] = []
    if field in ("any", "id"):
        job = await _by_id(backend, text)
        if job is not None and (not queue or job.queue == queue):
            matches.append(Match(job, "id"))
    if field == "id" or matches:
        return Found(matches, 0, False)  # an id names one job: no key scan after a hit
    names = [queue] if queue else [q.name for q in await backend.list_queues()]
    scanned = 0
    for name in names:
        for state in SCAN_ORDER:
            token = ""
            while True:
                if scanned >= cap or len(matches) >= MAX_MATCHES:
                    return Found(matches[:MAX_MATCHES], scanned, True)
                size = min(SCAN_PAGE, cap - scanned)
                jobs, token = await backend.list_jobs(name, state, size, token)
                scanned += len(jobs)
                for job in jobs:
                    label = _matched(job, text, field)
                    if label:
                        matches.append(Match(job, label))
                if not token:
                    break
    return Found(matches[:MAX_MATCHES], scanned, False)
