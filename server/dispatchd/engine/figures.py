"""A queue's /metrics figures (model.QueueFigures), read from its state at scrape time.

Nothing here runs on the hot path: the figures come from the indexes the queue keeps
anyway, so the oldest-pending age costs no bookkeeping per job."""

from __future__ import annotations

from collections.abc import Mapping

from dispatchd.engine.model import JobRecord, JobState, QueueFigures, QueueView
from dispatchd.engine.queue import QueueState

#: Pending entries a scrape looks through for the first ready one; past them (a head of
#: that many jobs all waiting behind their ordering keys) the first pending job stands in.
HEAD_SCAN = 1000


def _ready_time(job: JobRecord) -> float:
    nb = job.not_before
    return job.submit_time if nb is None else max(nb, job.submit_time)


def head_ready(q: QueueState, jobs: Mapping[str, JobRecord]) -> float | None:
    """When the first ready job in dispatch order could first run. Jobs behind their
    ordering key are pending but not ready (not in a lane); they are skipped, as on Redis,
    whose pending index does not hold them."""
    first: JobRecord | None = None
    for i, (_, _, job_id) in enumerate(q.pending):
        job = jobs.get(job_id)
        if job is None:
            continue
        if job.in_lane:
            return _ready_time(job)
        first = first or job
        if i >= HEAD_SCAN:
            return _ready_time(first)
    return None


def key_held(q: QueueState, now: float) -> int:
    """Ready jobs of lanes their key limits hold now (at max_in_flight_per_key, or out of
    per-key tokens), decided per lane from its counts, as figures.lua does."""
    cap = q.ready.limits.max_in_flight_per_key
    held = 0
    for lane in q.ready.lanes.values():
        if lane.live <= 0:
            continue
        if (cap and lane.in_flight >= cap) or (
            lane.bucket is not None and not lane.bucket.ready(now)
        ):
            held += lane.live
    return held


def figures_of(
    view: QueueView, q: QueueState, jobs: Mapping[str, JobRecord], now: float
) -> QueueFigures:
    return QueueFigures(
        view=view,
        head_ready=head_ready(q, jobs),
        blocked=max(0, len(q.pending) - len(q.ready)),
        dead=len(q.finished[JobState.DEAD]),
        failed=len(q.finished[JobState.FAILED]),
        rate_limited=q.bucket is not None and not q.bucket.ready(now),
        key_held=key_held(q, now),
        credit_free=q.has_free_worker(),
    )
