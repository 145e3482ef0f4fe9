"""The protoc both stub generators must run under: grpcio-tools exactly as pinned in
tools/gen-requirements.txt. Another version writes other stubs (other floors for the
client's grpcio and protobuf), so a run from the wrong venv stops instead."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parent / "gen-requirements.txt"


def pinned_version() -> str:
    match = re.search(r"^grpcio-tools==(\S+)", REQUIREMENTS.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"{REQUIREMENTS.name} pins no grpcio-tools")
    return match.group(1)


def require_pinned_protoc() -> None:
    want = pinned_version()
    try:
        have = metadata.version("grpcio-tools")
    except metadata.PackageNotFoundError:
        have = "none"
    if have != want:
        raise SystemExit(
            f"grpcio-tools {have} is installed here, the stubs come from grpcio-tools {want}: "
            "run `make gen` / `make check-gen` (they use .venv/gen)"
        )
