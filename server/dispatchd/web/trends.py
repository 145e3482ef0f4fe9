"""The last minutes of each queue for the dashboard's sparklines: a small ring per queue.

An engine observer, added only when the dashboard is on. Each event lands in the bucket
of its own timestamp (the engine's clock, carried by the event), so the hooks read no
clock and cost an index and two additions. Rings are fixed size and at most
``max_queues`` queues get one: memory stays bounded however many queues come and go.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dispatchd.engine import EngineObserver, FinishedJob, JobState, LeaseRecord

#: The stamp of a slot never written: no bucket number (times are >= 0) matches it.
_NEVER = -(2**62)
#: Finished states in which a job ran: cancelled and expired jobs are not throughput.
_RAN = frozenset({int(JobState.SUCCEEDED), int(JobState.FAILED), int(JobState.DEAD)})
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
    """Every queue of the fleet together (every replica's workers on Redis), per second,
    per bucket, oldest first: the overview's chart."""

    bucket_seconds: float
    dispatched: list[float]
    """Attempts started (every dispatch, retries too)."""
    succeeded: list[float]
    failed: list[float]
    """Jobs that failed for good (FAILED, or DEAD: retries exhausted). An attempt that
    will retry is not counted: the Redis replicas hear of a job only when it finishes,
    and the chart means the same on both backends."""


class FleetChart:
    """The overview's chart: Backend.fleet_counts read about once a second (``sample``),
    each replica's counts differenced with its previous reading and the sum added to the
    bucket of the reading's time. A replica seen for the first time only sets its
    baseline (what it ran before is not a burst now); one that went away simply stops
    adding (its counts are not subtracted), and a count that went down (not ours to
    explain) adds nothing: the rates are never negative."""

    def __init__(self, bucket_seconds: float = 5.0, buckets: int = 60) -> None:
        if bucket_seconds <= 0 or buckets < 2:
            raise ValueError("bucket_seconds > 0 and buckets >= 2 please")
        self.bucket_seconds = bucket_seconds
        self.buckets = buckets
        self._stamps = array("q", [_NEVER]) * buckets
        self._counts = [array("q", [0]) * buckets for _ in range(3)]
        self._last: dict[str, tuple[int, int, int]] = {}

    def sample(self, now: float, replicas: Iterable[tuple[str, Sequence[int]]]) -> None:
        """Adds what every replica ran since its last reading to the bucket of ``now``."""
        added = [0, 0, 0]
        last: dict[str, tuple[int, int, int]] = {}
        for replica, counts in replicas:
            current = (counts[0], counts[1], counts[2])
            before = self._last.get(replica)
            last[replica] = current
            if before is not None:
                for k in range(3):
                    added[k] += max(0, current[k] - before[k])
        self._last = last
        bucket = int(now // self.bucket_seconds)
        i = bucket % self.buckets
        if self._stamps[i] != bucket:
            self._stamps[i] = bucket
            for series in self._counts:
                series[i] = 0
        for k in range(3):
            self._counts[k][i] += added[k]

    def rates(self, now: float) -> Rates:
        """The complete buckets before the one ``now`` falls in, per second."""
        per = self.bucket_seconds
        current = int(now // per)
        out = Rates(per, [], [], [])
        lists = (out.dispatched, out.succeeded, out.failed)
        for bucket in range(current - self.buckets + 1, current):
            i = bucket % self.buckets
            fresh = self._stamps[i] == bucket
            for series, values in zip(self._counts, lists, strict=True):
                values.append(series[i] / per if fresh else 0.0)
        return out


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
        if t is None or job.attempt != 1:
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
        ring = self._rings.get(job.queue) or self._ring(job.queue)
        if ring is None:
            return
        i = bucket % self.buckets
        if ring.stamps[i] != bucket:
            ring.clear(i, bucket)
        ring.finished[i] += 1
        if code == _DEAD:
            ring.dead[i] += 1

    def trend(self, queue: str, now: float) -> Trend | None:
        """The complete buckets before the one ``now`` falls in (a bucket still filling
        would always look like a drop); None for a queue past ``max_queues``."""
        ring = self._rings.get(queue)
        if ring is None:
            return None if len(self._rings) >= self.max_queues else self._idle
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
