"""Fairness keys: how evenly dispatch is shared among keys with skewed backlogs, and what
many distinct keys cost the dispatch path.

Both phases submit every job before a worker connects (SubmitBatch, no dispatch yet),
then burn the queue down with workers that ack each delivery message at once, so that
dispatch itself is the bottleneck; the width is the workers' total credit.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from bench.measure import Measured, Meter, jain
from bench.workload import (
    PAYLOAD,
    Acks,
    OnDeliveries,
    Rig,
    WorkerConfig,
    WorkerPool,
    keyed_specs,
)
from dispatchd_client.v1 import dispatcher_pb2 as pb

SUBMIT_BATCH = 1_000


def backlogs(keys: int, min_jobs: int) -> list[int]:
    """Zipf-like backlogs: the key of rank r (1-based) holds ceil(min_jobs * keys / r)
    jobs, so the first holds ``keys`` times as many as the last (``min_jobs``)."""
    return [math.ceil(min_jobs * keys / r) for r in range(1, keys + 1)]


@dataclass(frozen=True, slots=True)
class Fairness:
    """Dispatch counts per key while every key still had jobs pending."""

    keys: int
    jobs: int
    largest_backlog: int
    smallest_backlog: int
    window_dispatches: int
    jain: float
    min_share: float
    """The least-served key's dispatches over the mean per key, in the window."""
    seconds: float
    other_cpu_pct: float


class _Dispatches:
    """(dispatch time in ns, fairness key) of every delivered job. Jobs one dispatch pass
    hands out share the pass's time, so sorting gives the dispatch order pass by pass,
    however the worker streams interleave on the way."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []

    def __call__(self, ds: Sequence[pb.Delivery]) -> None:
        self.seen.extend((d.job.dispatch_time.ToNanoseconds(), d.job.fairness_key) for d in ds)


def _window_counts(seen: Sequence[tuple[int, str]], backlog: dict[str, int]) -> Counter[str]:
    """Dispatches per key in the passes before the one that took some key's last job:
    until then every key had work. (That pass itself when it was the first.)"""
    ordered = sorted(seen)
    counts: Counter[str] = Counter()
    cutoff = ordered[-1][0]
    for t, key in ordered:
        counts[key] += 1
        if counts[key] >= backlog[key]:
            cutoff = t
            break
    before = Counter(key for t, key in ordered if t < cutoff)
    return before or Counter(key for t, key in ordered if t <= cutoff)


async def _burn_down(
    rig: Rig,
    queue: str,
    specs: Sequence[pb.JobSpec],
    workers: WorkerConfig,
    on_deliveries: OnDeliveries | None = None,
) -> tuple[Measured, Measured]:
    """Submits ``specs`` with no worker connected, then connects ``workers`` and waits
    until every job is acked and applied. Returns (submit, burn-down), each metered alone."""
    await rig.producers.set_width(queue, workers.streams * workers.credit)
    meter = Meter(rig.server_times)
    await rig.producers.submit_all(specs, SUBMIT_BATCH)
    submit = meter.result(len(specs), time.perf_counter())
    acks = Acks(len(specs))
    pool = WorkerPool(rig.workers, queue, workers, acks, on_deliveries)
    try:
        meter = Meter(rig.server_times)
        await pool.start()
        await pool.until_acked()
        await rig.producers.settled(queue)
        return submit, meter.result(len(specs), acks.end, acks.delivery_msgs)
    finally:
        await pool.close()


async def fairness(
    rig: Rig, queue: str, keys: int, min_jobs: int, workers: WorkerConfig
) -> Fairness:
    """``keys`` keys with Zipf-like backlogs, submitted largest backlog first (FIFO would
    serve the first key alone); Jain's index of the dispatches per key in the window.
    Each dispatch pass hands out the slots acks freed (``workers`` decides how many)."""
    sizes = backlogs(keys, min_jobs)
    backlog = {f"k{i}": n for i, n in enumerate(sizes)}
    specs = [
        pb.JobSpec(queue=queue, payload=PAYLOAD, fairness_key=key)
        for key, n in backlog.items()
        for _ in range(n)
    ]
    seen = _Dispatches()
    _, m = await _burn_down(rig, queue, specs, workers, seen)
    counts = _window_counts(seen.seen, backlog)
    shares = [counts[key] for key in backlog]
    window = sum(shares)
    return Fairness(
        keys=keys,
        jobs=len(specs),
        largest_backlog=max(sizes),
        smallest_backlog=min(sizes),
        window_dispatches=window,
        jain=jain(shares),
        min_share=min(shares) / (window / keys),
        seconds=m.seconds,
        other_cpu_pct=m.other_cpu_pct,
    )


async def key_cost(
    rig: Rig, queue: str, jobs: int, keys: int, workers: WorkerConfig
) -> tuple[Measured, Measured]:
    """``jobs`` jobs whose fairness keys go round-robin over ``keys`` distinct keys (0: no
    key). Returns (submit, burn-down); the burn-down's server CPU per job is the figure."""
    return await _burn_down(rig, queue, keyed_specs(queue, jobs, keys), workers)
