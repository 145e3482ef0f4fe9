"""The words for why a result changed nothing and why an attempt was lost, written once.

The embedded engine uses these texts directly; the Redis scripts answer short codes
(``stale``, ``unknown``) and get the failure of a lost attempt from their caller, so a
worker or a GetJob reader sees the same words on either backend."""

from __future__ import annotations

import math

from dispatchd.engine.model import JobFailure

STALE_LEASE = "stale lease: it expired or was taken back, and the job may run elsewhere"
UNKNOWN_JOB = "unknown job"
#: The rejection codes the Redis scripts answer, and the text a worker gets for each.
REJECTIONS = {"stale": STALE_LEASE, "unknown": UNKNOWN_JOB}

LEASE_EXPIRED = JobFailure("lease expired without a result or heartbeat", True, "LeaseExpired")
WORKER_LOST = JobFailure("the worker's stream ended while it held the job", True, "WorkerLost")
#: Why a lost attempt's job waits again (the observer's job_requeued reason), by code.
REQUEUED = {"LeaseExpired": "lease expired", "WorkerLost": "worker disconnected"}


def rejection(code: str) -> str:
    """The text for a script's rejection code (an unknown code is passed on as it is)."""
    return REJECTIONS.get(code, code)


def retry_after_floor(seconds: float, cap: float) -> float:
    """A reported Retry-After, made safe: not negative, not NaN, at most ``cap``."""
    if math.isnan(seconds) or seconds <= 0:
        return 0.0
    return min(seconds, cap)
