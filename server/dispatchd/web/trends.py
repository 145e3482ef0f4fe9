"""The last minutes of each queue for the dashboard's sparklines: a small ring per queue.

An engine observer, added only when the dashboard is on. Each event lands in the bucket
of its own timestamp (the engine's clock, carried by the event), so the hooks read no
clock and cost an index and two additions. Rings are fixed size and at most
``max_queues`` queues get one: memory stays bounded however many queues come and go.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from dispatchd.engine import EngineObserver, FinishedJob, JobState, LeaseRecord

#: The stamp of a slot never written: no bucket number (times are >= 0) matches it.
_NEVER = -(2**62)
#: Finished states in which a job ran: cancelled and expired jobs are not throughput.
_RAN = frozenset({int(JobState.SUCCEEDED), int(JobState.FAILED), int(JobState.DEAD)})
_SUCCEEDED = int(JobState.SUCCEEDED)
_DEAD = int(JobState.DEAD)


@dataclass(frozen=True, slots=True)
class Trend:
    """One queue's last complete buckets, oldest first."""

    bucket_seconds: float
    throughput: list[float]
    """Jobs finished (succeeded, failed or dead) per second, per bucket."""
    wait: list[float | None]
    """Mean seconds from ready to first dispatch of the jobs dispatched in the bucket;
    None where nothing was dispatched."""
    dead: int = 0
    """Jobs that went DEAD over the whole window (retries exhausted)."""


@dataclass(frozen=True, slots=True)
class Rates:
    """Every queue of this process together, per second, per bucket, oldest first: the
    overview's chart."""

    bucket_seconds: float
    dispatched: list[float]
    """Attempts started (every dispatch, retries too)."""
    succeeded: list[float]
    failed: list[float]
    """Jobs that failed for good (FAILED, or DEAD: retries exhausted). An attempt that
    will retry is not counted: the Redis replicas hear of a job only when it finishes,
    and the chart means the same on both backends."""


class _Ring:
    """Counters of the last ``size`` buckets; a slot whose stamp is not the bucket asked
    for holds an older bucket and counts as empty."""

    __slots__ = ("dead", "finished", "latest", "stamps", "wait_count", "wait_sum")

    def __init__(self, size: int) -> None:
        self.latest = _NEVER
        """The newest bucket ever written: a ring idle for a whole window is skipped."""
        self.stamps = array("q", [_NEVER]) * size
        self.finished = array("q", [0]) * size
        self.dead = array("q", [0]) * size
        self.wait_count = array("q", [0]) * size
        self.wait_sum = array("d", [0.0]) * size

    def clear(self, i: int, bucket: int) -> None:
        """Slot ``i`` starts over as ``bucket``."""
        self.stamps[i] = bucket
        if bucket > self.latest:
            self.latest = bucket
        self.finished[i] = 0
        self.dead[i] = 0
        self.wait_count[i] = 0
        self.wait_sum[i] = 0.0


class _FleetRing:
    """This process's dispatches, successes and failed attempts per bucket."""

    __slots__ = ("dispatched", "failed", "stamps", "succeeded")

    def __init__(self, size: int) -> None:
        self.stamps = array("q", [_NEVER]) * size
        self.dispatched = array("q", [0]) * size
        self.succeeded = array("q", [0]) * size
        self.failed = array("q", [0]) * size

    def slot(self, bucket: int) -> int:
        i = bucket % len(self.stamps)
        if self.stamps[i] != bucket:
            self.stamps[i] = bucket
            self.dispatched[i] = self.succeeded[i] = self.failed[i] = 0
        return i


