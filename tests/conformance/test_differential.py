"""The differential property test: Hypothesis draws one sequence of operations (submits with
priorities, ordering and fairness keys, delays and time to live, parents and a batch; width,
rate and pause changes; credit changes and reconnects; results: success, retryable and
permanent failure; heartbeats; cancels, retries, reprioritizes; time steps that end leases) and runs
it on BOTH backends side by side, each with its own fake clock at the same times. After
every step it compares what a client can observe: the sequence of dispatched jobs (by
submit index, not id), each job's state and attempt count, every ListJobs listing, the
queue's counts, and what each operation answered (its refusal, a result's rejections).

One worker at a time serves one queue, so which worker gets a job (which the backends may
decide differently) makes no false difference."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dispatchd.backend import Backend
from dispatchd.engine import (
    AdaptiveRate,
    EngineError,
    EngineLimits,
    JobFailure,
    JobState,
    JobThrottle,
    NewJob,
    Rate,
    RateWindow,
    RetryPolicy,
    ThrottleScope,
)
from tests.conformance.harness import Driver, FakeClock, Worker, open_embedded, open_redis
from tests.redisproc import RedisProcess

LEASE_SECONDS = 3.0
LIMITS = EngineLimits(default_lease_seconds=LEASE_SECONDS)
#: Jittered backoff draws from each backend's own random source: no jitter here. Times
#: are multiples of 1/4 s and rates whole tokens per 1/4 s, so both backends' arithmetic
#: is exact (the Lua scripts keep times and tokens to the microsecond).
POLICIES = (None, RetryPolicy.of(3, 0.5, 2.0, 2.0, 0.0), RetryPolicy.of(2, 0.0, 0.0, 1.0, 0.0))
RATES = (None, Rate.of(1.0, 1), Rate.of(2.0, 2), Rate.of(4.0, 1))
STEPS = (0.25, 0.5, 1.0, 2.0, 3.5)
#: Throttle signals' AIMD (halving, +1/s a second) and quotas whose windows START (10**6)
#: begins: whole numbers, exact on both sides.
ADAPTIVE = AdaptiveRate.of(1.0, 0.5, 1.0, 1.0)
WINDOWS = ((), (RateWindow.of(3, 1.0),), (RateWindow.of(5, 2.0), RateWindow.of(8, 10.0)))

#: More examples (and fresh ones each run) with DISPATCHD_CONFORMANCE_EXAMPLES=500.
EXAMPLES = int(os.environ.get("DISPATCHD_CONFORMANCE_EXAMPLES", "0"))

# ---- operations: each runs on one side and returns what it answered ------------------------


@dataclass(frozen=True)
class Submit:
    priority: int
    ordering_key: str
    fairness_key: str
    delay: float | None
    ttl: float | None
    policy: int
    parent: int = -1
    """Workflows: the job names an earlier job (by submit index, modulo) as its parent."""
    batch: str = ""
    """Workflows: the batch it joins."""

    async def run(self, side: Side) -> object:
        d = side.driver
        now = d.clock.now
        parents = (side.ids[self.parent % len(side.ids)],) if self.parent >= 0 and side.ids else ()
        spec = NewJob(
            "q",
            priority=self.priority,
            ordering_key=self.ordering_key,
            fairness_key=self.fairness_key,
            not_before=None if self.delay is None else now + self.delay,
            expire_at=None if self.ttl is None else now + self.ttl,
            retry_policy=POLICIES[self.policy],
            parent_ids=parents,
            batch_id=self.batch,
        )
        [(job, repeated)] = await d.backend.submit([spec])
        answered = ("submitted", job.state.name, repeated)  # as Submit answers it
        side.index[job.id] = len(side.ids)
        side.ids.append(job.id)
        await d.settle()
        return answered


@dataclass(frozen=True)
class Answer:
    pick: int
    outcome: str  # "ok", "retryable", "fatal", "throttle" (the queue), "throttle-key"

    async def run(self, side: Side) -> object:
        held = list(side.worker.held.values())
        if not held:
            return None
        lease = held[self.pick % len(held)]
        outcome: bytes | JobFailure | JobThrottle = b"done"
        if self.outcome == "throttle":
            outcome = JobThrottle(1.0, ThrottleScope.QUEUE, "429")
        elif self.outcome == "throttle-key":
            outcome = JobThrottle(0.5, ThrottleScope.FAIRNESS_KEY)
        elif self.outcome != "ok":
            outcome = JobFailure("boom", self.outcome == "retryable", "E")
        rejected = await side.worker.answer(lease, outcome)
        return [(side.index[r.job_id], r.reason) for r in rejected]


@dataclass(frozen=True)
class Advance:
    seconds: float

    async def run(self, side: Side) -> object:
        await side.driver.advance(self.seconds)
        return None


@dataclass(frozen=True)
class Heartbeat:
    async def run(self, side: Side) -> object:
        return len(await side.worker.heartbeat())


@dataclass(frozen=True)
class JobOp:
    """CancelJob, RetryJob or ReprioritizeJob of the job submitted ``pick``-th (mod n)."""

    kind: str  # "cancel", "retry", "reprioritize"
    pick: int
    priority: int = 0

    async def run(self, side: Side) -> object:
        if not side.ids:
            return None
        job_id = side.ids[self.pick % len(side.ids)]
        backend = side.driver.backend
        if self.kind == "cancel":
            view = await backend.cancel_job(job_id)
        elif self.kind == "retry":
            view = await backend.retry_job(job_id)
        else:
            view = await backend.reprioritize_job(job_id, self.priority)
        answered = (view.state.name, view.priority, view.attempt)  # as the RPC answers
        await side.driver.settle()
        return answered


@dataclass(frozen=True)
class QueueChange:
    """UpdateQueue: width, rate (an index into RATES), paused, adaptive (on/off) or a quota
    (an index into WINDOWS)."""

    width: int | None = None
    rate: int | None = None
    paused: bool | None = None
    adaptive: bool | None = None
    windows: int | None = None

    async def run(self, side: Side) -> object:
        if self.adaptive is not None:
            await side.driver.update(adaptive=ADAPTIVE if self.adaptive else None)
        elif self.windows is not None:
            await side.driver.update(windows=WINDOWS[self.windows])
        elif self.rate is not None:
            await side.driver.update(rate=RATES[self.rate])
        else:
            await side.driver.update(width=self.width, paused=self.paused)
        return None


@dataclass(frozen=True)
class Credit:
    credits: int

    async def run(self, side: Side) -> object:
        await side.worker.set_credit(self.credits)
        return None


@dataclass(frozen=True)
class Reconnect:
    credits: int

    async def run(self, side: Side) -> object:
        await side.worker.disconnect()
        side.collect()
        side.worker = await side.driver.connect(credits=self.credits)
        return None


Op = Submit | Answer | Advance | Heartbeat | JobOp | QueueChange | Credit | Reconnect

submits = st.builds(
    Submit,
    priority=st.integers(-1, 2),
    ordering_key=st.sampled_from(["", "", "a", "b"]),
    fairness_key=st.sampled_from(["", "x", "y"]),
    delay=st.sampled_from([None, None, 0.5, 2.0]),
    ttl=st.sampled_from([None, None, None, 1.0, 4.0]),
    policy=st.sampled_from([0, 0, 1, 2]),
    parent=st.sampled_from([-1, -1, -1, 0, 1, 3]),
    batch=st.sampled_from(["", "", "b"]),
)
operations = st.one_of(
    submits,
    submits,
    submits,
    st.builds(Answer, st.integers(0, 5), st.sampled_from(["ok", "ok", "retryable", "fatal"])),
    st.builds(Answer, st.integers(0, 5), st.just("ok")),
    st.builds(Answer, st.integers(0, 5), st.sampled_from(["throttle", "throttle-key"])),
    st.builds(QueueChange, adaptive=st.booleans()),
    st.builds(QueueChange, windows=st.integers(0, len(WINDOWS) - 1)),
    st.builds(Advance, st.sampled_from(STEPS)),
    st.builds(Advance, st.sampled_from(STEPS)),
    st.just(Heartbeat()),
    st.builds(JobOp, st.sampled_from(["cancel", "retry"]), st.integers(0, 30)),
    st.builds(JobOp, st.just("reprioritize"), st.integers(0, 30), st.integers(-1, 3)),
    st.builds(QueueChange, width=st.integers(0, 4)),
    st.builds(QueueChange, rate=st.integers(0, len(RATES) - 1)),
    st.builds(QueueChange, paused=st.booleans()),
    st.builds(Credit, st.integers(0, 4)),
    st.builds(Reconnect, st.integers(1, 4)),
)


# ---- one backend, driven -------------------------------------------------------------------


@dataclass
class Side:
    """One backend running the sequence: its driver, its worker, its job ids by index."""

    driver: Driver
    worker: Worker
    ids: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    dispatched: list[int] = field(default_factory=list)

    def pick(self, pick: int) -> str | None:
        return self.ids[pick % len(self.ids)] if self.ids else None

    def collect(self) -> None:
        for lease in self.worker.take():
            self.dispatched.append(self.index[lease.job.id])


async def apply(side: Side, op: Op) -> object:
    """Runs ``op``; returns what it answered, in terms both backends can share: a refusal
    as its type and words, with this backend's job ids turned back into indexes."""
    try:
        return await op.run(side)
    except EngineError as e:
        text = str(e)
        for job_id, i in side.index.items():
            text = text.replace(job_id, f"#{i}")
        return (type(e).__name__, text)
    finally:
        side.collect()


