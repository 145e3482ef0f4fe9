"""Throttle signals: a worker's or a target's "the provider is throttling me".

A throttle is a third kind of result, beside an output and a failure (JobThrottle). The
job goes back to pending at its old place (same priority and submit order) and its
delivery is not counted as an attempt; the queue, or only the job's fairness key, is
held until the delay has passed: nothing more of it is dispatched before. A job that
answers with more throttles than the queue's max_throttle_bounces has its next one
counted as a failed attempt (code ``Throttled``), so it cannot bounce forever.

The holds live in the structures a dispatch pass already uses, so a held queue or key
costs a pass nothing and comes back exactly when due: a held queue is out of the ready
set with a wake-up at its hold's end (engine/ready.py), a held key's lane is out of its
queue's ring with a wake-up in the lane wake heap (engine/lanes.py). The Redis scripts do
the same with the queue's cfg hash (``thu``) and the lane wake set (includes/throttle.lua).
"""

from __future__ import annotations

import enum
import math
from typing import NamedTuple

from dispatchd.engine.errors import InvalidArgument
from dispatchd.engine.model import JobFailure

#: Longest hold one signal can ask for: a target answering Retry-After of a day must not
#: stop a queue for a day on one answer (the next throttle renews a hold still needed).
MAX_THROTTLE_SECONDS = 3600.0
#: Cap on a signal's reason, which GetQueue shows and logs carry.
MAX_THROTTLE_REASON_CHARS = 1024
DEFAULT_MAX_BOUNCES = 20
#: GetQueue's throttle_reason for a queue hold whose signal gave none.
QUEUE_REASON = "throttle signal"
MAX_BOUNCES = 10_000
#: The failure recorded when a throttle is one too many.
THROTTLED_CODE = "Throttled"
#: The hold an HTTP 429 without a Retry-After gets (a 503 without one is a plain failure).
DEFAULT_HTTP_429_SECONDS = 1.0


class ThrottleScope(enum.IntEnum):
    """Mirrors dispatchd.v1.ThrottleScope numerically."""

    QUEUE = 1
    FAIRNESS_KEY = 2


class JobThrottle(NamedTuple):
    """A result saying the provider throttles: hold ``scope`` for ``delay`` seconds."""

    delay: float
    scope: ThrottleScope = ThrottleScope.QUEUE
    reason: str = ""


def throttle_of(delay: float, scope: int, reason: str) -> JobThrottle:
    """A signal as it came over the wire, made safe: the delay within 0 and the cap (NaN
    and negatives are 0: no hold), an unknown scope is the queue, the reason cut."""
    if not math.isfinite(delay) or delay <= 0:
        delay = 0.0 if math.isnan(delay) or delay <= 0 else MAX_THROTTLE_SECONDS
    kind = ThrottleScope.QUEUE
    if scope == ThrottleScope.FAIRNESS_KEY:
        kind = ThrottleScope.FAIRNESS_KEY
    return JobThrottle(min(delay, MAX_THROTTLE_SECONDS), kind, reason[:MAX_THROTTLE_REASON_CHARS])


def too_many_text(throttle: JobThrottle) -> str:
    """The message of the failure a throttle past the bound counts as."""
    why = f": {throttle.reason}" if throttle.reason else ""
    return f"throttled more often than the queue's max_throttle_bounces{why}"


def too_many(throttle: JobThrottle) -> JobFailure:
    """The failure a throttle past the bound counts as (Job.throttle_count says how many)."""
    return JobFailure(too_many_text(throttle), True, THROTTLED_CODE, throttle.delay or None)


def check_max_bounces(value: int) -> None:
    if not 1 <= value <= MAX_BOUNCES:
        raise InvalidArgument(
            f"max_throttle_bounces must be 1-{MAX_BOUNCES} (0 on the wire: the default "
            f"{DEFAULT_MAX_BOUNCES}), got {value}",
            field="max_throttle_bounces",
        )


def reason_text(throttle: JobThrottle, fairness_key: str) -> str:
    """What GetQueue shows for a hold: the signal's reason, else a plain one."""
    if throttle.reason:
        return throttle.reason
    if throttle.scope is ThrottleScope.FAIRNESS_KEY:
        return f"throttle signal for fairness key {fairness_key!r}"
    return QUEUE_REASON
