"""The Redis backend's error family (start-up problems; request errors are EngineErrors)."""

from __future__ import annotations


class RedisBackendError(Exception):
    """Root of the errors the Redis backend raises on purpose. The message is for a person."""


class RedisUrlError(RedisBackendError):
    """--redis-url cannot be used: unknown scheme or malformed; the message says how."""


class ScriptReplyError(RedisBackendError):
    """A Lua script answered something this version of dispatchd does not understand
    (e.g. replicas of different versions share one Redis)."""


class ScriptAssemblyError(RedisBackendError):
    """A Lua script names an include that does not exist, or includes form a cycle: a
    packaging mistake, found when dispatchd.redis.scripts is imported."""
