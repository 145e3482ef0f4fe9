"""The worker side on Redis: claim jobs for a replica's workers, take their results,
extend and end leases, reap the leases of replicas that died, and keep the count of
connected workers per queue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from dispatchd.engine import JobFailure, JobState, JobThrottle, Outcome, Rejection, reasons
from dispatchd.engine import limits as lim
from dispatchd.engine.errors import EngineError, InvalidArgument
from dispatchd.engine.throttling import QUEUE_REASON, too_many_text
from dispatchd.redis import records
from dispatchd.redis.jobs import RedisJobs
from dispatchd.redis.records import StoredJob, Tally
from dispatchd.redis.store import ScriptCall

#: A replica's worker entries live this long unless refreshed (by its reaper loop).
WORKER_TTL = 30.0

#: A worker's answer for one lease: job id, lease id, outcome, and for an HTTP push
#: attempt its status code (0: none or not HTTP) and latency in seconds (None: not HTTP).
ResultItem = tuple[str, str, Outcome, int, float | None]


class Claimed(NamedTuple):
    jobs: list[StoredJob]
    wake: float | None
    """When a claim cut short by the rate or a delay could succeed again (None: only a
    change can help; the scripts publish every change)."""
    tally: Tally
    """Jobs that expired on the way (claim finishes no job otherwise)."""


class Answered(NamedTuple):
    rejected: list[Rejection]
    states: list[tuple[str, JobState]]
    """The state each accepted result left its job in (not for a job cancelled while
    underway: the cancel was its outcome)."""
    tally: Tally
    """Other jobs the results finished (the next job of an ordering key, expired)."""


class Reaped(NamedTuple):
    taken: int
    """Leases taken back (slots included)."""
    next_deadline: float | None
    """Seconds to the next lease deadline (None: no lease)."""
    tally: Tally
    next_due: float | None = None
    """Seconds until the queue next needs a reaper pass (any deadline it holds; None:
    none)."""


class Released(NamedTuple):
    ended: int
    tally: Tally


class RedisLeasing(RedisJobs):
    """Everything a replica asks of Redis."""

    async def claim(
        self, queue: str, lease_prefix: str, credits: Sequence[tuple[str, int]]
    ) -> Claimed:
        """Leases up to sum(credits) jobs, handed out to the workers in ``credits`` order."""
        reply = await self.run(
            "claim", [records.cfg_key(queue)], _claim_args(lease_prefix, credits)
        )
        return _claimed(reply)

    async def results(self, queue: str, items: Sequence[ResultItem]) -> Answered:
        """Takes the workers' answers for leases of ``queue``, fenced by lease id."""
        reply = await self.run("result", [records.cfg_key(queue)], self._result_args(items))
        return _answered(reply)

    async def results_then_claim(
        self,
        queue: str,
        groups: Sequence[Sequence[ResultItem]],
        lease_prefix: str,
        credits: Sequence[tuple[str, int]],
    ) -> tuple[list[Answered | EngineError], Claimed | EngineError]:
        """results() for each group, then claim(), in one round trip (as BullMQ's
        moveToFinished fetches the next job): the claim runs after the results, so it
        sees the width and the jobs (the next of an ordering key) they freed. Redis away
        raises; a script that failed answers its EngineError in its place."""
        keys = [records.cfg_key(queue)]
        calls: list[ScriptCall] = [("result", keys, self._result_args(g)) for g in groups]
        calls.append(("claim", keys, _claim_args(lease_prefix, credits)))
        replies = await self.run_pipelined(calls)
        answers = [r if isinstance(r, EngineError) else _answered(r) for r in replies[:-1]]
        last = replies[-1]
        return answers, last if isinstance(last, EngineError) else _claimed(last)

    def _result_args(self, items: Sequence[ResultItem]) -> list[Any]:
        args: list[Any] = []
        cap = self.limits.max_payload_bytes
        for job_id, lease_id, outcome, http_status, latency in items:
            if isinstance(outcome, bytes) and len(outcome) > cap:
                outcome = JobFailure(
                    f"result of {len(outcome)} bytes exceeds the {cap}-byte cap",
                    retryable=False,
                    code="ResultTooLarge",
                )
            if isinstance(outcome, JobThrottle):  # includes/throttle.lua
                shown = outcome.reason or QUEUE_REASON
                args += [job_id, lease_id, "thr", shown, int(outcome.scope)]
                args += [too_many_text(outcome), repr(self.rng.random())]
            elif isinstance(outcome, JobFailure):
                args += [job_id, lease_id, "err", outcome.message, int(outcome.retryable)]
                args += [outcome.code, repr(self.rng.random())]
            else:
                args += [job_id, lease_id, "ok", outcome, 0, "", 0]
            args += [http_status, "" if latency is None else repr(latency), self._floor(outcome)]
        return args

    def _floor(self, outcome: Outcome) -> str:
        """A failure's retry_after as result.lua takes it: made safe, or '' for none; a
        throttle's delay (made safe by throttling.throttle_of)."""
        if isinstance(outcome, JobThrottle):
            return repr(outcome.delay)
        if not isinstance(outcome, JobFailure) or outcome.retry_after is None:
            return ""
        cap = self.limits.max_retry_after_seconds
        return repr(reasons.retry_after_floor(outcome.retry_after, cap))

    async def heartbeat(self, queue: str, held: Sequence[tuple[str, str]]) -> list[str]:
        """Extends (job id, lease id) leases; returns the lease ids no longer held."""
        args = [x for pair in held for x in pair]
        reply = await self.run("heartbeat", [records.cfg_key(queue)], args)
        return [lid.decode() for lid in reply]

    async def release(self, queue: str, mode: str, held: Sequence[tuple[str, str]]) -> Released:
        """Ends leases without a result: 'lost' (the worker's stream ended) counts an
        attempt, 'drain' (the grace ran out) does not."""
        if mode not in ("lost", "drain"):
            raise ValueError(f"release mode {mode!r}: 'lost' or 'drain'")
        failure = reasons.WORKER_LOST if mode == "lost" else None
        args: list[Any] = [repr(self.rng.random()), *_lost_attempt(failure)]
        args += [x for pair in held for x in pair]
        ended, tally = await self.run("release", [records.cfg_key(queue)], args)
        return Released(int(ended), records.tally_of(tally))

    async def reap(self, queue: str) -> Reaped:
        """Takes back expired leases of ``queue`` (the attempt counted as LeaseExpired),
        moves due scheduled jobs to pending and expires waiting jobs past expire_at."""
        args = [repr(self.rng.random()), *_lost_attempt(reasons.LEASE_EXPIRED)]
        reaped, wait, tally, due = await self.run("reap", [records.cfg_key(queue)], args)
        seconds, due_in = float(wait), float(due)
        return Reaped(
            int(reaped),
            seconds if seconds >= 0 else None,
            records.tally_of(tally),
            due_in if due_in >= 0 else None,
        )

    async def register_workers(self, entries: Sequence[tuple[str, str]], now: float) -> None:
        """(queue, member) entries counted in worker_count until now + WORKER_TTL."""
        if not entries:
            return
        pipe = self.client.pipeline(transaction=False)
        for queue, member in entries:
            pipe.zadd(records.base(queue) + ":workers", {member: now + WORKER_TTL})
            pipe.zremrangebyscore(records.base(queue) + ":workers", "-inf", now)
        await self.send(pipe)

    async def unregister_workers(self, entries: Sequence[tuple[str, str]]) -> None:
        if not entries:
            return
        pipe = self.client.pipeline(transaction=False)
        for queue, member in entries:
            pipe.zrem(records.base(queue) + ":workers", member)
        await self.send(pipe)

    # ---- slots (AcquireSlot) ----------------------------------------------------------

    async def acquire(
        self, slot_id: str, priority: int, holder: str, ttl: float, give_up: float
    ) -> tuple[float | None, float | None]:
        """One try: (deadline, None) when granted, else (None, seconds until a token or
        None: wait for a change). The request waits in Redis for ``give_up`` seconds."""
        queue = _slot_queue(slot_id)
        reply = await self.run(
            "acquire", [records.cfg_key(queue)], [slot_id, priority, holder, repr(ttl), give_up]
        )
        if reply[0] == b"ok":
            return float(reply[1]), None
        hint = float(reply[1])
        return None, (hint if hint >= 0 else None)

    async def slot_op(self, op: str, slot_id: str, ttl: float | None = None) -> tuple[str, float]:
        """renew, release or abandon a slot; returns (holder, deadline)."""
        if not slot_id:
            raise InvalidArgument("slot_id is empty", field="slot_id")
        queue = records.queue_of(slot_id)
        if queue is None:
            raise lim.slot_not_held(slot_id)
        args = [op, slot_id, "" if ttl is None else repr(ttl)]
        reply = await self.run("slot", [records.cfg_key(queue)], args)
        if reply[0] == b"nf":
            raise lim.slot_not_held(slot_id)
        return reply[1].decode(), float(reply[2])


