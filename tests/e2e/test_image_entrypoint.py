"""The container's command, run from an installed wheel: what CI can check without a Docker
engine. Builds the wheel, installs it into a fresh venv, and runs the image's exact
ENTRYPOINT + CMD with the image's environment (paths moved into a temp dir)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.wheels import Built, new_venv

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
VENV_IN_IMAGE = "/opt/dispatchd"
SERVING = re.compile(r"dispatchd serving on [^:]+:(\d+)")
DASHBOARD = re.compile(r"dashboard on (http://[^/]+/)")
HEALTH = re.compile(r"health probes \(plaintext\) on [^:]+:(\d+)")


@dataclass
class Stage:
    base: str
    env: dict[str, str] = field(default_factory=dict)
    instructions: dict[str, str] = field(default_factory=dict)


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their ENV and last value of each other instruction (enough for our file)."""
    logical = re.sub(r"\\\n", " ", text)
    stages: list[Stage] = []
    for raw in logical.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "FROM":
            stages.append(Stage(rest))
        elif stages and word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                stages[-1].env[key] = value
        elif stages:
            stages[-1].instructions[word] = rest
    return stages


@pytest.fixture(scope="module")
def final() -> Stage:
    stages = parse_dockerfile(DOCKERFILE.read_text())
    assert len(stages) == 2, "a build stage and a runtime stage"
    assert all(s.base.startswith("${BASE_IMAGE}") for s in stages)
    return stages[-1]


def test_runtime_stage_shape(final: Stage) -> None:
    assert "ARG BASE_IMAGE=" in DOCKERFILE.read_text()
    user = final.instructions["USER"]
    assert re.fullmatch(r"\$\{UID\}:\$\{UID\}", user)
    assert "ARG UID=10001" in DOCKERFILE.read_text()
    assert final.instructions["STOPSIGNAL"] == "SIGTERM"
    assert json.loads(final.instructions["ENTRYPOINT"])[0].startswith(VENV_IN_IMAGE + "/bin/")
    assert final.env["DISPATCHD_DATA_DIR"] == "/var/lib/dispatchd"
    assert json.loads(final.instructions["VOLUME"]) == ["/var/lib/dispatchd"]
    ports = {env.rpartition(":")[2] for k, env in final.env.items() if k.endswith("LISTEN")}
    assert set(final.instructions["EXPOSE"].split()) == ports == {"50051", "8081", "9090"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, built: Built) -> Path:
    """A fresh venv with the wheels built from this tree (the server and the client it
    depends on, as the image's one pip call installs them) and their declared dependencies."""
    venv = tmp_path_factory.mktemp("image") / "venv"
    new_venv(venv, str(built.client_wheel), str(built.server_wheel))
    return venv


def _health(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as ch:
        req = health_pb2.HealthCheckRequest(service=service)
        return int(health_pb2_grpc.HealthStub(ch).Check(req, timeout=10).status)


@pytest.mark.timeout(360)
def test_the_image_command_serves_from_the_installed_wheel(
    final: Stage, installed: Path, tmp_path: Path
) -> None:
    entry = json.loads(final.instructions["ENTRYPOINT"]) + json.loads(final.instructions["CMD"])
    argv = [a.replace(VENV_IN_IMAGE, str(installed)) for a in entry]
    env = {k: v for k, v in final.env.items() if k.startswith(("DISPATCHD_", "PYTHON"))}
    # Same variables, but on this machine: loopback, free ports, a temp data dir.
    env |= {
        "PATH": f"{installed}/bin:/usr/bin:/bin",
        "DISPATCHD_DATA_DIR": str(tmp_path / "data"),
        "DISPATCHD_METRICS_LISTEN": "127.0.0.1:0",
        "DISPATCHD_HTTP_LISTEN": "127.0.0.1:0",
    }
    (tmp_path / "data").mkdir()
    proc = subprocess.Popen(
        [*argv, "--listen", "127.0.0.1:0", "--health-listen", "127.0.0.1:0"],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if SERVING.search(line):
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(60), "no start-up line"
        match = next((m for m in map(SERVING.search, lines) if m), None)
        assert match, "".join(lines)
        target = f"127.0.0.1:{match.group(1)}"
        assert _health(target) == health_pb2.HealthCheckResponse.SERVING
        dashboard = next(m for m in map(DASHBOARD.search, lines) if m).group(1)
        with urllib.request.urlopen(dashboard + "static/dashboard.js", timeout=10) as r:
            assert b"/api/queues" in r.read()  # the asset ships in the wheel
        probe = next(m for m in map(HEALTH.search, lines) if m)
        assert (
            _health(f"127.0.0.1:{probe.group(1)}", "liveness")
            == health_pb2.HealthCheckResponse.SERVING
        )
        ctl = subprocess.run(
            [str(installed / "bin/dispatchctl"), "--target", target, "queues", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert ctl.returncode == 0, ctl.stderr
        assert json.loads(ctl.stdout) == {"queues": []}
        proc.send_signal(signal.SIGTERM)  # the image's STOPSIGNAL: drain, snapshot, exit 0
        assert proc.wait(60) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(10)
        if proc.stderr is not None:
            proc.stderr.close()
    assert (tmp_path / "data/snapshot.pb").exists()
    log = "".join(lines)
    assert "drained" in log
    assert str(ROOT) not in log  # nothing was imported from the source tree
    assert (
        os.fspath(installed)
        in subprocess.run(
            [str(installed / "bin/python"), "-c", "import dispatchd; print(dispatchd.__file__)"],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        ).stdout
    )
