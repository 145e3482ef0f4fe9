"""The requests dispatchctl sends, built from its arguments and checked before anything is sent.

Kept apart from the commands so what goes over the wire is testable without a server, and so a
mistake on the command line (``--burst`` without ``--rate``) fails before it reaches one.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import cast

from google.protobuf import duration_pb2, field_mask_pb2

from dispatchd_client.v1 import dispatcher_pb2 as pb

MAX_RATE = 1_000_000.0


class UsageError(Exception):
    """The command line asks for something impossible; the message says what to change.
    dispatchctl exits 2 on it, like argparse does on a malformed command line."""


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(datetime.timedelta(seconds=seconds))
    return d


def job_state(text: str) -> pb.JobState:
    """``pending``, ``PENDING`` or ``JOB_STATE_PENDING``; ``all`` is UNSPECIFIED."""
    name = text.strip().upper().removeprefix("JOB_STATE_")
    if name in ("ALL", "ANY", ""):
        return pb.JOB_STATE_UNSPECIFIED
    names = pb.JobState.keys()
    full = "JOB_STATE_" + name
    if full not in names or name == "UNSPECIFIED":
        known = [k.removeprefix("JOB_STATE_").lower() for k in names[1:]]
        raise UsageError(f"unknown state {text!r}; use one of {', '.join(known)} or all")
    return cast(pb.JobState, pb.JobState.Value(full))


def update_queue(
    name: str,
    *,
    width: int | None = None,
    rate: float | None = None,
    burst: int | None = None,
    lease: float | None = None,
    create: bool = False,
    max_throttle_bounces: int | None = None,
    adaptive: str | None = None,
    windows: str | None = None,
) -> pb.UpdateQueueRequest:
    """UpdateQueue naming exactly the settings given. ``rate`` 0 removes the limit."""
    queue = pb.Queue(name=name)
    paths: list[str] = []
    if width is not None:
        if width < 0:
            raise UsageError(f"--width must be >= 0, got {width}")
        queue.width = width
        paths.append("width")
    _set_rate(queue, rate, burst, paths)
    if lease is not None:
        if lease <= 0:
            raise UsageError(f"--lease must be > 0 seconds, got {lease:g}")
        queue.lease_duration.CopyFrom(_duration(lease))
        paths.append("lease_duration")
    if max_throttle_bounces is not None:
        if not 1 <= max_throttle_bounces <= 10_000:
            raise UsageError(f"--max-throttle-bounces must be 1-10000, got {max_throttle_bounces}")
        queue.max_throttle_bounces = max_throttle_bounces
        paths.append("max_throttle_bounces")
    if adaptive is not None:
        _set_adaptive(queue, adaptive)
        paths.append("adaptive")  # left unset ("off") clears it
    if windows is not None:
        queue.windows.extend(parse_windows(windows))
        paths.append("windows")  # none ("off") clears them
    if not paths:
        raise UsageError(
            "nothing to set: give --width, --rate (with --burst), --lease, "
            "--max-throttle-bounces, --adaptive or --windows"
        )
    return pb.UpdateQueueRequest(
        queue=queue, update_mask=field_mask_pb2.FieldMask(paths=paths), allow_missing=create
    )


def _set_rate(queue: pb.Queue, rate: float | None, burst: int | None, paths: list[str]) -> None:
    if burst is not None and rate is None:
        raise UsageError("--burst needs --rate (the rate and its burst are set together)")
    if rate is None:
        return
    if not 0 <= rate <= MAX_RATE:
        raise UsageError(f"--rate must be 0 (unlimited) to {MAX_RATE:g} per second")
    if rate > 0:
        if burst is not None and burst < 0:
            raise UsageError(f"--burst must be >= 0, got {burst}")
        queue.rate.CopyFrom(pb.Rate(per_second=rate, burst=burst or 0))
    elif burst:
        raise UsageError("--burst has no meaning with --rate 0 (unlimited)")
    paths.append("rate")  # the rate left unset clears the limit


#: Units of a window's period in --windows.
PERIOD_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


def parse_windows(text: str) -> list[pb.RateWindow]:
    """``--windows 10/1s,500/1m,20000/1d`` (limit/period, the period a number and s, m, h or
    d), or ``off``."""
    if text == "off":
        return []
    out = []
    for part in text.split(","):
        limit, sep, period = part.strip().partition("/")
        unit = PERIOD_UNITS.get(period[-1:]) if period else None
        try:
            count, seconds = int(limit), float(period[:-1]) * (unit or 0.0)
        except ValueError:
            count, seconds = 0, 0.0
        if not sep or unit is None or count <= 0 or seconds <= 0:
            raise UsageError(f"--windows takes limit/period items like 500/1m, got {part!r}")
        out.append(pb.RateWindow(limit=count, period=_duration(seconds)))
    return out


ADAPTIVE_KEYS = {"floor": "floor", "decrease": "decrease", "increase": "increase"}


def _set_adaptive(queue: pb.Queue, text: str) -> None:
    """``--adaptive floor=2,decrease=0.5,increase=1,quiet=1`` (floor required; the server
    checks the ranges), or ``off``."""
    if text == "off":
        return
    a = queue.adaptive
    for part in text.split(","):
        key, sep, value = part.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or number != number:
            raise UsageError(f"--adaptive takes key=number pairs or off, got {part!r}")
        if key == "quiet":
            a.quiet_interval.CopyFrom(_duration(number))
        elif key in ADAPTIVE_KEYS:
            setattr(a, key, number)
        else:
            raise UsageError(f"--adaptive knows floor, decrease, increase and quiet, not {key!r}")
    if not a.floor:
        raise UsageError("--adaptive needs floor=<per second>")


def resume_queue(name: str, width: int | None) -> pb.ResumeQueueRequest:
    request = pb.ResumeQueueRequest(name=name)
    if width is not None:
        if width < 0:
            raise UsageError(f"--width must be >= 0, got {width}")
        request.width = width
    return request


def headers(pairs: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--header takes KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def submit(
    queue: str,
    payload: bytes,
    *,
    priority: int = 0,
    content_type: str = "",
    header_map: Mapping[str, str] | None = None,
) -> pb.SubmitRequest:
    return pb.SubmitRequest(
        job=pb.JobSpec(
            queue=queue,
            payload=payload,
            priority=priority,
            content_type=content_type,
            headers=dict(header_map or {}),
        )
    )


def drain(grace: float | None) -> pb.DrainRequest:
    request = pb.DrainRequest()
    if grace is not None:
        if grace < 0:
            raise UsageError(f"--grace must be >= 0 seconds, got {grace:g}")
        request.grace.CopyFrom(_duration(grace))
    return request


def purge(queue: str, state: str) -> pb.PurgeJobsRequest:
    return pb.PurgeJobsRequest(queue=queue, state=job_state(state))


def list_jobs(queue: str, state: str, page_size: int, page_token: str) -> pb.ListJobsRequest:
    return pb.ListJobsRequest(
        queue=queue, state=job_state(state), page_size=page_size, page_token=page_token
    )
