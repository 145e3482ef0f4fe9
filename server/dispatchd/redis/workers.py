"""A worker streaming to one replica, as the replica sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from dispatchd.redis.accounting import Held
from dispatchd.redis.records import StoredJob


class Outbox(Protocol):
    """Where a worker's messages go (its stream's session)."""

    def deliver(self, jobs: list[StoredJob]) -> None: ...
    def cancel(self, job_ids: list[str]) -> None: ...
    def drain(self, deadline: float) -> None: ...
    def close(self, reason: str) -> None: ...


@dataclass(eq=False, slots=True)
class RemoteWorker:
    """A worker streaming to this replica; ``held`` maps lease id -> its lease."""

    key: int
    worker_id: str
    queues: tuple[str, ...]
    max_in_flight: int
    connect_time: float
    outbox: Outbox
    held: dict[str, Held] = field(default_factory=dict)
    draining: bool = False

    @property
    def free_credits(self) -> int:
        return 0 if self.draining else max(0, self.max_in_flight - len(self.held))
