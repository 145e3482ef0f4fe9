"""The Lua scripts: one atomic script per operation, each prefixed with common.lua and
loaded once per connection pool (redis-py's Script sends EVALSHA, and SCRIPT LOAD again
after a NOSCRIPT, e.g. when Redis restarted)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

OPERATIONS = (
    "submit",
    "claim",
    "result",
    "heartbeat",
    "release",
    "reap",
    "cancel",
    "reprioritize",
    "retry",
    "purge",
    "update",
    "view",
    "acquire",
    "slot",
)


def _read(name: str) -> str:
    return (resources.files("dispatchd.redis") / "lua" / f"{name}.lua").read_text("utf-8")


def _job_fields(common: str) -> tuple[str, ...]:
    """The field order of job replies, read from common.lua so it is written down once."""
    m = re.search(r"local JOB_FIELDS = \{([^}]*)\}", common)
    if m is None:
        raise RuntimeError("common.lua lost its JOB_FIELDS table")
    return tuple(re.findall(r"'([a-z]+)'", m.group(1)))


COMMON = _read("common")
JOB_FIELDS = _job_fields(COMMON)


@dataclass(frozen=True, slots=True)
class Scripts:
    """The registered scripts of one client."""

    by_name: dict[str, AsyncScript]

    @classmethod
    def register(cls, client: Redis) -> Scripts:
        return cls({op: client.register_script(COMMON + "\n" + _read(op)) for op in OPERATIONS})

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self.by_name[name](keys=keys, args=args)