class Trends(EngineObserver):
    """Throughput and wait time per queue over the last ``buckets`` x ``bucket_seconds``."""

    def __init__(
        self, bucket_seconds: float = 5.0, buckets: int = 60, max_queues: int = 1000
    ) -> None:
        if bucket_seconds <= 0 or buckets < 2 or max_queues < 1:
            raise ValueError("bucket_seconds > 0, buckets >= 2 and max_queues >= 1 please")
        self.bucket_seconds = bucket_seconds
        self.buckets = buckets
        self.max_queues = max_queues
        self._rings: dict[str, _Ring] = {}
        self._fleet = _FleetRing(buckets)
        #: The picture of a ring with nothing in the window, shared (nobody changes it).
        self._idle = self._empty()

    def _ring(self, queue: str) -> _Ring | None:
        ring = self._rings.get(queue)
        if ring is None and len(self._rings) < self.max_queues:
            ring = self._rings[queue] = _Ring(self.buckets)
        return ring

    # The two hooks run once per job: the ring lookup and the slot check are inlined.

    def job_dispatched(self, lease: LeaseRecord) -> None:
        job = lease.job
        t = job.dispatch_time
        if t is None:
            return
        fleet = self._fleet
        fleet.dispatched[fleet.slot(int(t // self.bucket_seconds))] += 1
        if job.attempt != 1:
            return  # a retry's backoff is not waiting in line (as in the metrics)
        ring = self._rings.get(job.queue) or self._ring(job.queue)
        if ring is None:
            return
        ready = job.submit_time if job.not_before is None else max(job.not_before, job.submit_time)
        bucket = int(t // self.bucket_seconds)
        i = bucket % self.buckets
        if ring.stamps[i] != bucket:
            ring.clear(i, bucket)
        ring.wait_count[i] += 1
        ring.wait_sum[i] += max(0.0, t - ready)

    def job_finished(self, job: FinishedJob) -> None:
        code = job.state_code
        if code not in _RAN:
            return
        bucket = int(job.finish_time // self.bucket_seconds)
        fleet = self._fleet
        f = fleet.slot(bucket)
        if code == _SUCCEEDED:
            fleet.succeeded[f] += 1
        else:
            fleet.failed[f] += 1
        ring = self._rings.get(job.queue) or self._ring(job.queue)
        if ring is None:
            return
        i = bucket % self.buckets
        if ring.stamps[i] != bucket:
            ring.clear(i, bucket)
        ring.finished[i] += 1
        if code == _DEAD:
            ring.dead[i] += 1

    def rates(self, now: float) -> Rates:
        """The complete buckets before the one ``now`` falls in, per second."""
        fleet = self._fleet
        per = self.bucket_seconds
        current = int(now // per)
        out = Rates(per, [], [], [])
        for bucket in range(current - self.buckets + 1, current):
            i = bucket % self.buckets
            fresh = fleet.stamps[i] == bucket
            out.dispatched.append(fleet.dispatched[i] / per if fresh else 0.0)
            out.succeeded.append(fleet.succeeded[i] / per if fresh else 0.0)
            out.failed.append(fleet.failed[i] / per if fresh else 0.0)
        return out

    def trend(self, queue: str, now: float) -> Trend | None:
        """The complete buckets before the one ``now`` falls in (a bucket still filling
        would always look like a drop); None for a queue past ``max_queues``."""
        ring = self._rings.get(queue)
        if ring is None:
            return None if len(self._rings) >= self.max_queues else self._empty()
        current = int(now // self.bucket_seconds)
        if ring.latest < current - self.buckets + 1:
            return self._idle  # nothing in the window: most of a thousand queues, cheaply
        throughput: list[float] = []
        wait: list[float | None] = []
        dead = 0
        for bucket in range(current - self.buckets + 1, current):
            i = bucket % self.buckets
            if ring.stamps[i] != bucket:
                throughput.append(0.0)
                wait.append(None)
                continue
            throughput.append(ring.finished[i] / self.bucket_seconds)
            dead += ring.dead[i]
            n = ring.wait_count[i]
            wait.append(ring.wait_sum[i] / n if n else None)
        return Trend(self.bucket_seconds, throughput, wait, dead)

    def _empty(self) -> Trend:
        n = self.buckets - 1
        return Trend(self.bucket_seconds, [0.0] * n, [None] * n)
