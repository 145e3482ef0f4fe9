"""ListJobs over one queue's indexes: a page in dispatch or finish order, resumable by key."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from dispatchd.engine import paging
from dispatchd.engine.errors import InvalidArgument
from dispatchd.engine.model import FinishedJob, JobRecord, JobState, JobView
from dispatchd.engine.queue import QueueState

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# The order UNSPECIFIED walks the states in.
PHASES = (
    JobState.PENDING,
    JobState.SCHEDULED,
    JobState.WAITING,
    JobState.UNDERWAY,
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.CANCELLED,
    JobState.EXPIRED,
    JobState.DEAD,
)


_VALUES = frozenset(int(s) for s in JobState)


def _rank(state: JobState) -> int:
    return PHASES.index(state) if state in PHASES else -1


def page_plan(
    queue: str, state: JobState, page_size: int, page_token: str
) -> tuple[int, paging.Cursor | None, list[JobState]]:
    """A ListJobs request checked the same way on every backend. Returns how many jobs a
    page holds, where to resume (None: from the start) and the phases to walk, the
    cursor's own phase first."""
    check_page_size(page_size)
    limit = page_size or DEFAULT_PAGE_SIZE
    cursor = paging.decode(page_token, queue, int(state)) if page_token else None
    if cursor is not None and cursor.phase not in _VALUES:
        raise InvalidArgument(paging.BAD_TOKEN, field="page_token")
    phases: list[JobState] = [state] if state is not JobState.UNSPECIFIED else list(PHASES)
    if cursor is not None:
        phases = [p for p in phases if _rank(p) >= _rank(JobState(cursor.phase))]
    return limit, cursor, phases


def check_page_size(page_size: int) -> None:
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"page_size must be between 0 and {MAX_PAGE_SIZE}, got {page_size}", field="page_size"
        )


def page_of_jobs(
    q: QueueState,
    jobs: Mapping[str, JobRecord],
    done: Mapping[str, tuple[object, ...]],
    state: JobState,
    page_size: int,
    page_token: str,
) -> tuple[list[JobView], str]:
    """Pending in dispatch order, underway in dispatch order, finished in finish order;
    UNSPECIFIED walks all of them in that order. Costs O(log n + page) per page."""
    limit, cursor, phases = page_plan(q.name, state, page_size, page_token)
    page: list[tuple[JobView, paging.Cursor]] = []
    for phase in phases:
        after = cursor if cursor is not None and cursor.phase == phase else None
        for item in _iter_phase(q, jobs, done, phase, after):
            page.append(item)
            if len(page) > limit:
                token = paging.encode(q.name, int(state), page[limit - 1][1])
                return [job for job, _ in page[:limit]], token
    return [job for job, _ in page], ""


def _iter_phase(
    q: QueueState,
    jobs: Mapping[str, JobRecord],
    done: Mapping[str, tuple[object, ...]],
    phase: JobState,
    after: paging.Cursor | None,
) -> Iterator[tuple[JobView, paging.Cursor]]:
    if phase is JobState.PENDING:
        lo = None if after is None else (after.k1, after.k2 + 1)
        for neg_prio, seq, job_id in q.pending.irange(minimum=lo):
            yield jobs[job_id], paging.Cursor(phase, neg_prio, seq)
    elif phase is JobState.SCHEDULED:
        lo_s = None if after is None else ((after.k1 - 1) / 1e9,)
        for due, seq, job_id in q.scheduled.irange(minimum=lo_s):
            key = (int(due * 1e9), seq)
            if after is None or key > (after.k1, after.k2):
                yield jobs[job_id], paging.Cursor(phase, *key)
    elif phase is JobState.WAITING:  # in submit order; the cursor holds the seq twice
        lo_w = None if after is None else (after.k1 + 1,)
        for seq, job_id in q.waiting.irange(minimum=lo_w):
            yield jobs[job_id], paging.Cursor(phase, seq, seq)
    elif phase is JobState.UNDERWAY:
        for lease in q.leases.values():
            if not lease.cancelled and (after is None or lease.dispatch_seq > after.k1):
                yield lease.job, paging.Cursor(phase, lease.dispatch_seq, 0)
    else:
        for finish_seq, job_id in q.finished[phase].after(None if after is None else after.k1):
            yield FinishedJob.unpack(done[job_id]), paging.Cursor(phase, finish_seq, 0)
