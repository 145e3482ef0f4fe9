"""dispatchd-client installs alone: its wheel (built with the server's, both checked by twine)
goes into a fresh venv with nothing but its own dependencies, and the README's Python
quickstart and dispatchctl run from there against a real server. Once with whatever pip picks,
once with the oldest grpcio, protobuf and googleapis-common-protos the client claims to
support (clients/python/pyproject.toml), so the floors are tested, not hoped for. Slow (a
minute or two: two venvs from the package index)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.wheels import CLIENT, Built, new_venv
from tests.integration.test_readme import quickstart_code

#: The exact versions at the floors the client's pyproject.toml declares.
OLDEST = {"grpcio": "1.62.0", "protobuf": "4.21.6", "googleapis-common-protos": "1.56.4"}
#: What the server needs and a client-only install must not bring.
SERVER_ONLY = {"dispatchd", "redis", "hiredis", "httpx", "prometheus-client", "opentelemetry-sdk"}


def test_both_distributions_pass_twine_check(built: Built) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, built.files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(built.files) == 4, built.files  # a wheel and an sdist each


def test_the_declared_floors_are_the_tested_ones() -> None:
    deps = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]["dependencies"]
    pairs = (re.match(r"([\w-]+)>=([\d.]+)", d) for d in deps)
    floors = {m.group(1): m.group(2) for m in pairs if m}
    assert floors == OLDEST


@pytest.mark.timeout(400)
@pytest.mark.parametrize("versions", ["newest", "oldest"])
def test_the_client_wheel_alone_runs_the_quickstart(
    versions: str, built: Built, tmp_path: Path, start_server: type[ServerProcess]
) -> None:
    pins = [f"{name}=={v}" for name, v in OLDEST.items()] if versions == "oldest" else []
    python = new_venv(tmp_path / "venv", str(built.client_wheel), *pins)
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"],
        check=True,
        capture_output=True,
        text=True,
    )
    installed = {p["name"].lower(): p["version"] for p in json.loads(listed.stdout)}
    assert installed["dispatchd-client"] == "0.1.0"
    assert not SERVER_ONLY & installed.keys(), installed
    assert "opentelemetry-api" not in installed  # tracing is the optional [otel] extra
    if versions == "oldest":
        assert {k: installed[k] for k in OLDEST} == OLDEST

    server = start_server(tmp_path / "data")
    target = server.wait_ready()
    code = quickstart_code().replace('TARGET = "127.0.0.1:50051"', f'TARGET = "{target}"')
    # From a directory of its own, as a user's program runs: in the repository's root
    # the oldest googleapis-common-protos' pkg_resources would see the repository's
    # editable install beside the wheel, and warn.
    run = subprocess.run(
        [str(python), "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "SUCCEEDED sent hello (attempt 1)"

    ctl = subprocess.run(
        [str(python.parent / "dispatchctl"), "--target", target, "queues"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ctl.returncode == 0, ctl.stderr
    assert "sms" in ctl.stdout