async def observe(side: Side) -> dict[str, Any]:
    """What a client can see of the queue and its jobs."""
    d = side.driver
    view = await d.queue()
    jobs = {}
    for i, job_id in enumerate(side.ids):
        job = await d.job(job_id)
        reason = job.cancel_reason
        for other, k in side.index.items():
            reason = reason.replace(other, f"#{k}")
        jobs[i] = (job.state.name, job.attempt, len(job.attempts), job.throttle_count, reason)
    listings = {}
    for state in (JobState.UNSPECIFIED, JobState.SCHEDULED, JobState.UNDERWAY):
        listings[state.name] = [side.index[i] for i in await d.listed(state)]
    try:
        b = await d.backend.get_batch("q", "b")
        batch: object = (b.total, b.active, b.succeeded, b.failed, b.cancelled, b.expired, b.dead)
    except EngineError:
        batch = None
    (f,) = [f for f in await d.backend.queue_figures() if f.view.name == view.name]
    head = None if f.head_ready is None else round(f.head_ready - d.at(0), 6)
    return {
        "batch": batch,
        "dispatched": list(side.dispatched),
        "counts": (view.pending_count, view.underway_count, view.scheduled_count),
        "throttle": (
            view.throttled_until,
            view.throttled_key_count,
            round(view.effective_rate, 6),
            tuple(n for _, _, n in view.window_usage),
        ),
        "jobs": jobs,
        "listings": listings,
        # What /metrics shows of the queue (Backend.queue_figures).
        "figures": (head, f.blocked, f.dead, f.failed, f.rate_limited, f.key_held),
    }


