"""Random operation sequences against the engine, with invariants checked after every
step and per-dispatch checks of width, credits, priority order and work conservation."""

from __future__ import annotations

import functools
import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

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
    JobFailure,
    JobRecord,
    JobState,
    JobView,
    LeaseRecord,
    NewJob,
    NotFound,
    Rejection,
    WorkerRecord,
)

QUEUES = ("q0", "q1", "q2")
FINISHED_AND_UNDERWAY = (
    JobState.UNDERWAY,
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.CANCELLED,
)
LIMITS = EngineLimits(max_payload_bytes=16, max_finished_jobs=8, finished_retention_seconds=50.0)


def pumped(rule_fn: Callable[..., None]) -> Callable[..., None]:
    """Lets a rule take ``pump``: when true, a checked dispatch follows the operation,
    as the service's pump would run one after every event."""

    @functools.wraps(rule_fn)
    def wrapper(machine: EngineMachine, *args: Any, pump: bool, **kwargs: Any) -> None:
        rule_fn(machine, *args, **kwargs)
        if pump:
            machine._dispatch_checked()

    return wrapper


class FinishLog(EngineObserver):
    def __init__(self) -> None:
        self.finished: set[str] = set()

    def job_finished(self, job: FinishedJob) -> None:
        assert job.state.finished
        assert job.id not in self.finished, "a job finished twice"
        self.finished.add(job.id)


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.log = FinishLog()
        self.engine = Engine(limits=LIMITS, observer=self.log, rng=random.Random(0))
        self.now = 0.0
        self.submitted: list[str] = []
        self.evicted: set[str] = set()
        self.history: list[LeaseRecord] = []
        self.gone: list[WorkerRecord] = []

    # ---- helpers ------------------------------------------------------------

    def live_jobs(self) -> list[JobView]:
        return [self.engine.get_job(i) for i in self.submitted if i not in self.evicted]

    def held(self) -> list[LeaseRecord]:
        leases = [lease for w in self.engine.workers() for lease in w.leases.values()]
        return sorted(leases, key=lambda lease: lease.dispatch_seq)

    def queue_exists(self, name: str) -> bool:
        return name in {v.name for v in self.engine.list_queues()}

    def picture(self) -> object:
        """Everything a rejected result must leave alone."""
        return (
            [
                (
                    j.id,
                    j.state,
                    j.attempt,
                    j.priority,
                    j.result,
                    j.error,
                    None if j.lease is None else (j.lease.lease_id, j.lease.deadline),
                )
                for j in self.live_jobs()
            ],
            self.engine.list_queues(),
            sorted((w.key, tuple(w.leases)) for w in self.engine.workers()),
            self.engine.underway_total(),
        )

    # ---- producers and operators --------------------------------------------

    @initialize(credits=st.integers(1, 4), k=st.integers(0, 4))
    def start(self, credits: int, k: int) -> None:
        """Most runs start with work and a worker for it, so dispatch has something to do."""
        self.engine.connect("first", list(QUEUES), credits, self.now)
        for name in QUEUES:
            for _ in range(k):
                self.submitted.append(self.engine.submit([NewJob(name)], self.now)[0].id)

    @rule(q=st.integers(0, 2), k=st.integers(1, 3), priority=st.integers(-2, 2), pump=st.booleans())
    @pumped
    def submit(self, q: int, k: int, priority: int) -> None:
        jobs = self.engine.submit([NewJob(QUEUES[q], priority=priority)] * k, self.now)
        assert all(j.state is JobState.PENDING and j.attempt == 0 for j in jobs)
        self.submitted.extend(j.id for j in jobs)

    @rule(q=st.integers(0, 2), width=st.integers(0, 5), pump=st.booleans())
    @pumped
    def set_width(self, q: int, width: int) -> None:
        view = self.engine.update_queue(QUEUES[q], width=width, create=True)
        assert view.settings.width == width

    @rule(q=st.integers(0, 2), seconds=st.sampled_from([1.0, 5.0, 30.0, 60.0]))
    def set_lease_seconds(self, q: int, seconds: float) -> None:
        view = self.engine.update_queue(QUEUES[q], lease_seconds=seconds, create=True)
        assert view.settings.lease_seconds == seconds

    @rule(q=st.integers(0, 2))
    def pause(self, q: int) -> None:
        if self.queue_exists(QUEUES[q]):
            assert self.engine.pause(QUEUES[q]).settings.paused
        else:
            with pytest.raises(NotFound):
                self.engine.pause(QUEUES[q])

    @rule(q=st.integers(0, 2), width=st.none() | st.integers(0, 5), pump=st.booleans())
    @pumped
    def resume(self, q: int, width: int | None) -> None:
        if self.queue_exists(QUEUES[q]):
            view = self.engine.resume(QUEUES[q], width)
            assert not view.settings.paused
            if width is not None:
                assert view.settings.width == width
        else:
            with pytest.raises(NotFound):
                self.engine.resume(QUEUES[q], width)

    @rule(i=st.integers(0, 10_000), priority=st.integers(-2, 2))
    def reprioritize(self, i: int, priority: int) -> None:
        live = self.live_jobs()
        if not live:
            return
        job = live[i % len(live)]
        if job.state.finished or job.state is JobState.UNDERWAY:
            with pytest.raises(FailedPrecondition):
                self.engine.reprioritize(job.id, priority)
        else:
            assert self.engine.reprioritize(job.id, priority).priority == priority

    @rule(i=st.integers(0, 10_000), pump=st.booleans())
    @pumped
    def cancel(self, i: int) -> None:
        live = self.live_jobs()
        if not live:
            return
        job = live[i % len(live)]
        if job.state.finished:
            state = job.state
            with pytest.raises(FailedPrecondition):
                self.engine.cancel(job.id, self.now)
            assert job.state is state
            return
        holder = job.lease.worker if job.lease is not None else None
        was_underway = job.state is JobState.UNDERWAY
        _, worker = self.engine.cancel(job.id, self.now)
        assert job.state is JobState.CANCELLED
        assert worker is holder
        assert (worker is not None) == was_underway
        if was_underway:
            assert job.lease is not None
            assert job.lease.cancelled  # slot held until the worker answers

    @rule()
    def evict(self) -> None:
        finished = {j.id for j in self.live_jobs() if j.state.finished}
        n = self.engine.evict_finished(self.now)
        gone = set()
        for job_id in finished:
            try:
                self.engine.get_job(job_id)
            except NotFound:
                gone.add(job_id)
        assert len(gone) == n
        self.evicted |= gone

    # ---- workers --------------------------------------------------------------

    @rule(
        queues=st.sets(st.integers(0, 2), min_size=1), credits=st.integers(1, 4), pump=st.booleans()
    )
    @pumped
    def connect(self, queues: set[int], credits: int) -> None:
        names = [QUEUES[q] for q in sorted(queues)]
        w = self.engine.connect("", names, credits, self.now)
        assert w.free_credits == credits

    @rule(i=st.integers(0, 10_000), pump=st.booleans())
    @pumped
    def disconnect(self, i: int) -> None:
        workers = self.engine.workers()
        if not workers:
            return
        w = workers[i % len(workers)]
        held = list(w.leases.values())
        assert self.engine.disconnect(w, self.now) == len(held)
        self.gone.append(w)
        assert w.leases == {}
        for lease in held:
            job = lease.job
            assert job.lease is None
            expected = JobState.CANCELLED if lease.cancelled else JobState.PENDING
            assert job.state is expected

    @rule(i=st.integers(0, 10_000), credits=st.integers(0, 4), pump=st.booleans())
    @pumped
    def set_credit(self, i: int, credits: int) -> None:
        workers = self.engine.workers()
        if workers:
            self.engine.set_credit(workers[i % len(workers)], credits)

    @rule(i=st.integers(0, 10_000))
    def heartbeat(self, i: int) -> None:
        workers = self.engine.workers()
        if not workers:
            return
        w = workers[i % len(workers)]
        assert self.engine.heartbeat(w, [], self.now) == []
        for lease in w.leases.values():
            seconds = self.engine.get_queue(lease.job.queue).settings.lease_seconds
            assert lease.deadline == self.now + seconds

    @rule(
        i=st.integers(0, 10_000),
        kind=st.sampled_from(["ok", "fail", "big", "stale", "other_worker"]),
        pump=st.booleans(),
    )
    @pumped
    def complete(self, i: int, kind: str) -> None:
        held = self.held()
        if kind == "stale":
            self._complete_stale(i)
            return
        if not held:
            return
        lease = held[i % len(held)]
        job = lease.job
        if kind == "other_worker":
            others = [w for w in self.engine.workers() if w is not lease.worker]
            if not others:
                return
            before = self.picture()
            rej = self.engine.complete(others[0], job.id, lease.lease_id, b"x", self.now)
            assert isinstance(rej, Rejection)
            assert self.picture() == before
            return
        outcome: bytes | JobFailure = b"done"
        if kind == "fail":
            outcome = JobFailure("boom")
        elif kind == "big":
            outcome = b"x" * (LIMITS.max_payload_bytes + 1)
        assert self.engine.complete(lease.worker, job.id, lease.lease_id, outcome, self.now) is None
        assert lease.lease_id not in lease.worker.leases
        assert job.lease is None
        if lease.cancelled:
            assert job.state is JobState.CANCELLED
        elif kind == "ok":
            assert job.state is JobState.SUCCEEDED
            assert job.result == b"done"
        else:
            assert job.state is JobState.FAILED
            assert job.error is not None
            if kind == "big":
                assert job.error.code == "ResultTooLarge"

    def _complete_stale(self, i: int) -> None:
        live_ids = {lease.lease_id for lease in self.held()}
        stale = [lease for lease in self.history if lease.lease_id not in live_ids]
        before = self.picture()
        if stale:
            lease = stale[i % len(stale)]
            rej = self.engine.complete(
                lease.worker, lease.job.id, lease.lease_id, b"late", self.now
            )
        else:
            live = self.live_jobs()
            job_id = live[i % len(live)].id if live else "no-such-job"
            workers = self.engine.workers()
            if not workers:
                return
            rej = self.engine.complete(workers[0], job_id, "no-such-lease", b"late", self.now)
        assert isinstance(rej, Rejection)
        assert self.picture() == before

    # ---- time and dispatch ---------------------------------------------------

    @rule(dt=st.sampled_from([0.0, 0.5, 5.0, 15.0, 29.9, 30.0, 45.0]), pump=st.booleans())
    @pumped
    def advance(self, dt: float) -> None:
        self.now += dt
        due = {lease.job.id for lease in self.held() if lease.deadline <= self.now}
        expired = self.engine.expire_leases(self.now)
        assert {j.id for j in expired} == due
        for lease in self.held():
            assert lease.deadline > self.now
        for job in expired:
            assert job.lease is None
            assert job.state in (JobState.PENDING, JobState.CANCELLED)

    @rule()
    def dispatch(self) -> None:
        self._dispatch_checked()

    def _dispatch_checked(self) -> None:
        engine = self.engine
        views = {v.name: v for v in engine.list_queues()}
        before_count = {name: v.underway_count for name, v in views.items()}
        attempts = {j.id: j.attempt for j in self.live_jobs()}
        out = engine.dispatch(self.now)
        connected = {w.key for w in engine.workers()}
        per_queue: dict[str, list[LeaseRecord]] = defaultdict(list)
        seen_workers: set[int] = set()
        for worker, batch in out:
            assert batch, "a worker was handed an empty batch"
            assert worker.key not in seen_workers, "a worker appears twice in one dispatch"
            seen_workers.add(worker.key)
            assert worker.key in connected, "a disconnected worker was given jobs"
            assert not worker.draining
            assert len(worker.leases) <= worker.max_in_flight
            for lease in batch:
                assert lease.worker is worker
                assert lease.job.queue in worker.queues
                assert lease.job.state is JobState.UNDERWAY
                assert lease.job.lease is lease
                assert lease.job.attempt == attempts[lease.job.id] + 1
                settings_ = views[lease.job.queue].settings
                assert lease.deadline == self.now + settings_.lease_seconds
                per_queue[lease.job.queue].append(lease)
                self.history.append(lease)
        for name in views:
            after = engine.get_queue(name)
            width = after.settings.width
            assert after.underway_count <= max(width, before_count[name])
            got = per_queue.get(name, [])
            if got:
                assert not after.settings.paused
                assert after.underway_count <= width
            # Priority order: leased in key order, each before everything still pending.
            keys = [lease.job.pending_key for lease in sorted(got, key=lambda x: x.dispatch_seq)]
            assert keys == sorted(keys)
            pending, _ = engine.list_jobs(name, JobState.PENDING, 1000, "")
            if keys and pending:
                first = pending[0]
                assert isinstance(first, JobRecord)
                assert keys[-1] < first.pending_key
            # Work-conserving: whatever could still run has no worker to run it on.
            if pending and not after.settings.paused and after.underway_count < width:
                for w in engine.workers():
                    if name in w.queues:
                        assert w.free_credits <= 0, f"{name} left work with a free worker"

    # ---- invariants ----------------------------------------------------------

    @invariant()
    def no_job_lost(self) -> None:
        for job_id in self.submitted:
            if job_id in self.evicted:
                assert job_id in self.log.finished  # only finished jobs are evicted
                with pytest.raises(NotFound):
                    self.engine.get_job(job_id)
            else:
                assert self.engine.get_job(job_id).id == job_id

    @invariant()
    def job_states_consistent(self) -> None:
        for job in self.live_jobs():
            assert job.state is not JobState.UNSPECIFIED
            assert job.state.finished == (job.id in self.log.finished)
            assert (job.finish_time is not None) == job.state.finished
            if job.state is JobState.UNDERWAY:
                assert job.lease is not None
                assert not job.lease.cancelled
            elif job.state is not JobState.CANCELLED:
                assert job.lease is None  # a cancelled job may still await its answer

    @invariant()
    def queue_counts_add_up(self) -> None:
        engine = self.engine
        live = self.live_jobs()
        by_queue: dict[str, list[JobView]] = defaultdict(list)
        for job in live:
            by_queue[job.queue].append(job)
        held_by_queue: dict[str, int] = defaultdict(int)
        for lease in self.held():
            held_by_queue[lease.job.queue] += 1
        listed_total = 0
        for view in engine.list_queues():
            jobs = by_queue.get(view.name, [])
            pending = sorted(
                (j for j in jobs if isinstance(j, JobRecord) and j.state is JobState.PENDING),
                key=lambda j: j.pending_key,
            )
            assert view.pending_count == len(pending)
            assert view.underway_count == held_by_queue.get(view.name, 0)
            subscribers = [w for w in engine.workers() if view.name in w.queues]
            assert view.worker_count == len(subscribers)
            # One walk lists pending (dispatch order), then underway, then finished.
            listed, token = engine.list_jobs(view.name, JobState.UNSPECIFIED, 1000, "")
            assert token == ""
            listed_total += len(listed)
            states = [j.state for j in listed]
            assert states == sorted(states)
            assert [j.id for j in listed[: len(pending)]] == [j.id for j in pending]
            for state in FINISHED_AND_UNDERWAY:
                got = sorted(j.id for j in listed if j.state is state)
                assert got == sorted(j.id for j in jobs if j.state is state)
        # Every live job is listed exactly once, under its own state.
        assert listed_total == len(live)

    @invariant()
    def leases_consistent(self) -> None:
        engine = self.engine
        held = self.held()
        assert engine.underway_total() == len(held)
        assert len({lease.lease_id for lease in held}) == len(held)
        for lease in held:
            assert lease.job.lease is lease
            assert lease.worker.leases[lease.lease_id] is lease
            assert lease.cancelled == (lease.job.state is JobState.CANCELLED)
            assert lease.job.worker_id == lease.worker.worker_id
        for w in self.gone:
            assert w.leases == {}
        if held:
            deadline = engine.next_lease_deadline()
            assert deadline is not None
            assert deadline <= min(lease.deadline for lease in held)  # never late


EngineMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineMachine = EngineMachine.TestCase
