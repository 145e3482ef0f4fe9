"""The Lua scripts: one atomic script per operation (lua/<name>.lua), assembled from the
small includes it names (lua/includes/<topic>.lua) and loaded once per connection pool
(redis-py's Script sends EVALSHA, and SCRIPT LOAD again after a NOSCRIPT, e.g. when Redis
restarted).

A script or an include names what it needs with one line per include, as BullMQ does:

    -- @include bucket

An include's own includes come first, and each include is inlined once, where it is first
needed; a missing include or a cycle is an error when this module is imported."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from dispatchd.redis.errors import ScriptAssemblyError

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
    "figures",
    "acquire",
    "slot",
    "list",
    "schedule",
    "fire",
    "fire_jobs",
    "fire_record",
    "delete",
    "progress",
    "batch",
    "events_on",
)

_INCLUDE = re.compile(r"^-- @include[ \t]+(\S+)[ \t]*$", re.MULTILINE)


def _read(name: str) -> str:
    return (resources.files("dispatchd.redis") / "lua" / f"{name}.lua").read_text("utf-8")


def read_include(name: str) -> str:
    path = resources.files("dispatchd.redis") / "lua" / "includes" / f"{name}.lua"
    if not re.fullmatch(r"[a-z_]+", name) or not path.is_file():
        raise ScriptAssemblyError(f"no include {name!r} (lua/includes/{name}.lua)")
    return path.read_text("utf-8")


def includes_of(text: str) -> list[str]:
    """The includes a script or include names, in the order it names them."""
    return _INCLUDE.findall(text)


def include_order(name: str, text: str, read: Callable[[str], str] = read_include) -> list[str]:
    """Every include ``text`` needs, directly or not, each once, each after its own."""
    order: list[str] = []

    def visit(include: str, path: tuple[str, ...]) -> None:
        if include in path:
            raise ScriptAssemblyError(f"include cycle: {' -> '.join((*path, include))}")
        if include in order:
            return
        try:
            body = read(include)
        except ScriptAssemblyError as e:
            raise ScriptAssemblyError(f"{' -> '.join(path)}: {e}") from None
        for needed in includes_of(body):
            visit(needed, (*path, include))
        order.append(include)

    for needed in includes_of(text):
        visit(needed, (name,))
    return order


def assemble(name: str) -> str:
    """The text Redis runs for operation ``name``: its includes, then the script."""
    script = _read(name)
    parts = [f"-- [{inc}.lua]\n{read_include(inc)}" for inc in include_order(name, script)]
    return "\n".join([*parts, f"-- [{name}.lua]\n{script}"])


def _job_fields(job_lua: str) -> tuple[str, ...]:
    """The field order of job replies, read from includes/job.lua so it is written once."""
    m = re.search(r"local JOB_FIELDS = \{([^}]*)\}", job_lua)
    if m is None:
        raise ScriptAssemblyError("includes/job.lua lost its JOB_FIELDS table")
    return tuple(re.findall(r"'([a-z]+)'", m.group(1)))


#: A queue's channels are published as ``redis.call('PUBLISH', b .. ':ev', ...)``, b the
#: queue's hash tag. On a Redis Cluster they go out as sharded messages (SPUBLISH: to the
#: subscribers of that slot's node only, not broadcast to every node over the cluster bus),
#: so the same scripts run there with this one word changed. The settings channel
#: ('dq:qs', no queue's slot) stays a broadcast PUBLISH: rare, and any node hears it.
_QUEUE_PUBLISH = "redis.call('PUBLISH', b .. "
_QUEUE_SPUBLISH = "redis.call('SPUBLISH', b .. "


def sharded(text: str) -> str:
    """``text`` with its queue-channel publishes sharded (Redis Cluster)."""
    return text.replace(_QUEUE_PUBLISH, _QUEUE_SPUBLISH)


SOURCES = {op: assemble(op) for op in OPERATIONS}
SHARDED_SOURCES = {op: sharded(text) for op, text in SOURCES.items()}
JOB_FIELDS = _job_fields(read_include("job"))


@dataclass(frozen=True, slots=True)
class Scripts:
    """The registered scripts of one client."""

    by_name: dict[str, AsyncScript]

    @classmethod
    def register(cls, client: Redis, cluster: bool = False) -> Scripts:
        sources = SHARDED_SOURCES if cluster else SOURCES
        return cls({op: client.register_script(text) for op, text in sources.items()})

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self.by_name[name](keys=keys, args=args)
