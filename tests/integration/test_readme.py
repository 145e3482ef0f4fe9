"""The README quickstart runs as written against a real server."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def quickstart_code() -> str:
    text = README.read_text()
    section = text.split("## Quickstart (Python)", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "README has no python block under Quickstart"
    return match.group(1)


async def test_readme_quickstart_runs(target: str) -> None:
    code = quickstart_code()
    assert 'TARGET = "127.0.0.1:50051"' in code
    code = code.replace('TARGET = "127.0.0.1:50051"', f'TARGET = "{target}"')
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "SUCCEEDED sent hello (attempt 1)"


async def test_every_readme_python_block_runs(target: str) -> None:
    """The other examples in the README are true too (each runs in its own process)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert len(blocks) >= 2
    for code in blocks[1:]:
        code = code.replace("127.0.0.1:50051", target)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            code,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, f"README block failed:\n{code}\n{err.decode()}"