async def open_side(
    opener: Callable[[FakeClock], Awaitable[Backend]], name: str, credits: int
) -> Side:
    clock = FakeClock()
    driver = Driver(name, await opener(clock), clock)
    await driver.update(width=3, lease_seconds=LEASE_SECONDS)
    return Side(driver, await driver.connect(credits=credits))


async def run_both(redis_url: str, ops: list[Op], policy: int, credits: int) -> None:
    queue_policy = POLICIES[policy]
    sides = [
        await open_side(lambda c: open_embedded(LIMITS, c), "embedded", credits),
        await open_side(lambda c: open_redis(redis_url, LIMITS, c), "redis", credits),
    ]
    try:
        for side in sides:
            await side.driver.update(retry_policy=queue_policy)
        trail: list[str] = []
        for step, op in enumerate(ops):
            answers = [await apply(side, op) for side in sides]
            trail.append(f"{step}: {op} -> {answers[0]!r}")
            where = "\n".join(trail)
            assert answers[0] == answers[1], f"answers differ:\n{where}\nredis: {answers[1]!r}"
            seen = [await observe(side) for side in sides]
            for key in seen[0]:
                assert seen[0][key] == seen[1][key], (
                    f"{key} differs after\n{where}\n"
                    f"embedded: {seen[0][key]!r}\nredis:    {seen[1][key]!r}"
                )
    finally:
        for side in sides:
            await side.driver.backend.close()


@pytest.mark.timeout(max(60, EXAMPLES // 5))  # about 0.05 s an example; more when asked
@settings(
    max_examples=EXAMPLES or 60,
    derandomize=not EXAMPLES,  # CI runs the same examples every time
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@example(  # leases that end together end in dispatch order: their lanes rejoin the ring so
    ops=[
        Submit(0, "", "", None, None, 0),
        Answer(0, "ok"),
        Submit(0, "", "", None, None, 0),
        Submit(0, "", "x", None, None, 0),
        Reconnect(2),
        Advance(3.5),
    ],
    policy=0,
    credits=1,
)
@given(
    ops=st.lists(operations, min_size=3, max_size=30),
    policy=st.integers(0, len(POLICIES) - 1),
    credits=st.integers(1, 4),
)
def test_both_backends_show_a_client_the_same_thing(
    redis_process: RedisProcess, ops: list[Op], policy: int, credits: int
) -> None:
    redis_process.flush()
    asyncio.run(run_both(redis_process.url, ops, policy, credits))
