"""The backend interface: the one seam between the service layer and the two engines.

River calls this a driver and Oban an engine. Everything above it is written once — the
gRPC servicer, the Work stream, the slot RPCs, the dashboard, the HTTP pusher, /metrics —
and everything below it makes the dispatch decisions: the embedded backend with the pure
engine (dispatchd.embedded), the Redis backend with one atomic Lua script per decision
(dispatchd.redis). tests/conformance drives this interface directly and every backend
must pass it.

Both backends speak in the engine's record types, so one set of converters builds every
message: jobs are :data:`JobView` (a live JobRecord, or a FinishedJob), queues
:class:`QueueView`, connected workers :class:`WorkerRecord`, deliveries
:class:`LeaseRecord`, slots :class:`SlotRecord`. Every method either succeeds or raises
an :class:`~dispatchd.engine.EngineError` (which the service maps to a gRPC status)
before changing anything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from dispatchd.engine import (
    EngineLimits,
    EngineObserver,
    FinishedJob,
    JobState,
    JobView,
    LeaseRecord,
    NewJob,
    Outcome,
    QueueFigures,
    QueueView,
    Rejection,
    SlotRecord,
    WorkerRecord,
)
from dispatchd.engine.flows import BatchView
from dispatchd.engine.schedules import Firing, Overlap, ScheduleRecord
from dispatchd.observability.events import Event, EventFilter, Missed

if TYPE_CHECKING:
    from dispatchd.observability.metrics import StorageStats

__all__ = ["QueueFigures"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do beyond the interface every backend implements."""

    name: str
    """"embedded" or "redis", for logs and /metrics."""
    snapshot: bool
    """A drain leaves the unfinished jobs in <data-dir>/snapshot.pb for the next start."""
    journal: bool
    """Every acknowledged change is in a local crash-safe journal."""
    shared: bool
    """Several server processes (replicas) share the queues: a drain ends this process's
    part only, and the queues live on for the others."""


class WorkerSpec(NamedTuple):
    """A worker's hello: who it is, what it serves, how many jobs it can hold."""

    worker_id: str
    """A label; empty: the backend makes one."""
    queues: Sequence[str]
    max_in_flight: int
    labels: dict[str, str] = {}  # never mutated: the backend copies it
    kind: str = "stream"
    """"stream" for a Work stream; "http" for the server's own HTTP-push worker."""


class WorkResult(NamedTuple):
    """A worker's answer for one job it holds."""

    job_id: str
    lease_id: str
    outcome: Outcome
    http_status: int = 0
    """HTTP push only: the endpoint's status code (0: no response)."""
    latency: float | None = None
    """HTTP push only: seconds the call took."""


class ProgressReport(NamedTuple):
    """A worker's progress report on a job it holds (engine/flows.py)."""

    job_id: str
    lease_id: str
    percent: int | None
    message: str


class WorkerInfo(NamedTuple):
    """A connected worker as operators see it, on this server or on another replica."""

    worker_id: str
    queues: tuple[str, ...]
    max_in_flight: int
    held: int
    held_jobs: tuple[str, ...]
    """Ids of (at most the first ten) jobs it holds."""
    labels: dict[str, str]
    connect_time: float
    kind: str
    replica: str
    """Which server process holds its stream ("" on the embedded backend)."""
    draining: bool = False


class JobCounts(NamedTuple):
    """Jobs one server process's workers ran since it started (cumulative, never going
    down): the overview chart's dispatched / succeeded / failed per second are the
    differences between two readings."""

    dispatched: int = 0
    """Attempts handed to a worker (retries too)."""
    succeeded: int = 0
    failed: int = 0
    """Jobs that failed for good (FAILED, or DEAD: retries exhausted)."""


class ReplicaCounts(NamedTuple):
    """One live server process's JobCounts, as it last told them."""

    replica: str
    """Its id ("" on the embedded backend)."""
    counts: JobCounts


_SUCCEEDED = int(JobState.SUCCEEDED)
_FAILED_FOR_GOOD = frozenset({int(JobState.FAILED), int(JobState.DEAD)})


