"""The pure dispatch engine: queues, priority order, width, leases. No I/O, no clock."""

from dispatchd.engine.core import Dispatches, Engine, Outcome
from dispatchd.engine.errors import (
    EngineError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from dispatchd.engine.limits import EngineLimits
from dispatchd.engine.model import (
    AttemptRecord,
    FinishedJob,
    JobFailure,
    JobRecord,
    JobState,
    JobView,
    LeaseRecord,
    NewJob,
    QueueFigures,
    QueueSettings,
    QueueView,
    Rejection,
    SlotRecord,
    SlotRequest,
    WorkerRecord,
)
from dispatchd.engine.observer import EngineObserver, ObserverChain
from dispatchd.engine.policies import KeyLimits, Rate, RetryPolicy
from dispatchd.engine.targets import HttpTarget

__all__ = [
    "AttemptRecord",
    "Dispatches",
    "Engine",
    "EngineError",
    "EngineLimits",
    "EngineObserver",
    "FailedPrecondition",
    "FinishedJob",
    "HttpTarget",
    "InvalidArgument",
    "JobFailure",
    "JobRecord",
    "JobState",
    "JobView",
    "KeyLimits",
    "LeaseRecord",
    "NewJob",
    "NotFound",
    "ObserverChain",
    "Outcome",
    "QueueFigures",
    "QueueSettings",
    "QueueView",
    "Rate",
    "Rejection",
    "ResourceExhausted",
    "RetryPolicy",
    "SlotRecord",
    "SlotRequest",
    "Unavailable",
    "WorkerRecord",
]
