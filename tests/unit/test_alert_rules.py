"""The shipped alerting rules pass `promtool check rules` and their unit tests
(tests/prometheus/alerts.test.yaml: each alert fires where it should and stays quiet where
it should not). promtool comes with Debian's prometheus package: `make prometheus-tools`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm" / "dispatchd" / "files" / "dispatchd-alerts.yaml"
TESTS = ROOT / "tests" / "prometheus" / "alerts.test.yaml"


def _promtool(*args: str, cwd: Path = ROOT) -> str:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: `make prometheus-tools` installs it"
    done = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_rules_are_valid() -> None:
    assert "SUCCESS: 8 rules found" in _promtool("check", "rules", str(RULES))


def test_every_alert_fires_and_stays_quiet_where_it_should() -> None:
    assert "SUCCESS" in _promtool("test", "rules", TESTS.name, cwd=TESTS.parent)
