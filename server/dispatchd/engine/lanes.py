"""The dispatchable jobs of one queue, split by fairness key and handed out fairly.

Each fairness key has a lane: a priority heap of its ready jobs. Lanes that may
dispatch sit in a ring served round-robin, each taking ``weight`` turns before the next
lane's go, so a key with 100,000 pending jobs cannot starve a key with 10. A lane at
its in-flight bound or out of per-key tokens leaves the ring and comes back when a
slot frees or its next token is due, so one dispatch costs O(log n) however many keys
are blocked. Jobs without a fairness key share the lane "".

A key held by a throttle signal (engine/throttling.py) leaves the ring the same way and
comes back through the same wake heap when its hold ends; the hold is kept apart from the
lane (``_held``), so a lane forgotten while idle is held again when its next job comes.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping

from dispatchd.engine.model import JobRecord, JobState
from dispatchd.engine.policies import AdaptiveRate, Aimd, KeyLimits, TokenBucket, WindowCounts


class Lane:
    __slots__ = (
        "aimd",
        "bucket",
        "heap",
        "in_flight",
        "in_ring",
        "key",
        "live",
        "turns",
        "weight",
        "windows",
    )

    def __init__(self, key: str) -> None:
        self.key = key
        # The jobs' own pending_entry tuples (-priority, seq, job id): see _pop_valid.
        self.heap: list[tuple[int, int, str]] = []
        self.live = 0  # entries in heap that are still valid
        self.in_flight = 0
        self.bucket: TokenBucket | None = None
        self.aimd: Aimd | None = None  # the adaptive per-key rate, on an adaptive queue
        self.windows: WindowCounts | None = None  # its quotas' counts (per_key_windows)
        self.weight = 1
        self.turns = 0
        self.in_ring = False


class FairReady:
    """Ready jobs of one queue. Heaps are lazy: cancel and reprioritize leave the old
    entry behind, which pop skips by comparing the job's version."""

    __slots__ = ("_held", "_jobs", "_ring", "_wake_seq", "_waking", "adaptive", "lanes", "limits")

    def __init__(self, jobs: Mapping[str, JobRecord]) -> None:
        self._jobs = jobs
        self.lanes: dict[str, Lane] = {}
        self._ring: deque[Lane] = deque()
        self._waking: list[tuple[float, int, str]] = []  # lanes waiting for a token or hold
        self._held: dict[str, float] = {}  # fairness key -> end of its throttle hold
        self._wake_seq = 0
        self.limits = KeyLimits()
        self.adaptive: AdaptiveRate | None = None  # the queue's, for its per-key rates

    def __len__(self) -> int:
        return sum(lane.live for lane in self.lanes.values())

    def _lane(self, key: str) -> Lane:
        lane = self.lanes.get(key)
        if lane is None:
            lane = self.lanes[key] = Lane(key)
        return lane

    def push(self, job: JobRecord, now: float) -> None:
        lane = self._lane(job.fairness_key)
        if self.limits.windows and lane.windows is None:
            lane.windows = WindowCounts(self.limits.windows)
        rate = self.limits.per_key_rate
        if rate is not None and lane.bucket is None:
            lane.bucket = TokenBucket(rate, now)
            if self.adaptive is not None:
                lane.aimd = Aimd(self.adaptive, rate.per_second, now)
        if job.fairness_weight:
            lane.weight = job.fairness_weight
        entry = job.pending_entry
        assert entry is not None, "a job joins its lane once filed as pending"
        job.in_lane = True
        heapq.heappush(lane.heap, entry)
        lane.live += 1
        self._enter_ring(lane, now)

    def discard(self, job: JobRecord) -> None:
        """The job left the ready set without being popped (cancel, expiry, reprioritize)."""
        if job.in_lane:
            job.in_lane = False
            self._lane(job.fairness_key).live -= 1

    def _enter_ring(self, lane: Lane, now: float) -> None:
        if lane.in_ring or lane.live <= 0:
            return
        if self._held and self._held.get(lane.key, now) > now:
            return  # back through _waking when the hold ends
        cap = self.limits.max_in_flight_per_key
        if cap and lane.in_flight >= cap:
            return
        lane.in_ring = True
        self._ring.append(lane)

    def has_ready(self, now: float) -> bool:
        self._wake(now)
        return bool(self._ring)

    def next_wake(self) -> float | None:
        """When a lane blocked on its per-key rate gets its next token."""
        return self._waking[0][0] if self._waking else None

    def _wake(self, now: float) -> None:
        while self._waking and self._waking[0][0] <= now:
            _, _, key = heapq.heappop(self._waking)
            if self._held.get(key, now) <= now:
                self._held.pop(key, None)
            lane = self.lanes.get(key)
            if lane is not None:
                self._enter_ring(lane, now)

    def hold(self, key: str, until: float, now: float) -> None:
        """A throttle signal holds fairness key ``key`` until ``until`` (a later hold wins):
        its lane leaves the ring now and comes back through the wake heap."""
        if until <= self._held.get(key, now):
            return
        self._held[key] = until
        self._wake_seq += 1
        heapq.heappush(self._waking, (until, self._wake_seq, key))
        lane = self.lanes.get(key)
        if lane is not None and lane.bucket is not None:
            lane.bucket.hold(until)  # resume at the key's rate, not in a burst
        if lane is not None and lane.in_ring:
            self._ring.remove(lane)  # O(keys in the ring), once per signal
            lane.in_ring = False
            lane.turns = 0

    def throttled(
        self, key: str, now: float, sent_at: float | None = None, resume_at: float | None = None
    ) -> None:
        """A key-scoped throttle signal on an adaptive queue: the key's rate decreases."""
        lane = self.lanes.get(key)
        if lane is not None and lane.aimd is not None:
            lane.aimd.throttled(now, sent_at, resume_at)
            self._adapt(lane, now)

    def _adapt(self, lane: Lane, now: float) -> None:
        """The lane's bucket at its adaptive rate now (see QueueState.adapt)."""
        rate = self.limits.per_key_rate
        if lane.aimd is None or lane.bucket is None or rate is None:
            return
        current = lane.aimd.rate(rate, now)
        if current.per_second != lane.bucket.per_second or current.burst != lane.bucket.burst:
            lane.bucket.reconfigure(current, now)

    def key_usage(self, now: float) -> tuple[tuple[str, tuple[tuple[float, float, int], ...]], ...]:
        """(key, its quota counts) of every key that used some of its current windows: what
        is stored so that a restart grants a key's quota once."""
        out = []
        for key, lane in self.lanes.items():
            if lane.windows is not None:
                usage = lane.windows.usage(now)
                if any(n for _, _, n in usage):
                    out.append((key, usage))
        return tuple(out)

    def restore_key_usage(self, key: str, usage: tuple[tuple[float, float, int], ...]) -> None:
        if self.limits.windows:
            lane = self._lane(key)
            if lane.windows is None:
                lane.windows = WindowCounts(self.limits.windows)
            lane.windows.restore(usage)

    def held_keys(self, now: float) -> int:
        """How many fairness keys a throttle signal holds at ``now``."""
        return sum(1 for until in self._held.values() if until > now)

    def pop(self, now: float) -> JobRecord | None:
        """The next job by weighted round-robin over lanes, or None when every lane with
        jobs is at its bound. Takes the lane's per-key token."""
        self._wake(now)
        ring = self._ring
        cap = self.limits.max_in_flight_per_key
        while ring:
            lane = ring[0]
            if lane.live <= 0 or (cap and lane.in_flight >= cap):
                self._leave_ring(lane, now)
                continue
            wait = self._key_wait(lane, now)
            if wait is not None:
                self._sleep_lane(lane, now, wait)
                continue
            job = self._pop_valid(lane)
            if job is None:
                continue
            if lane.bucket is not None:
                lane.bucket.take(now)
            if lane.windows is not None:
                lane.windows.take(now)
            lane.in_flight += 1
            lane.turns += 1
            # A lane that cannot give another job now leaves the ring at once, so the ring
            # holds only lanes that can: has_ready() stays exact and a dispatch pass does
            # not take a worker's round-robin turn for a job that is not there.
            if lane.live <= 0 or (cap and lane.in_flight >= cap):
                self._leave_ring(lane, now)
            elif (wait := self._key_wait(lane, now)) is not None:
                self._sleep_lane(lane, now, wait)
            elif lane.turns >= lane.weight:
                lane.turns = 0
                ring.rotate(-1)
            return job
        return None

    def _key_wait(self, lane: Lane, now: float) -> float | None:
        """When the lane's quotas and per-key token let it go again; None: they do now."""
        if lane.bucket is None and lane.windows is None and lane.aimd is None:
            return None  # the common lane: no per-key rate, quota or adaptive rate
        if lane.windows is not None and not lane.windows.ready(now):
            return lane.windows.next_time(now)
        if lane.aimd is not None:
            self._adapt(lane, now)
        if lane.bucket is not None and not lane.bucket.ready(now):
            return lane.bucket.next_time(now)
        return None

    def _sleep_lane(self, lane: Lane, now: float, until: float) -> None:
        """The lane at the head of the ring is out of per-key tokens or quota: it leaves the
        ring until ``until``, when they let it go again."""
        self._leave_ring(lane, now)
        self._wake_seq += 1
        heapq.heappush(self._waking, (until, self._wake_seq, lane.key))

    def _leave_ring(self, lane: Lane, now: float) -> None:
        self._ring.popleft()
        lane.in_ring = False
        lane.turns = 0
        self._maybe_forget(lane, now)

    def _pop_valid(self, lane: Lane) -> JobRecord | None:
        """The lane's next live entry. An entry is the job's pending_entry when pushed; a
        reprioritize or a return to pending files the job under a new tuple, so an entry
        that is no longer the job's own (``is``) is a stale one left behind."""
        heap = lane.heap
        while heap:
            entry = heapq.heappop(heap)
            job = self._jobs.get(entry[2])
            if (
                job is not None
                and job.in_lane
                and job.pending_entry is entry
                and job.state is JobState.PENDING
            ):
                job.in_lane = False
                lane.live -= 1
                return job
        lane.live = 0
        return None

    def released(self, job: JobRecord, now: float) -> None:
        """A job of this queue stopped running: its lane may dispatch again."""
        lane = self.lanes.get(job.fairness_key)
        if lane is None:
            return
        lane.in_flight = max(0, lane.in_flight - 1)
        self._enter_ring(lane, now)
        self._maybe_forget(lane, now)

    def _maybe_forget(self, lane: Lane, now: float) -> None:
        """Drops an idle lane so 10,000 one-off keys do not stay in memory. A lane whose
        bucket is not full is kept: a fresh lane would start with a full bucket."""
        if lane.live > 0 or lane.in_flight > 0 or lane.in_ring:
            return
        if lane.aimd is not None and lane.aimd.rate_at(now) < lane.aimd.ceiling:
            return  # a fresh lane would start at the full rate
        if lane.windows is not None and any(n for _, _, n in lane.windows.usage(now)):
            return  # nor with its quotas unused (kept until their windows end)
        if lane.bucket is not None:
            lane.bucket.ready(now)  # refill
            if lane.bucket.tokens < lane.bucket.burst:
                return
        del self.lanes[lane.key]

    def configure(
        self, limits: KeyLimits, now: float, adaptive: AdaptiveRate | None = None
    ) -> None:
        """New key limits (and the queue's adaptive setting) take effect at once, for lanes
        that exist and lanes to come; an adaptive key keeps its effective rate."""
        self.limits = limits
        self.adaptive = adaptive
        rate = limits.per_key_rate
        for lane in self.lanes.values():
            if rate is None:
                lane.bucket = None
            elif lane.bucket is None:
                lane.bucket = TokenBucket(rate, now)
            else:
                lane.bucket.reconfigure(rate, now)
            if not limits.windows:
                lane.windows = None
            elif lane.windows is None:
                lane.windows = WindowCounts(limits.windows)
            else:
                lane.windows.reconfigure(limits.windows)
            if rate is None or adaptive is None:
                lane.aimd = None
            elif lane.aimd is None:
                lane.aimd = Aimd(adaptive, rate.per_second, now)
            else:
                lane.aimd.reconfigure(adaptive, rate.per_second)
                self._adapt(lane, now)
            self._enter_ring(lane, now)