def _claim_args(lease_prefix: str, credits: Sequence[tuple[str, int]]) -> list[Any]:
    args: list[Any] = [sum(n for _, n in credits), lease_prefix]
    for worker_id, n in credits:
        args += [worker_id, n]
    return args


def _claimed(reply: Any) -> Claimed:
    wake = float(reply[0])
    jobs = [records.job_of(f[:-1], f[-1] or b"") for f in reply[2:]]
    return Claimed(jobs, wake if wake >= 0 else None, records.tally_of(reply[1]))


def _answered(reply: Any) -> Answered:
    rejected, states, tally = reply
    return Answered(
        [_rejection(*item) for item in rejected],
        [(j.decode(), JobState(int(st))) for j, st in states],
        records.tally_of(tally),
    )


def _rejection(job_id: bytes, lease_id: bytes, code: bytes) -> Rejection:
    return Rejection(job_id.decode(), lease_id.decode(), reasons.rejection(code.decode()))


def _lost_attempt(failure: JobFailure | None) -> list[str]:
    """The code and message release.lua and reap.lua record a lost attempt with."""
    return ["", ""] if failure is None else [failure.code, failure.message]


def _slot_queue(slot_id: str) -> str:
    queue = records.queue_of(slot_id)
    assert queue is not None, slot_id
    return queue
