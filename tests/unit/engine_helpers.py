"""Types of the engine fixtures in conftest.py and the small steps engine tests share."""

from __future__ import annotations

from collections.abc import Callable

from dispatchd.engine import Engine, JobRecord, JobState, LeaseRecord, WorkerRecord

#: conftest.submit: submits ``n`` jobs to a queue, returns their records.
Submit = Callable[..., list[JobRecord]]
#: conftest.add: submits one job with options, returns its record.
Add = Callable[..., JobRecord]
#: conftest.connect: connects a worker.
Connect = Callable[..., WorkerRecord]
#: conftest.dispatch / conftest.pump: one dispatch pass at ``now``, the leases it made.
Dispatch = Callable[[float], list[LeaseRecord]]
Pump = Dispatch


def ok(engine: Engine, lease: LeaseRecord, now: float, result: bytes = b"ok") -> None:
    """The lease's worker reports success; the engine takes it."""
    assert engine.complete(lease.worker, lease.job.id, lease.lease_id, result, now) is None


def state(engine: Engine, job: JobRecord) -> JobState:
    return engine.get_job(job.id).state


def let_go(engine: Engine, worker: WorkerRecord, now: float) -> None:
    """The worker whose lease expired shows life and lets go of the job it lost: a
    heartbeat naming just the leases it still holds. Until then the server keeps the lost
    lease's credit taken and sends that worker nothing (it may still be running the job)."""
    engine.heartbeat(worker, [*worker.leases] or ["none-held"], now)
