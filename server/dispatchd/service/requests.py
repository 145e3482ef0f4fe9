"""Validation and translation of request fields that both backends (the embedded engine
and Redis) read the same way, so that one request answers alike whichever is behind it."""

from __future__ import annotations

from typing import Any, TypedDict

import grpc

from dispatchd import convert
from dispatchd.engine import JobState
from dispatchd.engine.errors import InvalidArgument
from dispatchd_client.v1 import dispatcher_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]

MAX_WAIT_SECONDS = 3600.0
QUEUE_MASK_PATHS = frozenset(
    {
        "width",
        "paused",
        "lease_duration",
        "rate",
        "retry_policy",
        "key_limits",
        "max_pending",
        "dedup_window",
        "http_target",
        "max_throttle_bounces",
        "adaptive",
        "windows",
    }
)
_MESSAGE_PATHS = ("lease_duration", "rate", "retry_policy", "key_limits", "dedup_window")


def populated_paths(q: pb.Queue) -> set[str]:
    """What an empty update_mask means (AIP-134): the settable fields the request
    populates. A scalar at its zero value (width 0, paused false, max_pending 0) is not
    populated, so setting one to zero needs the mask to name it."""
    paths = {name for name in _MESSAGE_PATHS if q.HasField(name)}
    if q.HasField("http_target"):
        paths.add("http_target")
    if q.width:
        paths.add("width")
    if q.paused:
        paths.add("paused")
    if q.max_pending:
        paths.add("max_pending")
    if q.max_throttle_bounces:
        paths.add("max_throttle_bounces")
    if q.HasField("adaptive"):
        paths.add("adaptive")
    if q.windows:
        paths.add("windows")
    return paths


class QueueChanges(TypedDict):
    """The plain settings of an UpdateQueue; None leaves a setting as it is."""

    width: int | None
    paused: bool | None
    lease_seconds: float | None
    create: bool


def job_state(state: int) -> JobState:
    """The state filter of ListJobs and PurgeJobs."""
    if state not in JobState._value2member_map_:
        raise InvalidArgument(f"unknown job state {state}", field="state")
    return JobState(state)


def wait_timeout(request: pb.WaitJobRequest | pb.WaitBatchRequest, context: Context) -> float:
    """How long WaitJob may wait: the request's timeout, capped by the caller's deadline."""
    if request.HasField("timeout"):
        timeout = convert.duration_seconds(request.timeout)
        if not 0 <= timeout <= MAX_WAIT_SECONDS:
            raise InvalidArgument(
                f"timeout must be between 0 s and 1 h, got {timeout:g} s", field="timeout"
            )
    else:
        timeout = MAX_WAIT_SECONDS
    remaining = context.time_remaining()
    if remaining is not None:
        # Answer just before the caller's deadline, with the job as it is.
        timeout = min(timeout, max(0.0, remaining - 0.05))
    return timeout


def slot_ttl(request: pb.AcquireSlotRequest) -> float:
    """An AcquireSlot's ttl, which it must name (the range is the engine's check)."""
    if not request.HasField("ttl"):
        raise InvalidArgument(
            "ttl is required: how long the slot lives without a renewal", field="ttl"
        )
    return convert.duration_seconds(request.ttl)


def drain_grace(request: pb.DrainRequest) -> float | None:
    """The grace of a Drain; None when unset (the server's configured grace applies)."""
    if not request.HasField("grace"):
        return None
    grace = convert.duration_seconds(request.grace)
    if grace < 0:
        raise InvalidArgument(f"grace must be >= 0, got {grace:g} s", field="grace")
    return grace


def queue_update(request: pb.UpdateQueueRequest) -> tuple[QueueChanges, dict[str, object]]:
    """The changes an UpdateQueue asks for: the plain settings and the policies, each
    only where the update mask names it. Checked whole before anything changes. Errors
    name fields relative to ``queue`` (``width``), except ``update_mask``: the handler
    roots them with :func:`dispatchd.service.errors.queue_field`."""
    q = request.queue
    paths = set(request.update_mask.paths) or populated_paths(q)
    unknown = paths - QUEUE_MASK_PATHS
    if unknown:
        raise InvalidArgument(
            f"update_mask names unknown fields {sorted(unknown)}; "
            f"settable: {', '.join(sorted(QUEUE_MASK_PATHS))}",
            field="update_mask",
        )
    if "lease_duration" in paths and not q.HasField("lease_duration"):
        raise InvalidArgument(
            "update_mask names lease_duration but queue.lease_duration is unset",
            field="lease_duration",
        )
    changes = QueueChanges(
        width=q.width if "width" in paths else None,
        paused=q.paused if "paused" in paths else None,
        lease_seconds=(
            convert.duration_seconds(q.lease_duration) if "lease_duration" in paths else None
        ),
        create=request.allow_missing,
    )
    return changes, _policy_changes(q, paths)


def _policy_changes(q: pb.Queue, paths: set[str]) -> dict[str, object]:
    """The policy settings named in the mask; a named but unset message clears it."""
    changes: dict[str, object] = {}
    if "rate" in paths:
        changes["rate"] = convert.rate(q)
    if "retry_policy" in paths:
        changes["retry_policy"] = (
            convert.retry_policy(q.retry_policy) if q.HasField("retry_policy") else None
        )
    if "key_limits" in paths:
        changes["key_limits"] = convert.key_limits(q)
    if "max_pending" in paths:
        changes["max_pending"] = q.max_pending
    if "dedup_window" in paths:
        changes["dedup_window"] = convert.duration_seconds(q.dedup_window)
    if "http_target" in paths:
        changes["http_target"] = convert.http_target(q)
    if "max_throttle_bounces" in paths:
        changes["max_throttle_bounces"] = convert.max_throttle_bounces(q)
    if "adaptive" in paths:
        changes["adaptive"] = convert.adaptive(q)
    if "windows" in paths:
        changes["windows"] = convert.windows(q)
    return changes
