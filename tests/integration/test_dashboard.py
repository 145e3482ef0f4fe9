"""deploy/grafana/dispatchd.json is a valid dashboard, and every query in it names metrics
the real server exports (scraped over HTTP after real traffic)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from dispatchd.runtime import DispatchdServer
from dispatchd_client import AsyncClient, JobState, ReceivedJob, Worker

from .scrape import Samples, scrape

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dispatchd.json"
KEYWORDS = {"bool", "offset", "and", "or", "unless", "group_left", "group_right", "inf", "nan"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
#: Storage families only one backend exports (the dashboard shows both).
BACKEND_ONLY = {
    "embedded": {
        "dispatchd_journal_commit_seconds": "histogram",
        "dispatchd_journal_commit_records": "histogram",
        "dispatchd_journal_commit_failures": "counter",
        "dispatchd_journal_size_bytes": "gauge",
        "dispatchd_snapshot_seconds": "histogram",
    },
    "redis": {
        "dispatchd_redis_call_seconds": "histogram",
        "dispatchd_redis_call_errors": "counter",
    },
}


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dash["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # panels inside collapsed rows
    return out


def _queries(dash: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in _panels(dash) for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers left after removing
    strings, label matchers, ranges and grouping clauses that are not function calls."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end() :].lstrip().startswith("(") or m.group() in KEYWORDS:
            continue  # a function or an operator
        names.add(m.group())
    return names


def test_metric_names_parser() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, method) (rate(x_bucket{a=~"b|c"}[$__rate_interval])))'
        " / on (queue) group_left y_total"
    )
    assert metric_names(expr) == {"x_bucket", "y_total"}


def _balanced(expr: str) -> bool:
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for ch in re.sub(r'"(?:[^"\\]|\\.)*"', "", expr):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack


def test_dashboard_is_a_valid_grafana_model() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert (dash["uid"], dash["title"]) == ("dispatchd", "dispatchd")
    assert isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in _panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = set()
    for panel in _panels(dash):
        assert panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        titles.add(panel["title"])
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["refId"]
            assert _balanced(target["expr"]), target["expr"]
    # What the issue asks the dashboard to show.
    for wanted in ("Throughput", "Backlog", "Width vs underway", "Workers and credits"):
        assert wanted in titles


async def _traffic(target: str) -> None:
    worker = Worker(target, concurrency=2)

    @worker.handler("dash")
    async def handle(job: ReceivedJob) -> bytes:
        return b"ok"

    task = asyncio.create_task(worker.run_async())
    try:
        await worker.wait_connected(10)
        async with AsyncClient(target) as client:
            job = await client.submit("dash", b"x")
            assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
    finally:
        await worker.stop()
        await task


def _exported(m: Samples) -> set[str]:
    """Every series name the server can export: families with their type's suffixes
    (a family may have no sample yet, e.g. the rate of a queue without a limit)."""
    names = set(m.names)
    for family, kind in m.families.items():
        names.update(family + suffix for suffix in SUFFIXES.get(kind, ("",)))
    return names


async def test_every_dashboard_query_names_exported_metrics(
    server: DispatchdServer, target: str
) -> None:
    await _traffic(target)
    page = await scrape(server.observability.metrics_port)
    exported = _exported(page)
    backend = server.backend.capabilities.name
    assert set(BACKEND_ONLY[backend]) <= set(page.families)
    for other, families in BACKEND_ONLY.items():
        if other != backend:
            assert not set(families) & set(page.families)
            exported |= {f + x for f, kind in families.items() for x in SUFFIXES[kind]}
    dash = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    for expr in _queries(dash):
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= exported, f"{expr!r} names {sorted(names - exported)}"
        used |= names
    for var in dash["templating"]["list"]:
        m = re.search(r"label_values\(([A-Za-z_:][A-Za-z0-9_:]*)", var.get("definition", ""))
        if m:
            assert m.group(1) in exported, var["definition"]
            used.add(m.group(1))
    # The dashboard shows every dispatchd family the server exports.
    dispatchd_families = {f for f in _exported_families(exported) if f.startswith("dispatchd_")}
    assert dispatchd_families == _exported_families(used) & dispatchd_families


def _exported_families(names: set[str]) -> set[str]:
    out = set()
    for name in names:
        for suffix in ("_bucket", "_sum", "_count", "_total"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        out.add(name)
    return out


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each query, with the variables as Grafana fills them, as a recording rule that
    `promtool check rules` parses (Prometheus' own PromQL parser)."""
    dash = json.loads(DASHBOARD.read_text())
    rules = [
        {"record": f"dashboard:query_{i}", "expr": grafana_filled(expr)}
        for i, expr in enumerate(_queries(dash))
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: `make prometheus-tools` installs it"
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def grafana_filled(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", "1m")
        .replace('"$instance"', '".*"')
        .replace('"$queue"', '".*"')
    )
