"""Runs the installed ``dispatchctl`` console script as a subprocess (never blocking the loop
that serves the in-process server)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Installed next to the interpreter by `pip install -e .` (the [project.scripts] entry).
DISPATCHCTL = Path(sys.executable).with_name("dispatchctl")


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


async def dispatchctl(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> Run:
    proc = await asyncio.create_subprocess_exec(
        str(DISPATCHCTL),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


@dataclass(frozen=True)
class Dispatchctl:
    """``await ctl("queues", "-o", "json")`` runs dispatchctl against ``target``."""

    target: str
    options: tuple[str, ...] = ()

    async def __call__(
        self, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
    ) -> Run:
        return await dispatchctl(
            "--target", self.target, *self.options, *args, stdin=stdin, env=env
        )
