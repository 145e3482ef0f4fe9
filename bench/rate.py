"""Dispatch accuracy under a rate: how close the dispatches a queue makes under
``Queue.rate`` come to the rate that was set.

The queue gets the rate (burst left at 0, the server's default of ceil(per_second)) and a
width that does not bind, then enough jobs for the whole run are submitted before any
worker connects. Workers whose credit covers the burst ack each delivery message. Every
delivery message is stamped when a worker reads it; the figure is the jobs received
inside the window over the window's length, against the set rate.

The window leaves the initial burst out: it opens once ``burst`` jobs have arrived, at
least WARMUP_S after the first one, and once dispatch has caught up with the bucket and
the workers with dispatch; it lasts ``seconds``. Caught up: the bound
``burst + per_second * (t - connect) - dispatched(t)`` of the tokens the server's bucket
holds (full when the workers connect, never above since), and the jobs dispatched but not
yet received, are each at most CATCH_UP_S worth; ``dispatched`` is the server's own count
(jobs submitted minus GetQueue's pending count). Without that, tokens saved while the
client or the server lagged (up to ``burst``, one second's worth) would be spent inside
the window and read as a rate too high by up to 1/``seconds``, and so would a backlog of
unread deliveries. The pending count is also read at the window's end: ``server_ratio``
is the same figure without the client's part. Afterwards the rate is cleared so the rest
drains at full speed.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.measure import Meter, split
from bench.rpc import Dispatchd
from bench.workload import PAYLOAD, Acks, Rig, WorkerConfig, WorkerPool
from dispatchd_client.v1 import dispatcher_pb2 as pb

RATES = (500.0, 5_000.0)
"""The rates the bench sets, per second."""
WARMUP_S = 1.0
"""The window opens no sooner than this after the first delivery."""
TAIL_S = 2.0
"""Jobs beyond the window, so the queue never runs dry inside it."""
CATCH_UP_S = 0.02
"""Saved tokens worth at most this much time count as caught up."""
CATCH_UP_TIMEOUT = 10.0
"""The window opens after this long even if dispatch never caught up (saved_at_start
says by how much)."""
START_TIMEOUT = 30.0
POLL_S = 0.01
WIDTH = 1_000_000
SUBMIT_BATCH = 1_000


@dataclass(frozen=True, slots=True)
class RateRun:
    """Dispatches inside the window against the set rate."""

    set_per_s: float
    burst: int
    jobs: int
    window_s: float
    dispatched: int
    """Jobs the workers received inside the window."""
    messages: int
    """Delivery messages the workers received inside the window."""
    server_dispatched: int
    """The server's pending count at the window's start minus at its end."""
    server_window_s: float
    """Between the two pending counts (each stamped mid-call)."""
    saved_at_start: float
    """Upper bound of the tokens the server's bucket held when the window opened."""
    warmup_s: float
    """From the first arrival to the window's start."""
    underway_at_end: int
    """Jobs delivered and not yet acked when the window closed: near ``credit``, the
    workers (this process) held dispatch back."""
    credit: int
    server_cpu_s: float
    """Server CPU over the window: a rate-limited queue must not spin."""
    client_cpu_s: float
    other_cpu_pct: float

    @property
    def measured_per_s(self) -> float:
        return self.dispatched / self.window_s

    @property
    def ratio(self) -> float:
        return self.measured_per_s / self.set_per_s

    @property
    def server_ratio(self) -> float:
        """The same by the server's pending count: client lag does not touch it."""
        return self.server_dispatched / self.server_window_s / self.set_per_s

    @property
    def jobs_per_msg(self) -> float:
        return self.dispatched / self.messages if self.messages else 0.0

    @property
    def server_cpu_pct(self) -> float:
        """Server CPU over the window, in % of one core."""
        return self.server_cpu_s / self.window_s * 100

    @property
    def client_cpu_pct(self) -> float:
        """This process's CPU over the window, in % of one core."""
        return self.client_cpu_s / self.window_s * 100


class Arrivals:
    """Receipt times of delivery messages and the running job count; ``marked`` is set
    when ``mark`` jobs have arrived."""

    def __init__(self, mark: int) -> None:
        self.times: list[float] = []
        self.counts: list[int] = []
        self.total = 0
        self.mark = mark
        self.mark_time = 0.0
        self.marked = asyncio.Event()

    def __call__(self, ds: Sequence[pb.Delivery]) -> None:
        now = time.perf_counter()
        self.total += len(ds)
        self.times.append(now)
        self.counts.append(self.total)
        if self.total >= self.mark and not self.marked.is_set():
            self.mark_time = now
            self.marked.set()

    def between(self, start: float, end: float) -> tuple[int, int]:
        """(jobs, messages) received at ``start`` <= t < ``end``."""
        i = bisect.bisect_left(self.times, start)
        j = bisect.bisect_left(self.times, end)
        upto = self.counts[j - 1] if j else 0
        before = self.counts[i - 1] if i else 0
        return upto - before, j - i


