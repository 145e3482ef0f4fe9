"""The Redis backend (--backend redis): several stateless dispatchd replicas share their
queues, width, rate and leases through Redis, every decision an atomic Lua script."""

from dispatchd.redis.errors import RedisBackendError, RedisUrlError

__all__ = ["RedisBackendError", "RedisUrlError"]
