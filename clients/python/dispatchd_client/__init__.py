"""Python client for dispatchd, the gRPC job dispatch service.

* :class:`Client` / :class:`AsyncClient` submit, inspect and manage jobs and queues;
* :class:`Worker` runs handlers for the jobs of one or more queues;
* failed calls raise :class:`DispatchdError` subclasses named after their gRPC status.

Importing this package has no side effects: nothing connects, reads the environment or starts
threads until a client makes a call or a worker runs.
"""

from dispatchd_client._channel import TLS
from dispatchd_client.aio import AsyncClient
from dispatchd_client.batches import AsyncBatch, SyncBatch
from dispatchd_client.errors import (
    AlreadyExists,
    DeadlineExceeded,
    DispatchdError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermanentError,
    PermissionDenied,
    ResourceExhausted,
    RetryableError,
    Throttled,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
)
from dispatchd_client.events import EventKind, EventsMissed, JobEvent
from dispatchd_client.policies import (
    AdaptiveRate,
    Attempt,
    HttpTarget,
    JobOptions,
    KeyLimits,
    QueueChanges,
    Rate,
    RateWindow,
    RetryPolicy,
    Slot,
)
from dispatchd_client.schedules import (
    CatchupMode,
    FiringCause,
    FiringOutcome,
    Interval,
    Overlap,
    Schedule,
    ScheduleFiring,
    ScheduleSpec,
)
from dispatchd_client.sync import Client
from dispatchd_client.types import (
    Batch,
    BatchCounts,
    Job,
    JobError,
    JobProgress,
    JobSpecLike,
    JobState,
    NewJob,
    Queue,
    ReceivedJob,
    Throttle,
)
from dispatchd_client.worker import Worker

__all__ = [
    "TLS",
    "AdaptiveRate",
    "AlreadyExists",
    "AsyncBatch",
    "AsyncClient",
    "Attempt",
    "Batch",
    "BatchCounts",
    "CatchupMode",
    "Client",
    "DeadlineExceeded",
    "DispatchdError",
    "EventKind",
    "EventsMissed",
    "FailedPrecondition",
    "FiringCause",
    "FiringOutcome",
    "HttpTarget",
    "Internal",
    "Interval",
    "InvalidArgument",
    "Job",
    "JobError",
    "JobEvent",
    "JobOptions",
    "JobProgress",
    "JobSpecLike",
    "JobState",
    "KeyLimits",
    "NewJob",
    "NotFound",
    "Overlap",
    "PermanentError",
    "PermissionDenied",
    "Queue",
    "QueueChanges",
    "Rate",
    "RateWindow",
    "ReceivedJob",
    "ResourceExhausted",
    "RetryPolicy",
    "RetryableError",
    "Schedule",
    "ScheduleFiring",
    "ScheduleSpec",
    "Slot",
    "SyncBatch",
    "Throttle",
    "Throttled",
    "Unauthenticated",
    "Unavailable",
    "Worker",
    "from_rpc_error",
]