async def _sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.perf_counter()))


async def _counts(api: Dispatchd, queue: str) -> tuple[float, int, int]:
    """(when, pending, underway): the server's own counts, stamped mid-call."""
    before = time.perf_counter()
    q = (await api.get_queue(pb.GetQueueRequest(name=queue), timeout=5.0)).queue
    return (before + time.perf_counter()) / 2, q.pending_count, q.underway_count


@dataclass(frozen=True, slots=True)
class _Bucket:
    """What the server's bucket may hold at most: full at ``connect``, ``jobs`` pending."""

    per_second: float
    burst: int
    jobs: int
    connect: float

    def saved(self, when: float, pending: int) -> float:
        return self.burst + self.per_second * (when - self.connect) - (self.jobs - pending)

    async def caught_up(
        self, api: Dispatchd, queue: str, arrivals: Arrivals
    ) -> tuple[float, int, float]:
        """Polls until the bound, and the jobs dispatched but not yet received, are each
        at most CATCH_UP_S worth (CATCH_UP_TIMEOUT at most). Returns (when, pending,
        bound)."""
        give_up = time.perf_counter() + CATCH_UP_TIMEOUT
        slack = max(1.0, CATCH_UP_S * self.per_second)
        while True:
            when, pending, _ = await _counts(api, queue)
            saved = self.saved(when, pending)
            unread = self.jobs - pending - arrivals.total
            if (saved <= slack and unread <= slack) or when > give_up:
                return when, pending, saved
            await asyncio.sleep(POLL_S)


def workers_for(per_second: float, streams: int) -> WorkerConfig:
    """``streams`` workers whose credit together covers the burst and 0.1 s more, so the
    credit never holds dispatch back."""
    credit = split(math.ceil(per_second * 1.1) + streams, streams)[0]
    return WorkerConfig(streams, credit, ack_each=False)


async def rate_accuracy(
    rig: Rig, queue: str, per_second: float, seconds: float, workers: WorkerConfig
) -> RateRun:
    burst = max(1, math.ceil(per_second))
    jobs = burst + math.ceil(per_second * (WARMUP_S + seconds + TAIL_S))
    rate = pb.Rate(per_second=per_second)
    await rig.producers.configure(pb.Queue(name=queue, width=WIDTH, rate=rate), "width", "rate")
    spec = pb.JobSpec(queue=queue, payload=PAYLOAD)
    await rig.producers.submit_all([spec] * jobs, SUBMIT_BATCH)
    arrivals = Arrivals(burst)
    pool = WorkerPool(rig.workers, queue, workers, Acks(jobs), arrivals)
    try:
        bucket = _Bucket(per_second, burst, jobs, time.perf_counter())
        await pool.start()
        await asyncio.wait_for(arrivals.marked.wait(), START_TIMEOUT)
        await _sleep_until(max(arrivals.times[0] + WARMUP_S, arrivals.mark_time))
        start, pending0, saved = await bucket.caught_up(rig.producers, queue, arrivals)
        meter = Meter(rig.server_times)
        await _sleep_until(start + seconds)
        m = meter.result(1, time.perf_counter())
        end, pending1, underway = await _counts(rig.producers, queue)
        dispatched, messages = arrivals.between(start, start + seconds)
        await rig.producers.configure(pb.Queue(name=queue), "rate")  # unset: unlimited
        await pool.until_acked()
        await rig.producers.settled(queue)
    finally:
        await pool.close()
    return RateRun(
        set_per_s=per_second,
        burst=burst,
        jobs=jobs,
        window_s=seconds,
        dispatched=dispatched,
        messages=messages,
        server_dispatched=pending0 - pending1,
        server_window_s=end - start,
        saved_at_start=saved,
        warmup_s=start - arrivals.times[0],
        underway_at_end=underway,
        credit=workers.streams * workers.credit,
        server_cpu_s=m.server_cpu_s,
        client_cpu_s=m.client_cpu_s,
        other_cpu_pct=m.other_cpu_pct,
    )
