"""Random operation sequences with every policy on: rates, retries, delays, TTLs, ordering
and fairness keys with per-key limits, idempotency, max_pending and slots. The pump (tick,
then dispatch) runs after every operation, as the service's does; each pass and every
step are checked against the invariants the policies promise."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from dispatchd.engine import (
    Engine,
    EngineLimits,
    EngineObserver,
    FailedPrecondition,
    FinishedJob,
    InvalidArgument,
    JobFailure,
    JobRecord,
    JobState,
    JobView,
    KeyLimits,
    LeaseRecord,
    NewJob,
    NotFound,
    Rate,
    ResourceExhausted,
    RetryPolicy,
    SlotRecord,
)

QUEUES = ("q0", "q1")
ORDERING_KEYS = ("", "", "a", "b")
FAIRNESS_KEYS = ("", "t1", "t2", "t3")
RATES: tuple[Rate | None, ...] = (None, Rate.of(2.0, 2), Rate.of(20.0, 5), Rate.of(0.5, 1))
KEY_LIMITS: tuple[KeyLimits | None, ...] = (
    None,
    KeyLimits.of(1, 0.0, 0),
    KeyLimits.of(2, 1.0, 2),
    KeyLimits.of(0, 4.0, 1),
)
POLICIES: tuple[RetryPolicy | None, ...] = (
    None,
    RetryPolicy.of(3, 0.0, 0.0, 1.0, 0.0),
    RetryPolicy.of(4, 0.5, 4.0, 2.0, 0.5),
)
STEPS = (0.0, 0.1, 0.3, 1.0, 2.5, 6.0)
LEASE_SECONDS = 5.0
LIMITS = EngineLimits(max_finished_jobs=25, finished_retention_seconds=40.0, max_payload_bytes=16)
EPSILON = 1e-6


def max_over_window(times: Sequence[float], per_second: float) -> float:
    """The most dispatches any window [t_i, t_j] holds beyond per_second * (t_j - t_i)."""
    worst = -math.inf
    lowest = math.inf
    for j, t in enumerate(times):
        lowest = min(lowest, j - per_second * t)
        worst = max(worst, (j + 1 - per_second * t) - lowest)
    return worst


class Log(EngineObserver):
    def __init__(self) -> None:
        self.finished: set[str] = set()
        self.forgotten: set[str] = set()
        self.granted: list[SlotRecord] = []
        self.slots: dict[str, SlotRecord] = {}  # held now

    def job_finished(self, job: FinishedJob) -> None:
        assert job.state.finished
        assert job.id not in self.finished, "a job finished twice"
        self.finished.add(job.id)

    def jobs_forgotten(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            assert job_id in self.finished, "an unfinished job was forgotten"
            self.forgotten.add(job_id)

    def slot_granted(self, request_id: str, slot: SlotRecord) -> None:
        self.granted.append(slot)
        self.slots[slot.slot_id] = slot

    def slot_expired(self, slot: SlotRecord) -> None:
        del self.slots[slot.slot_id]


job_spec = st.tuples(
    st.sampled_from(ORDERING_KEYS),
    st.sampled_from(FAIRNESS_KEYS),
    st.integers(0, 3),  # fairness weight
    st.integers(-2, 2),  # priority
    st.sampled_from([None, 0.1, 0.5, 3.0]),  # delay
    st.sampled_from([None, None, 2.0, 8.0]),  # time to live
    st.sampled_from(["", "", "", "i1", "i2", "i3"]),  # idempotency key
    st.sampled_from([0, 0, 0, 1, 2]),  # retry policy (mostly the queue's)
)
JobSpec = tuple[str, str, int, int, float | None, float | None, str, int]


class PolicyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.log = Log()
        self.engine = Engine(limits=LIMITS, observer=self.log, rng=random.Random(0))
        self.now = 0.0
        self.submitted: list[str] = []
        self.chains: dict[tuple[str, str], list[str]] = defaultdict(list)
        # Dispatch and grant times per queue, one list per constant rate.
        self.rate_segments: dict[str, list[tuple[Rate | None, list[float]]]] = {}
        # Dispatch times per (queue, fairness key), one list per constant key limits.
        self.key_segments: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.waiting_requests: list[str] = []

    # ---- helpers ----------------------------------------------------------------

    def held(self) -> list[LeaseRecord]:
        return [lease for w in self.engine.workers() for lease in w.leases.values()]

    def known(self, job_id: str) -> JobView | None:
        if job_id in self.log.forgotten:
            return None
        return self.engine.get_job(job_id)

    def live(self) -> list[JobView]:
        """Every job still readable, finished ones included (slow: unpacks those)."""
        return [j for j in map(self.known, self.submitted) if j is not None]

    def unfinished(self) -> list[JobRecord]:
        out = []
        for job_id in self.submitted:
            if job_id not in self.log.finished:
                job = self.engine.get_job(job_id)
                assert isinstance(job, JobRecord), f"{job_id} finished unannounced"
                out.append(job)
        return out

    def key_rate(self, queue: str) -> Rate | None:
        limits = self.engine.get_queue(queue).settings.key_limits
        return None if limits is None else limits.per_key_rate

    def new_key_segments(self, queue: str) -> None:
        for key in list(self.key_segments):
            if key[0] == queue:
                del self.key_segments[key]

    def pump(self) -> None:
        engine, now = self.engine, self.now
        engine.tick(now)
        before = {q: engine.get_queue(q).underway_count for q in QUEUES}
        grants_before = len(self.log.granted)
        out = engine.dispatch(now)
        leases = [lease for _, batch in out for lease in batch]
        grants = self.log.granted[grants_before:]
        granted_ids = {s.slot_id for s in grants}
        self.waiting_requests = [r for r in self.waiting_requests if r not in granted_ids]
        busy: dict[str, int] = defaultdict(int)
        for worker, batch in out:
            assert len(worker.leases) <= worker.max_in_flight
            assert all(lease.job.queue in worker.queues for lease in batch)
        for lease in leases:
            self.check_dispatch(lease)
            busy[lease.job.queue] += 1
        for slot in grants:
            busy[slot.queue] += 1
        for q in QUEUES:
            view = engine.get_queue(q)
            s = view.settings
            assert view.underway_count <= max(s.width, before[q])
            if busy[q]:
                assert view.underway_count <= s.width, f"{q} went past its width"
                assert not s.paused
                self.rate_segments[q][-1][1].extend([now] * busy[q])
        self.check_key_limits(leases)
        self.check_rates(busy, leases)
        due = engine.next_wakeup()
        assert due is None or due > now, "the pump would spin"
        for q in QUEUES:
            first, _ = engine.list_jobs(q, JobState.SCHEDULED, 1, "")  # the earliest due
            for job in first:
                assert job.not_before is not None
                assert job.not_before > now, "a due job is still scheduled after tick"

    def check_dispatch(self, lease: LeaseRecord) -> None:
        job, now = lease.job, self.now
        assert job.state is JobState.UNDERWAY
        assert job.lease is lease
        assert job.not_before is None or job.not_before <= now, "dispatched before due"
        assert job.expire_at is None or job.expire_at > now, "dispatched past expire_at"
        if job.ordering_key:
            chain = self.chains[(job.queue, job.ordering_key)]
            at = chain.index(job.id)
            for other in chain[:at]:
                view = self.known(other)
                assert view is None or view.state.finished, "ordering key order broken"
            del chain[:at]  # finished for good (RetryJob puts one at the back again)
            holders = [
                ls
                for ls in self.held()
                if ls.job.queue == job.queue and ls.job.ordering_key == job.ordering_key
            ]
            assert holders == [lease], "two jobs of one ordering key underway"
        self.key_segments[(job.queue, job.fairness_key)].append(now)

    def check_key_limits(self, leases: list[LeaseRecord]) -> None:
        in_flight: dict[tuple[str, str], int] = defaultdict(int)
        for ls in self.held():
            in_flight[(ls.job.queue, ls.job.fairness_key)] += 1
        for lease in leases:
            limits = self.engine.get_queue(lease.job.queue).settings.key_limits
            cap = 0 if limits is None else limits.max_in_flight_per_key
            if cap:
                key = (lease.job.queue, lease.job.fairness_key)
                assert in_flight[key] <= cap, f"key {key} past max_in_flight_per_key"

    def check_rates(self, busy: dict[str, int], leases: list[LeaseRecord]) -> None:
        """The window bound over the current constant-rate segment of every queue and key
        that dispatched in this pass."""
        for q in busy:
            rate, times = self.rate_segments[q][-1]
            if rate is not None:
                assert max_over_window(times, rate.per_second) <= rate.burst + EPSILON
        for key in {(lease.job.queue, lease.job.fairness_key) for lease in leases}:
            rate = self.key_rate(key[0])
            if rate is not None:
                times = self.key_segments[key]
                assert max_over_window(times, rate.per_second) <= rate.burst + EPSILON

    def pick(self, items: Sequence[str], i: int) -> str | None:
        return items[i % len(items)] if items else None

    # ---- setup --------------------------------------------------------------------

    @initialize(
        rates=st.tuples(*[st.integers(0, len(RATES) - 1)] * 2),
        limits=st.tuples(*[st.integers(0, len(KEY_LIMITS) - 1)] * 2),
        policies=st.tuples(*[st.integers(0, len(POLICIES) - 1)] * 2),
        width=st.integers(1, 8),
        credits=st.integers(1, 8),
        specs=st.lists(job_spec, max_size=8),
    )
    def start(
        self,
        rates: tuple[int, int],
        limits: tuple[int, int],
        policies: tuple[int, int],
        width: int,
        credits: int,
        specs: list[JobSpec],
    ) -> None:
        for i, q in enumerate(QUEUES):
            self.engine.update_queue(
                q,
                width=width,
                lease_seconds=LEASE_SECONDS,
                rate=RATES[rates[i]],
                key_limits=KEY_LIMITS[limits[i]],
                retry_policy=POLICIES[policies[i]],
                max_pending=12,
                create=True,
                now=self.now,
            )
            self.rate_segments[q] = [(RATES[rates[i]], [])]
        self.engine.connect("w0", list(QUEUES), credits, self.now)
        self.pump()
        if specs:
            self.submit(QUEUES[len(specs) % 2], specs)

    # ---- producers ------------------------------------------------------------------

    @rule(q=st.sampled_from(QUEUES), specs=st.lists(job_spec, min_size=1, max_size=4))
    def submit(self, q: str, specs: list[JobSpec]) -> None:
        now = self.now
        batch = [
            NewJob(
                q,
                ordering_key=okey,
                fairness_key=fkey,
                fairness_weight=weight,
                priority=prio,
                not_before=None if delay is None else now + delay,
                expire_at=None if ttl is None else now + ttl,
                idempotency_key=idem,
                retry_policy=POLICIES[policy],
            )
            for okey, fkey, weight, prio, delay, ttl, idem, policy in specs
        ]
        view = self.engine.get_queue(q)
        try:
            out = self.engine.submit_many(batch, now)
        except ResourceExhausted:
            after = self.engine.get_queue(q)
            assert (after.pending_count, after.scheduled_count) == (
                view.pending_count,
                view.scheduled_count,
            ), "a refused batch was partly admitted"
            self.pump()
            return
        for spec, (job, repeated) in zip(batch, out, strict=True):
            if repeated:
                assert job.id in self.submitted
                assert job.idempotency_key == spec.idempotency_key != ""
                continue
            assert job.id not in self.submitted
            self.submitted.append(job.id)
            if spec.ordering_key:
                self.chains[(q, spec.ordering_key)].append(job.id)
        self.pump()

    @rule(q=st.sampled_from(QUEUES), specs=st.lists(job_spec, min_size=1, max_size=4))
    def submit_more(self, q: str, specs: list[JobSpec]) -> None:
        self.submit(q, specs)

    @rule(
        kind=st.sampled_from(["connect", "connect", "disconnect", "credit", "heartbeat"]),
        q=st.sampled_from(QUEUES),
        i=st.integers(0, 100),
        credits=st.integers(0, 4),
    )
    def workers(self, kind: str, q: str, i: int, credits: int) -> None:
        engine = self.engine
        workers = engine.workers()
        if kind == "connect":
            names = [q] if i % 2 else list(QUEUES)
            engine.connect("", names, max(1, credits), self.now)
        elif not workers:
            pass
        elif kind == "disconnect":
            engine.disconnect(workers[i % len(workers)], self.now)
        elif kind == "credit":
            engine.set_credit(workers[i % len(workers)], credits)
        else:
            assert engine.heartbeat(workers[i % len(workers)], [], self.now) == []
        self.pump()

    # ---- workers answer -----------------------------------------------------------

    @rule(i=st.integers(0, 100), kind=st.sampled_from(["ok", "ok", "retryable", "fatal", "big"]))
    def complete(self, i: int, kind: str) -> None:
        held = sorted(self.held(), key=lambda ls: ls.dispatch_seq)
        if held:
            self.answer(held[i % len(held)], kind)
        self.pump()

    @rule(i=st.integers(0, 100))
    def complete_all(self, i: int) -> None:
        """Every worker answers everything it holds, mostly successes."""
        kinds = ("ok", "ok", "retryable", "ok", "fatal", "ok", "retryable")
        for n, lease in enumerate(sorted(self.held(), key=lambda ls: ls.dispatch_seq)):
            self.answer(lease, kinds[(i + n) % len(kinds)])
        self.pump()

    def answer(self, lease: LeaseRecord, kind: str) -> None:
        outcome: bytes | JobFailure = b"ok"
        if kind == "retryable":
            outcome = JobFailure("try again", True)
        elif kind == "fatal":
            outcome = JobFailure("no", False)
        elif kind == "big":
            outcome = b"x" * (LIMITS.max_payload_bytes + 1)
        job = lease.job
        assert self.engine.complete(lease.worker, job.id, lease.lease_id, outcome, self.now) is None
        assert job.lease is None
        if lease.cancelled:
            assert job.state is JobState.CANCELLED
        elif kind == "ok":
            assert job.state is JobState.SUCCEEDED
        elif kind == "retryable":
            assert job.state in (
                JobState.SCHEDULED,
                JobState.PENDING,
                JobState.DEAD,
                JobState.FAILED,
                JobState.EXPIRED,
            )
        else:
            assert job.state in (JobState.DEAD, JobState.FAILED)

    # ---- operators ------------------------------------------------------------------

    @rule(
        kind=st.sampled_from(["cancel", "retry", "retry", "purge", "reprioritize"]),
        q=st.sampled_from(QUEUES),
        i=st.integers(0, 1000),
        state=st.sampled_from([*JobState]),
    )
    def operate(self, kind: str, q: str, i: int, state: JobState) -> None:
        if kind == "cancel":
            self.cancel(i)
        elif kind == "retry":
            self.retry(i)
        elif kind == "purge":
            self.purge(q, state)
        else:
            waiting = [j for j in self.live() if j.state in (JobState.PENDING, JobState.SCHEDULED)]
            if waiting:
                self.engine.reprioritize(waiting[i % len(waiting)].id, i % 5 - 2)
        self.pump()

    def cancel(self, i: int) -> None:
        live = self.live()
        if not live:
            return
        job = live[i % len(live)]
        if job.state.finished:
            with pytest.raises(FailedPrecondition):
                self.engine.cancel(job.id, self.now)
        else:
            self.engine.cancel(job.id, self.now)
            assert self.engine.get_job(job.id).state is JobState.CANCELLED

    def retry(self, i: int) -> None:
        done = [j for j in self.live() if j.state.finished]
        if not done:
            return
        job = done[i % len(done)]
        if job.state not in (JobState.DEAD, JobState.FAILED):
            with pytest.raises(FailedPrecondition):
                self.engine.retry(job.id, self.now)
            return
        record = self.engine.retry(job.id, self.now)
        assert record.state in (JobState.PENDING, JobState.SCHEDULED)
        assert record.attempt == job.attempt
        self.log.finished.discard(job.id)
        if job.ordering_key:
            chain = self.chains[(job.queue, job.ordering_key)]
            if job.id in chain:
                chain.remove(job.id)
            chain.append(job.id)  # back of its key's line

    def purge(self, q: str, state: JobState) -> None:
        if state is not JobState.UNSPECIFIED and not state.finished:
            with pytest.raises(InvalidArgument):
                self.engine.purge(q, state)
            return
        self.engine.purge(q, state)

    @rule(
        q=st.sampled_from(QUEUES),
        kind=st.sampled_from(
            ["width", "width", "pause", "rate", "key_limits", "retry_policy", "max_pending"]
        ),
        i=st.integers(0, 5),
    )
    def configure(self, q: str, kind: str, i: int) -> None:
        update = self.engine.update_queue
        if kind == "width":
            update(q, width=i, now=self.now)
        elif kind == "pause":
            update(q, paused=i == 0, now=self.now)
        elif kind == "rate":
            rate = RATES[i % len(RATES)]
            update(q, rate=rate, now=self.now)
            self.rate_segments[q].append((rate, []))
        elif kind == "key_limits":
            update(q, key_limits=KEY_LIMITS[i % len(KEY_LIMITS)], now=self.now)
            self.new_key_segments(q)
        elif kind == "retry_policy":
            update(q, retry_policy=POLICIES[i % len(POLICIES)], now=self.now)
        else:
            update(q, max_pending=(0, 3, 12)[i % 3], now=self.now)
        self.pump()

    # ---- slots ----------------------------------------------------------------------

    @rule(
        kind=st.sampled_from(["request", "request", "cancel", "release", "renew"]),
        q=st.sampled_from(QUEUES),
        i=st.integers(0, 100),
        ttl=st.sampled_from([1.0, 3.0, 10.0]),
    )
    def slots(self, kind: str, q: str, i: int, ttl: float) -> None:
        engine = self.engine
        if kind == "request":
            request = engine.request_slot(q, "holder", ttl, i % 3, self.now)
            self.waiting_requests.append(request.request_id)
        elif kind == "cancel":
            request_id = self.pick(self.waiting_requests, i)
            if request_id is not None:
                engine.cancel_slot_request(request_id)
                self.waiting_requests.remove(request_id)
        elif kind == "release":
            slot_id = self.pick(list(self.log.slots), i)
            if slot_id is not None:
                engine.release_slot(slot_id)
                del self.log.slots[slot_id]
        else:
            slot_id = self.pick(list(self.log.slots), i)
            if slot_id is not None:
                slot = engine.renew_slot(slot_id, None, self.now)
                assert slot.deadline == self.now + slot.ttl
        self.pump()

    # ---- time -------------------------------------------------------------------------

    @rule(step=st.sampled_from(STEPS))
    def advance(self, step: float) -> None:
        self.now += step
        self.pump()

    @rule()
    def sleep(self) -> None:
        """The pump's timer fires: jump to the armed wake-up."""
        due = self.engine.next_wakeup()
        if due is not None:
            self.now = due
        self.pump()

    # ---- invariants -------------------------------------------------------------------

    @invariant()
    def unfinished_jobs_consistent(self) -> None:
        """Every unfinished job is there, counted once under its state; at most one lease
        per ordering key; its attempts history matches its attempt count."""
        jobs = self.unfinished()
        held = self.held()
        okeys = [(ls.job.queue, ls.job.ordering_key) for ls in held if ls.job.ordering_key]
        assert len(okeys) == len(set(okeys)), "two leases of one ordering key"
        for job in jobs:
            check_attempts(job)
            if job.state is JobState.UNDERWAY:
                assert job.lease is not None
                assert not job.lease.cancelled
            else:
                assert job.lease is None
        for q in QUEUES:
            view = self.engine.get_queue(q)
            mine = [j for j in jobs if j.queue == q]
            pending = sum(j.state is JobState.PENDING for j in mine)
            scheduled = sum(j.state is JobState.SCHEDULED for j in mine)
            assert (view.pending_count, view.scheduled_count) == (pending, scheduled)
            leases = sum(ls.job.queue == q for ls in held)
            assert view.underway_count == leases + view.slot_count
            assert view.slot_count == sum(s.queue == q for s in self.log.slots.values())

    def teardown(self) -> None:
        """No job lost: each submitted job is live, finished, or forgotten (evicted or
        purged) after it finished."""
        for job_id in self.submitted:
            if job_id in self.log.forgotten:
                with pytest.raises(NotFound):
                    self.engine.get_job(job_id)
                continue
            job = self.engine.get_job(job_id)
            assert job.id == job_id
            assert job.state.finished == (job_id in self.log.finished)
            check_attempts(job)


def check_attempts(job: JobView) -> None:
    n = len(job.attempts)
    if job.state is JobState.UNDERWAY:
        assert n == job.attempt - 1
    elif job.state is JobState.CANCELLED:
        assert n in (job.attempt - 1, job.attempt)
    else:
        assert n == job.attempt
    assert [a.number for a in job.attempts] == sorted(a.number for a in job.attempts)
    if job.state in (JobState.DEAD, JobState.FAILED):
        assert job.error is not None
        assert job.attempts[-1].error == job.error


PolicyMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestPolicyMachine = PolicyMachine.TestCase
