"""Builds the Redis backend from the server's config: the client for --redis-url, the
reaper's pace, and the accounting that keeps this replica's counters."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dispatchd.config import Config
from dispatchd.engine import EngineLimits, EngineObserver, ObserverChain
from dispatchd.listening import StartError
from dispatchd.observability.metrics import MetricsObserver
from dispatchd.redis import connect
from dispatchd.redis.accounting import Accounting
from dispatchd.redis.backend import RedisBackend
from dispatchd.redis.errors import RedisBackendError
from dispatchd.redis.leasing import RedisLeasing


def reap_interval(config: Config) -> float:
    """A quarter of the default lease (each pass also waits no longer than the next
    lease deadline it saw), so a dead replica's leases come back soon after they end."""
    return max(0.05, min(5.0, config.default_lease / 4))


def open_redis_backend(
    config: Config,
    limits: EngineLimits,
    clock: Callable[[], float],
    observers: Sequence[EngineObserver],
    metrics: MetricsObserver | None,
    timers: bool = True,
) -> RedisBackend:
    try:
        client = connect.client(config.redis_url)
    except RedisBackendError as e:
        raise StartError(str(e)) from None
    ops = RedisLeasing(client, limits, config.finished_retention)
    # The counters of this replica's share are the accounting's (it writes the metrics
    # observer's numbers); the other observers (logs, spans, trends) hear of dispatches
    # and finishes of this replica's workers.
    accounting = Accounting(metrics.of if metrics is not None else None)
    watchers = ObserverChain([o for o in observers if o is not metrics])
    return RedisBackend(
        ops, clock, reap_interval(config), accounting, timers, watchers, counters=metrics
    )