class JobCounter(EngineObserver):
    """Counts what this process's workers ran (JobCounts): three additions per job, in
    the observer chain of the backend that keeps it."""

    __slots__ = ("dispatched", "failed", "succeeded")

    def __init__(self) -> None:
        self.dispatched = 0
        self.succeeded = 0
        self.failed = 0

    def job_dispatched(self, lease: LeaseRecord) -> None:
        self.dispatched += 1

    def job_finished(self, job: FinishedJob) -> None:
        code = job.state_code
        if code == _SUCCEEDED:
            self.succeeded += 1
        elif code in _FAILED_FOR_GOOD:
            self.failed += 1

    def counts(self) -> JobCounts:
        return JobCounts(self.dispatched, self.succeeded, self.failed)


class DrainReport(NamedTuple):
    pending: int
    """Jobs waiting when the drain began (this replica's view on a shared backend)."""
    underway: int
    """Jobs this server's workers held when the drain began."""


class Outbox(Protocol):
    """Where the messages of one connected worker go: a Work stream's session, or the
    HTTP pusher for the server's own worker. Called on the event loop; never blocks."""

    def deliver(self, leases: Sequence[LeaseRecord]) -> None:
        """Jobs leased to this worker, in dispatch order: one message."""

    def cancel(self, job_ids: list[str]) -> None:
        """Jobs it holds were cancelled; it should stop them and still answer."""

    def drain(self, deadline: float) -> None:
        """The server drains: finish what you hold by ``deadline``, expect no more."""

    def settings(self, heartbeat_interval: float) -> None:
        """A queue it serves got another lease: heartbeat at this interval from now on."""

    def close(self, reason: str) -> None:
        """The server ends this worker (after a drain)."""


QueueListener = Callable[[str], None]
"""Told the name of a queue whose settings changed, on this server or another replica."""

HealthListener = Callable[[str | None], None]
"""Told the backend's trouble when it changes: why it cannot serve, or None once it can."""


class HealthReport:
    """Whether a backend can take changes now, for readiness: the embedded backend's
    journal cannot commit (a full disk), or Redis cannot be reached. The runtime listens
    and turns health NOT_SERVING while there is trouble, SERVING again once it is gone;
    the calls themselves answer UNAVAILABLE with the same cause meanwhile."""

    def __init__(self) -> None:
        self.trouble: str | None = None
        """Why the backend cannot serve now, in words a person can act on; None: it can."""
        self._listeners: list[HealthListener] = []

    def listen(self, listener: HealthListener) -> None:
        self._listeners.append(listener)

    def set(self, trouble: str | None) -> None:
        """Reports the current trouble (None: none); listeners hear of changes only."""
        if (trouble is None) == (self.trouble is None):
            self.trouble = trouble  # still in trouble: keep the latest words
            return
        self.trouble = trouble
        for listener in self._listeners:
            listener(trouble)


