"""HTTP push: the server itself delivers the jobs of queues that have an http_target."""

from dispatchd.push.errors import InvalidJobHeader, PushConfigError, PushError
from dispatchd.push.pusher import HttpPusher, PushSettings, TargetBinding
from dispatchd.push.stats import LATENCY_BUCKETS, TargetStats

__all__ = [
    "LATENCY_BUCKETS",
    "HttpPusher",
    "InvalidJobHeader",
    "PushConfigError",
    "PushError",
    "PushSettings",
    "TargetBinding",
    "TargetStats",
]
