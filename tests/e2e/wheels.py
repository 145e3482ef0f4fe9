"""Builds the two distributions from this tree, as a release would: ``python -m build`` of
dispatchd-client (clients/python) and of dispatchd (the root), wheel and sdist each."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"
BUILD_TIMEOUT = 300


@dataclass(frozen=True)
class Built:
    client_wheel: Path
    server_wheel: Path
    files: tuple[Path, ...]
    """Every wheel and sdist built, for twine check."""


def build_both(into: Path) -> Built:
    # --no-isolation builds with this venv's setuptools: no download of a build env per run.
    for source in (CLIENT, ROOT):
        subprocess.run(
            [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(into), str(source)],
            check=True,
            capture_output=True,
            timeout=BUILD_TIMEOUT,
        )
    (client,) = into.glob("dispatchd_client-*.whl")
    (server,) = into.glob("dispatchd-*.whl")
    return Built(client, server, tuple(sorted(into.iterdir())))


def new_venv(path: Path, *requirements: str) -> Path:
    """A fresh venv with ``requirements`` (wheels or pins) and their dependencies; its python."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
        check=True,
        timeout=BUILD_TIMEOUT,
    )
    return python
