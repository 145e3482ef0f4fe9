"""A queue's /metrics figures (model.QueueFigures), read from its state at scrape time.

Nothing here runs on the hot path: the figures come from the indexes the queue keeps
anyway, so the oldest-pending age costs no bookkeeping per job."""

from __future__ import annotations

from collections.abc import Mapping

from dispatchd.engine.model import JobRecord, JobState, QueueFigures, QueueView
from dispatchd.engine.queue import QueueState


def head_ready(q: QueueState, jobs: Mapping[str, JobRecord]) -> float | None:
    """When the first ready job in dispatch order could first run. Jobs behind their
    ordering key are pending but not ready (not in a lane); they are skipped, as on Redis,
    whose pending index does not hold them."""
    for _, _, job_id in q.pending:
        job = jobs.get(job_id)
        if job is not None and job.in_lane:
            nb = job.not_before
            return job.submit_time if nb is None else max(nb, job.submit_time)
    return None


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
    )
