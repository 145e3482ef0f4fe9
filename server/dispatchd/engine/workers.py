"""The engine's picture of one connected worker stream: what it serves and what it holds."""

from __future__ import annotations

from dataclasses import dataclass, field

from dispatchd.engine.model import LeaseRecord


@dataclass(slots=True, eq=False)
class WorkerRecord:
    """One worker stream. ``key`` is unique per stream; ``worker_id`` is only a label,
    so a worker that reconnects before its old stream is noticed dead gets a new record."""

    key: int
    worker_id: str
    queues: tuple[str, ...]
    max_in_flight: int
    labels: dict[str, str]
    connect_time: float
    leases: dict[str, LeaseRecord] = field(default_factory=dict)
    draining: bool = False
    kind: str = "stream"
    """"stream" (a Work stream) or "http" (the server's own HTTP-push worker)."""

    @property
    def free_credits(self) -> int:
        if self.draining:
            return 0
        return self.max_in_flight - len(self.leases)
