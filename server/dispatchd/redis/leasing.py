"""The worker side on Redis: claim jobs for a replica's workers, take their results,
extend and end leases, reap the leases of replicas that died, and keep the count of
connected workers per queue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dispatchd.engine import JobFailure, JobState, Outcome, Rejection
from dispatchd.engine import limits as lim
from dispatchd.engine.errors import InvalidArgument
from dispatchd.redis import records
from dispatchd.redis.jobs import RedisJobs
from dispatchd.redis.records import StoredJob

#: A replica's worker entries live this long unless refreshed (by its reaper loop).
WORKER_TTL = 30.0


class RedisLeasing(RedisJobs):
    """Everything a replica asks of Redis."""

    async def claim(
        self, queue: str, lease_prefix: str, credits: Sequence[tuple[str, int]]
    ) -> tuple[float | None, list[StoredJob]]:
        """Leases up to sum(credits) jobs, handed out to the workers in ``credits`` order.
        Returns the jobs and, when the claim was cut short by the rate or a delay, how
        many seconds until another claim could succeed."""
        total = sum(n for _, n in credits)
        args: list[Any] = [total, lease_prefix]
        for worker_id, n in credits:
            args += [worker_id, n]
        reply = await self.run("claim", [records.cfg_key(queue)], args)
        wake = float(reply[0])
        jobs = [records.job_of(f[:-1], f[-1] or b"") for f in reply[1:]]
        return (wake if wake >= 0 else None), jobs

    async def results(
        self, queue: str, items: Sequence[tuple[str, str, Outcome]]
    ) -> tuple[list[Rejection], list[tuple[str, JobState]]]:
        """Returns the rejected results, and the state each accepted one left its job in."""
        args: list[Any] = []
        cap = self.limits.max_payload_bytes
        for job_id, lease_id, outcome in items:
            if isinstance(outcome, bytes) and len(outcome) > cap:
                outcome = JobFailure(
                    f"result of {len(outcome)} bytes exceeds the {cap}-byte cap",
                    retryable=False,
                    code="ResultTooLarge",
                )
            if isinstance(outcome, JobFailure):
                args += [job_id, lease_id, "err", outcome.message, int(outcome.retryable)]
                args += [outcome.code, repr(self.rng.random())]
            else:
                args += [job_id, lease_id, "ok", outcome, 0, "", 0]
        rejected, states = await self.run("result", [records.cfg_key(queue)], args)
        return (
            [Rejection(j.decode(), lid.decode(), why.decode()) for j, lid, why in rejected],
            [(j.decode(), JobState(int(st))) for j, st in states],
        )

    async def heartbeat(self, queue: str, held: Sequence[tuple[str, str]]) -> list[str]:
        """Extends (job id, lease id) leases; returns the lease ids no longer held."""
        args = [x for pair in held for x in pair]
        reply = await self.run("heartbeat", [records.cfg_key(queue)], args)
        return [lid.decode() for lid in reply]

    async def release(self, queue: str, mode: str, held: Sequence[tuple[str, str]]) -> int:
        """Ends leases without a result: 'lost' counts an attempt, 'drain' does not."""
        args: list[Any] = [mode, repr(self.rng.random())]
        args += [x for pair in held for x in pair]
        return int(await self.run("release", [records.cfg_key(queue)], args))

    async def reap(self, queue: str) -> tuple[int, float | None]:
        """Takes back expired leases of ``queue``; returns how many, and the seconds to
        the next lease deadline (None: no lease)."""
        reaped, wait = await self.run("reap", [records.cfg_key(queue)], [repr(self.rng.random())])
        seconds = float(wait)
        return int(reaped), (seconds if seconds >= 0 else None)

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


def _slot_queue(slot_id: str) -> str:
    queue = records.queue_of(slot_id)
    assert queue is not None, slot_id
    return queue
