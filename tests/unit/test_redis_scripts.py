"""How the Lua scripts are assembled from their includes (redis/scripts.py)."""

from __future__ import annotations

import re
from collections import Counter
from importlib import resources

import pytest

from dispatchd.redis import scripts, signals
from dispatchd.redis.errors import ScriptAssemblyError
from dispatchd.redis.scripts import JOB_FIELDS, OPERATIONS, SOURCES

LUA = resources.files("dispatchd.redis") / "lua"


def _lua_files() -> dict[str, str]:
    files = {f"{p.name}": p.read_text("utf-8") for p in LUA.iterdir() if p.name.endswith(".lua")}
    for p in (LUA / "includes").iterdir():
        files[f"includes/{p.name}"] = p.read_text("utf-8")
    return files


def test_every_operation_has_a_script_that_resolves() -> None:
    assert set(SOURCES) == set(OPERATIONS)
    for op in OPERATIONS:
        assert "redis.call" in SOURCES[op]
        assert SOURCES[op].endswith(scripts._read(op))  # the script itself comes last


def test_no_include_is_inlined_twice_and_no_function_is_defined_twice() -> None:
    for op, text in SOURCES.items():
        inlined = Counter(re.findall(r"^-- \[(\w+)\.lua\]$", text, re.MULTILINE))
        assert max(inlined.values()) == 1, (op, inlined)
        defined = Counter(re.findall(r"^local function (\w+)", text, re.MULTILINE))
        assert [name for name, n in defined.items() if n > 1] == [], op


def test_an_include_comes_after_the_includes_it_needs() -> None:
    for op in OPERATIONS:
        order = scripts.include_order(op, scripts._read(op))
        for i, include in enumerate(order):
            assert set(scripts.includes_of(scripts.read_include(include))) <= set(order[:i])


def test_every_include_file_is_used() -> None:
    used = {i for op in OPERATIONS for i in scripts.include_order(op, scripts._read(op))}
    present = {p.name[: -len(".lua")] for p in (LUA / "includes").iterdir()}
    assert used == present


def test_job_fields_are_written_once_and_read_from_there() -> None:
    holders = [name for name, text in _lua_files().items() if "local JOB_FIELDS =" in text]
    assert holders == ["includes/job.lua"]
    assert JOB_FIELDS[:2] == ("id", "q")
    assert {"st", "ls", "ats"} <= set(JOB_FIELDS)


def test_the_token_bucket_refill_is_written_once() -> None:
    refills = [name for name, text in _lua_files().items() if "math.max(0, now - " in text]
    assert refills == ["includes/bucket.lua"]


def test_scripts_answer_codes_not_the_servers_english() -> None:
    """The person-readable texts live in engine/reasons.py; a script's string literals
    are codes, key names and field names, none with a space."""
    for name, text in _lua_files().items():
        code = "\n".join(line.split("--")[0] for line in text.splitlines())
        literals = re.findall(r"'([^']*)'", code)
        assert [s for s in literals if " " in s] == [], name


def test_the_settings_channel_is_the_one_signals_names() -> None:
    assert f"'{signals.QUEUE_SETTINGS}'" in scripts._read("update")


def test_an_unknown_include_is_an_error_naming_who_asked() -> None:
    with pytest.raises(ScriptAssemblyError, match=r"claim: no include 'nosuch'"):
        scripts.include_order("claim", "-- @include core\n-- @include nosuch\n")
    with pytest.raises(ScriptAssemblyError, match="no include"):
        scripts.read_include("../claim")


def test_a_cycle_of_includes_is_an_error_naming_it() -> None:
    fake = {"a": "-- @include b\n", "b": "-- @include c\n", "c": "-- @include a\n"}
    with pytest.raises(ScriptAssemblyError, match=r"include cycle: s -> a -> b -> c -> a"):
        scripts.include_order("s", "-- @include a\n", fake.__getitem__)


def test_shared_includes_are_inlined_once_in_dependency_order() -> None:
    fake = {"base": "", "left": "-- @include base\n", "right": "-- @include base\n"}
    order = scripts.include_order("s", "-- @include left\n-- @include right\n", fake.__getitem__)
    assert order == ["base", "left", "right"]