class Backend(Protocol):
    """Jobs, queues, workers, slots, drain. Async because the Redis backend's every call
    is a round trip; the embedded backend's calls complete without suspending."""

    capabilities: Capabilities
    limits: EngineLimits
    health: HealthReport
    """Whether the backend can take changes now (readiness); see HealthReport."""

    @property
    def draining(self) -> bool:
        """True once begin_drain() ran: state-changing calls are refused from then on."""

    @property
    def storage_stats(self) -> StorageStats:
        """What the backend measures of its own storage for /metrics: journal commits and
        snapshots (embedded), script calls (Redis)."""

    @property
    def reports_queues(self) -> bool:
        """Whether this process's /metrics exports the per-queue gauges. On a shared
        backend one replica at a time does, so a sum over replicas (as for every counter)
        is the fleet's figure; embedded: always."""

    async def queue_figures(self) -> list[QueueFigures]:
        """Every queue's gauges for /metrics, sorted by name: its view, when its head job
        could first run, the jobs it holds finished, why its pending jobs wait. The same
        figures on every backend, read at one instant per queue (fleet-wide on Redis)."""

    # ---- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Opens storage (restores the journal or snapshot, or checks Redis is there) and
        starts the backend's own timers. Raises StartError when it cannot."""

    async def begin_drain(self, grace: float) -> DrainReport:
        """Stops intake and dispatch and tells every worker (Outbox.drain) to finish what
        it holds within ``grace`` seconds. Returns the counts as the drain began."""

    async def finish_drain(self) -> None:
        """Waits (up to the grace) for underway jobs, takes back what is still held
        (pending again, no attempt counted), keeps what is unfinished (the snapshot, or
        Redis) and ends every worker (Outbox.close)."""

    async def close(self) -> None:
        """Stops at once (tests, failed start-up): workers' leases are handed back where
        the backend can, storage is closed. No snapshot."""

    async def settle(self) -> None:
        """Does every piece of time-driven work due by the backend's clock (lease expiry,
        delayed jobs, expiry, rate tokens) and dispatches, returning once what it
        dispatched is in the workers' outboxes. The backend's timers do this on their
        own; tests with a controlled clock call it after moving the clock."""

    def on_queue_changed(self, listener: QueueListener) -> None:
        """Calls ``listener(name)`` after a queue is created or its settings change."""

    # ---- jobs -----------------------------------------------------------------------

    async def submit(self, specs: Sequence[NewJob]) -> list[tuple[JobView, bool]]:
        """Admits all of ``specs`` or none; each result says whether it is an earlier job
        returned for a repeated idempotency key. Returns once the jobs are durable."""

    async def get_job(self, job_id: str) -> JobView: ...

    async def wait_job(self, job_id: str, within: float) -> JobView:
        """The job once it is finished, or as it is when ``within`` seconds passed."""

    async def cancel_job(self, job_id: str) -> JobView:
        """Cancels a waiting job, or an underway one (its worker is told)."""

    async def reprioritize_job(self, job_id: str, priority: int) -> JobView: ...

    async def retry_job(self, job_id: str) -> JobView:
        """Puts a DEAD or FAILED job back to waiting, with a fresh retry budget."""

    async def purge_jobs(self, queue: str, state: JobState) -> int: ...

    async def list_jobs(
        self, queue: str, state: JobState, page_size: int, page_token: str
    ) -> tuple[list[JobView], str]:
        """One page in dispatch order (pending, scheduled, underway) or finish order,
        resumable by an opaque token: a job that stays in its state is listed once."""

    # ---- queues ---------------------------------------------------------------------

    async def get_queue(self, name: str) -> QueueView: ...

    async def list_queues(self) -> list[QueueView]:
        """Every queue, sorted by name."""

    async def update_queue(
        self,
        name: str,
        *,
        width: int | None = None,
        paused: bool | None = None,
        lease_seconds: float | None = None,
        create: bool = False,
        **policies: object,
    ) -> QueueView:
        """Sets what is not None (``policies``: rate, retry_policy, key_limits — None
        clears each —, max_pending, dedup_window, http_target), live."""

    async def delete_queue(self, name: str) -> int:
        """Forgets an empty queue with its settings and finished jobs; returns how many
        finished jobs went. Refuses (QUEUE_NOT_EMPTY) a queue with waiting or underway
        jobs, held or requested slots, or connected workers."""

    # ---- workers --------------------------------------------------------------------

    async def connect(self, spec: WorkerSpec, outbox: Outbox) -> WorkerRecord:
        """Registers a worker; from now on its outbox receives deliveries."""

    async def results(self, worker: WorkerRecord, results: Sequence[WorkResult]) -> list[Rejection]:
        """Takes a worker's answers; returns the ones that changed nothing (fencing)."""

    async def heartbeat(self, worker: WorkerRecord, lease_ids: Sequence[str]) -> list[str]:
        """Extends the named leases (every lease it holds when none is named); returns
        the lease ids it does not hold."""

    async def set_credit(self, worker: WorkerRecord, max_in_flight: int) -> None: ...

    async def disconnect(self, worker: WorkerRecord) -> int:
        """The worker is gone: what it held waits again, an attempt counted. Returns how
        many jobs it held. Safe to call twice."""

    def heartbeat_interval(self, worker: WorkerRecord) -> float:
        """How often ``worker`` must heartbeat (a third of its shortest lease)."""

    def local_workers(self) -> list[WorkerRecord]:
        """The workers connected to this server process."""

    async def list_workers(self) -> list[WorkerInfo]:
        """Every connected worker: on a shared backend, those of every replica."""

    async def fleet_counts(self) -> list[ReplicaCounts]:
        """What the workers of every live server process ran so far (JobCounts): this
        process's own now and, on a shared backend, each other live replica's as it last
        published them (about once a second; a replica that stopped drops out). Each
        entry only ever grows while its replica lives, so a reader that differences two
        readings per replica never sees a negative rate. The embedded backend counts from
        the first call on (the dashboard makes it as it starts)."""

    # ---- slots ----------------------------------------------------------------------

    async def acquire_slot(self, queue: str, holder: str, ttl: float, priority: int) -> SlotRecord:
        """Waits until width and rate allow, then holds one slot of the queue's width.
        Cancelling the call gives the request (and a grant that raced in) back."""

    async def renew_slot(self, slot_id: str, ttl: float | None) -> SlotRecord: ...

    async def release_slot(self, slot_id: str) -> None: ...

    # ---- schedules (docs/schedules.md) ----------------------------------------------

    async def create_schedule(self, schedule: ScheduleRecord) -> ScheduleRecord:
        """Adds a schedule (its definition; its state starts now). AlreadyExists when the
        id is taken. Returns once it is durable."""

    async def get_schedule(self, schedule_id: str) -> ScheduleRecord: ...

    async def list_schedules(
        self, page_size: int, page_token: str
    ) -> tuple[list[ScheduleRecord], str]:
        """One page, sorted by id."""

    async def update_schedule(self, schedule_id: str, changes: dict[str, object]) -> ScheduleRecord:
        """Sets the definition fields named (spec, template, policy, paused, note,
        owner); a new spec, or a resume, goes on from now."""

    async def delete_schedule(self, schedule_id: str) -> None: ...

    async def trigger_schedule(self, schedule_id: str, overlap: Overlap | None) -> Firing:
        """Fires once now, outside the spec."""

    async def backfill_schedule(
        self, schedule_id: str, start: float, end: float, overlap: Overlap | None
    ) -> list[Firing]:
        """Fires the spec's ticks of start..end now, oldest first."""

    # ---- workflows (docs/workflows.md, engine/flows.py) -----------------------------

    async def report_progress(self, worker: WorkerRecord, reports: Sequence[ProgressReport]) -> int:
        """Stores the reports on leases the worker holds, at most one per job per
        PROGRESS_INTERVAL (the rest are dropped and counted). Returns how many it stored."""

    async def create_batch(
        self,
        queue: str,
        batch_id: str,
        description: str,
        on_success: NewJob | None,
        on_complete: NewJob | None,
    ) -> BatchView:
        """Opens a batch of ``queue``; AlreadyExists when it has one of that id."""

    async def get_batch(self, queue: str, batch_id: str) -> BatchView: ...

    async def wait_batch(self, queue: str, batch_id: str, within: float) -> BatchView:
        """The batch once none of its jobs is active, or as it is after ``within`` s."""

    async def close_batch(self, queue: str, batch_id: str) -> BatchView:
        """No more jobs join; the callbacks are submitted once every job is final."""

    async def cancel_batch(self, queue: str, batch_id: str) -> tuple[BatchView, int]:
        """Closes the batch and cancels its unfinished jobs; returns how many."""

    async def watch_events(self, flt: EventFilter, token: str) -> AsyncIterator[Event | Missed]:
        """Starts a watch: lifecycle events after ``token`` (from this call on when empty)
        that ``flt`` matches, as they happen, with a Missed where some cannot be delivered;
        ends when the backend stops. Raises InvalidArgument for a token it did not make."""


def heartbeat_interval(lease_seconds: Sequence[float]) -> float:
    """A third of the shortest lease, between 0.1 and 10 s: two heartbeats may be lost
    before a lease ends."""
    return max(0.1, min(10.0, min(lease_seconds) / 3))
