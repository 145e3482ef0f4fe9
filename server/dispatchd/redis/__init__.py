"""The Redis backend (--backend redis): several stateless dispatchd replicas share their
queues, width, rate and leases through Redis, every decision an atomic Lua script."""

from dispatchd.redis.backend import RedisBackend
from dispatchd.redis.errors import RedisBackendError, RedisUrlError
from dispatchd.redis.opening import open_redis_backend, reap_interval

__all__ = [
    "RedisBackend",
    "RedisBackendError",
    "RedisUrlError",
    "open_redis_backend",
    "reap_interval",
]
