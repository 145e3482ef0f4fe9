"""Workflows on Redis (docs/workflows.md): progress reports (lua/progress.lua) and batches
(lua/batch.lua); dependencies are decided in submit.lua and at every finish
(lua/includes/flows.lua). The checks and the words are the embedded engine's
(engine/flows.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dispatchd.engine import NewJob
from dispatchd.engine import limits as lim
from dispatchd.engine.flows import (
    PROGRESS_INTERVAL,
    BatchView,
    batch_exists,
    batch_not_found,
    check_batch_id,
    check_callback,
    check_description,
)
from dispatchd.redis import records
from dispatchd.redis.events import RedisEvents

Report = tuple[str, str, int | None, str]
"""(job id, lease id, percent or None, message)."""


def _view(queue: str, batch_id: str, v: Sequence[Any]) -> BatchView:
    """Decodes batch.lua's view."""
    s = [x.decode() if isinstance(x, bytes) else x for x in v[:13]]
    on_success = records.new_job_of_args(v[13]) if v[13] else None
    on_complete = records.new_job_of_args(v[14]) if v[14] else None
    fired = bool(s[10])
    return BatchView(
        queue=queue,
        batch_id=batch_id,
        description=s[0],
        closed=s[2] == "1",
        create_time=float(s[1] or 0),
        complete_time=float(s[10]) if fired else None,
        on_success=on_success,
        on_complete=on_complete,
        on_success_job_id=s[11],
        on_complete_job_id=s[12],
        total=int(s[3]),
        active=int(s[4]),
        succeeded=int(s[5]),
        failed=int(s[6]),
        cancelled=int(s[7]),
        expired=int(s[8]),
        dead=int(s[9]),
    )


class RedisFlows(RedisEvents):
    async def progress(self, queue: str, reports: Sequence[Report]) -> int:
        args: list[Any] = [repr(PROGRESS_INTERVAL)]
        for job_id, lease_id, percent, message in reports:
            args += [job_id, lease_id, "" if percent is None else percent, message]
        return int(await self.run("progress", [records.cfg_key(queue)], args))

    async def _batch_op(self, op: str, queue: str, batch_id: str, *args: Any) -> Any:
        lim.check_queue_name(queue, "queue")
        check_batch_id(batch_id)
        reply = await self.run("batch", [records.cfg_key(queue)], [op, batch_id, *args])
        if reply[0] == b"nf":
            raise batch_not_found(queue, batch_id)
        if reply[0] == b"exists":
            raise batch_exists(queue, batch_id)
        return reply

    async def create_batch(
        self,
        queue: str,
        batch_id: str,
        description: str,
        on_success: NewJob | None,
        on_complete: NewJob | None,
        now: float,
        new_id: Any,
    ) -> BatchView:
        lim.check_queue_name(queue, "queue")
        check_batch_id(batch_id)
        check_description(description)
        callbacks: list[Any] = []
        for what, spec in (("on_success", on_success), ("on_complete", on_complete)):
            if spec is None:
                callbacks.append(0)
                continue
            check_callback(spec, queue, what)
            lim.check_batch([spec], self.limits)
            values = records.submit_args(spec, records.job_id(new_id(now), queue))
            callbacks += [len(values), *values]
        await self.check_new_queues({queue})
        defaults = [self.limits.default_width, self.limits.default_lease_seconds]
        reply = await self._batch_op("create", queue, batch_id, description, *defaults, *callbacks)
        await self.note_queues({queue}, None)
        return _view(queue, batch_id, reply[1])

    async def get_batch(self, queue: str, batch_id: str) -> BatchView:
        return _view(queue, batch_id, (await self._batch_op("get", queue, batch_id))[1])

    async def close_batch(self, queue: str, batch_id: str) -> BatchView:
        return _view(queue, batch_id, (await self._batch_op("close", queue, batch_id))[1])

    async def cancel_batch(self, queue: str, batch_id: str) -> tuple[BatchView, list[str]]:
        reply = await self._batch_op("cancel", queue, batch_id)
        return _view(queue, batch_id, reply[1]), [i.decode() for i in reply[2]]
