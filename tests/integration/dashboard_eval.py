"""Runs the shipped Grafana dashboard's queries on real scrapes with promtool: the pages of
one or several servers become series (one `instance` each), each chosen panel query is
evaluated as Grafana would ($instance all, $queue as given) and must give the true values.
This is how the tests check every panel is right for 1 and for 3 replicas."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .scrape import Samples

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dispatchd.json"
#: Five minutes of one sample a minute: enough for every rate() window in the dashboard.
POINTS = 6
EVAL_TIME = "5m"

#: (panel title, refId) -> the samples it must give: (labels, value).
Expected = Mapping[tuple[str, str], Sequence[tuple[Mapping[str, str], float]]]


def _panel_query(title: str, ref: str, queue: str) -> str:
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        if panel.get("title") == title:
            for target in panel["targets"]:
                if target["refId"] == ref:
                    expr: str = target["expr"]
                    return (
                        expr.replace('"$instance"', '".*"')
                        .replace('"$queue"', json.dumps(queue))
                        .replace("$__rate_interval", "2m")
                    )
    raise AssertionError(f"no panel {title!r} with query {ref} in the dashboard")


def _series(pages: Sequence[Samples]) -> list[dict[str, str]]:
    out = []
    for i, page in enumerate(pages):
        for (name, labels), value in page.samples():
            if value != value:  # NaN: promtool's series notation has no NaN
                continue
            pairs = {**dict(labels), "instance": f"r{i}", "job": "dispatchd"}
            text = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(pairs.items()))
            out.append({"series": f"{name}{{{text}}}", "values": " ".join([repr(value)] * POINTS)})
    return out


def check_panels(
    pages: Sequence[Samples], expected: Expected, tmp: Path, queue: str = ".*"
) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: `make prometheus-tools` installs it"
    tests: list[dict[str, Any]] = []
    for (title, ref), samples in expected.items():
        exp = [
            {
                "labels": "{" + ",".join(f"{k}={json.dumps(v)}" for k, v in lbls.items()) + "}",
                "value": value,
            }
            for lbls, value in samples
        ]
        tests.append(
            {"expr": _panel_query(title, ref, queue), "eval_time": EVAL_TIME, "exp_samples": exp}
        )
    doc = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": _series(pages), "promql_expr_test": tests}],
    }
    path = tmp / "panels.test.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    done = subprocess.run(
        [promtool, "test", "rules", path.name],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
