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
from dispatchd.engine.policies import AdaptiveRate, KeyLimits, Rate, RateWindow, RetryPolicy
from dispatchd.engine.targets import HttpTarget
from dispatchd.engine.throttling import JobThrottle, ThrottleScope

__all__ = [
    "AdaptiveRate",
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
    "JobThrottle",
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
    "RateWindow",
    "Rejection",
    "ResourceExhausted",
    "RetryPolicy",
    "SlotRecord",
    "SlotRequest",
    "ThrottleScope",
    "Unavailable",
    "WorkerRecord",
]
