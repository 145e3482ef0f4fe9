"""What /metrics reads on the Redis backend: an engine-shaped view whose queues are the
last reaper pass's read of Redis and whose workers are this replica's streams, so the
embedded mode's collector renders the same families (per-queue gauges, workers, gRPC)."""

from __future__ import annotations

from typing import cast

from dispatchd.engine import Engine, EngineLimits, LeaseRecord, WorkerRecord
from dispatchd.engine.model import QueueView
from dispatchd.redis.replica import Replica


class RedisMirror(Engine):
    """Never dispatches; only list_queues(), workers() and draining are read."""

    def __init__(self, limits: EngineLimits, replica: Replica) -> None:
        super().__init__(limits)
        self._replica = replica
        self.views: list[QueueView] = []

    async def refresh(self) -> None:
        self.views = await self._replica.backend.list_queues()
        self.draining = self._replica.draining

    def list_queues(self) -> list[QueueView]:
        return list(self.views)

    def workers(self) -> list[WorkerRecord]:
        return [
            WorkerRecord(
                key=w.key,
                worker_id=w.worker_id,
                queues=w.queues,
                max_in_flight=w.max_in_flight,
                labels={},
                connect_time=w.connect_time,
                # Only the count of held leases is read (the credits gauge).
                leases=cast(dict[str, LeaseRecord], dict.fromkeys(w.held)),
            )
            for w in self._replica.workers.values()
        ]
