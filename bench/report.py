"""Medians over the runs, the targets they are held to, the table and the JSON file."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench import client_path, durable, policy_report, startup
from bench.client_path import ClientRuns
from bench.durable import DurableRuns
from bench.keys import Fairness
from bench.measure import Measured, median
from bench.policy_report import PolicyRuns
from bench.rate import RateRun
from bench.startup import Startup
from bench.targets import Target, fmt
from bench.workload import Latency

CORE_TARGETS = (
    *client_path.TARGETS,
    Target("per_job_server_cpu_us_per_job", "per-job server CPU us/job", "<=", 200),
    Target("batched_jobs_per_s", "batched jobs/s (SubmitBatch + batched acks)", ">=", 200_000),
    Target("batched_server_cpu_us_per_job", "batched server CPU us/job", "<=", 10),
    Target("dispatch_p99_ms", "dispatch p99 ms (half load)", "<", 5),
)
TARGETS = CORE_TARGETS + policy_report.TARGETS

# Rows shown without a target: (key, label).
INFO_ROWS = (
    ("baseline_jobs_per_s", "raw grpc.aio baseline msgs/s"),
    ("baseline_server_cpu_us_per_msg", "baseline server CPU us/msg"),
    *client_path.INFO_ROWS,
    ("batched_vs_baseline", "batched / raw baseline"),
    ("batched_client_cpu_us_per_job", "batched client CPU us/job"),
    ("unary_per_job_jobs_per_s", "unary per-job jobs/s (raw stubs, 1 Submit/job)"),
    ("unary_per_job_vs_baseline", "unary per-job / raw baseline"),
    ("unary_per_job_server_cpu_us_per_job", "unary per-job server CPU us/job"),
    ("unary_per_job_server_sys_pct", "unary per-job server CPU in kernel %"),
    ("unary_per_job_jobs_per_delivery_msg", "unary per-job jobs per delivery msg"),
    ("dispatch_p50_ms", "dispatch p50 ms (half load)"),
    ("dispatch_max_ms", "dispatch max ms (half load, all runs)"),
    ("latency_offered_per_s", "half-load offered jobs/s"),
    ("latency_server_cpu_us_per_job", "half-load server CPU us/job"),
    ("http_push_jobs_per_s", "HTTP push jobs/s (local endpoint)"),
    ("http_push_server_cpu_us_per_job", "HTTP push server CPU us/job"),
    ("other_cpu_pct", "other processes' CPU % (noise)"),
    *policy_report.INFO_ROWS,
)
NOISY_PCT = 10.0


@dataclass
class Runs:
    """Every measured run, by phase."""

    baseline: list[Measured] = field(default_factory=list)
    unary_per_job: list[Measured] = field(default_factory=list)
    batched: list[Measured] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    client: ClientRuns = field(default_factory=ClientRuns)
    policies: PolicyRuns = field(default_factory=PolicyRuns)
    durable: DurableRuns = field(default_factory=DurableRuns)
    startup: list[Startup] = field(default_factory=list)
    http_push: list[Measured] = field(default_factory=list)


def _med(values: Sequence[float]) -> float:
    return median(values) if values else float("nan")


def summarize(runs: Runs) -> dict[str, float]:
    """Medians per figure; ratios are of the medians."""
    u = runs.unary_per_job
    s = {
        "baseline_jobs_per_s": _med([m.jobs_per_s for m in runs.baseline]),
        "baseline_server_cpu_us_per_msg": _med([m.server_cpu_us_per_job for m in runs.baseline]),
        "batched_jobs_per_s": _med([m.jobs_per_s for m in runs.batched]),
        "batched_server_cpu_us_per_job": _med([m.server_cpu_us_per_job for m in runs.batched]),
        "batched_client_cpu_us_per_job": _med([m.client_cpu_us_per_job for m in runs.batched]),
        "unary_per_job_jobs_per_s": _med([m.jobs_per_s for m in u]),
        "unary_per_job_server_cpu_us_per_job": _med([m.server_cpu_us_per_job for m in u]),
        "unary_per_job_server_sys_pct": _med([m.server_sys_pct for m in u]),
        "unary_per_job_jobs_per_delivery_msg": _med([m.jobs_per_delivery_msg for m in u]),
        "dispatch_p50_ms": _med([x.p50_ms for x in runs.latency]),
        "dispatch_p99_ms": _med([x.p99_ms for x in runs.latency]),
        "dispatch_max_ms": max((x.max_ms for x in runs.latency), default=float("nan")),
        "latency_offered_per_s": _med([x.offered_per_s for x in runs.latency]),
        "latency_server_cpu_us_per_job": _med([x.server_cpu_us_per_job for x in runs.latency]),
        "http_push_jobs_per_s": _med([m.jobs_per_s for m in runs.http_push]),
        "http_push_server_cpu_us_per_job": _med([m.server_cpu_us_per_job for m in runs.http_push]),
        "other_cpu_pct": _med(
            [m.other_cpu_pct for m in runs.baseline + u + runs.batched]
            + [m.other_cpu_pct for ms in runs.client.runs.values() for m in ms]
            + [x.other_cpu_pct for x in runs.latency]
        ),
    }
    base = s["baseline_jobs_per_s"]
    s["unary_per_job_vs_baseline"] = s["unary_per_job_jobs_per_s"] / base
    s["batched_vs_baseline"] = s["batched_jobs_per_s"] / base
    s.update(client_path.summarize(runs.client, base))
    # The headline CPU figure is the per-job path's; every phase has its own key too.
    s["server_cpu_us_per_job"] = s.get("per_job_server_cpu_us_per_job", float("nan"))
    s.update(policy_report.summarize(runs.policies, s))
    s.update(durable.summarize(runs.durable, runs.batched, base))
    s.update(startup.summarize(runs.startup))
    return s


def targets_of(summary: dict[str, float]) -> tuple[Target, ...]:
    """The targets of the phases that ran: the durable and start-up groups are optional."""
    every = (*TARGETS, *durable.TARGETS, *startup.TARGETS)
    return tuple(t for t in every if not math.isnan(summary.get(t.key, math.nan)))


def info_rows_of(summary: dict[str, float]) -> list[tuple[str, str]]:
    rows = (*INFO_ROWS, *durable.INFO_ROWS, *startup.INFO_ROWS)
    return [(key, label) for key, label in rows if key in summary]


def table(summary: dict[str, float]) -> str:
    rows = [("metric", "median", "target", "ok")]
    for t in targets_of(summary):
        value = summary[t.key]
        ok = "yes" if t.met(value) else "NO"
        rows.append((t.label, fmt(value), t.describe(), ok))
    rows.extend((label, fmt(summary[key]), "", "") for key, label in info_rows_of(summary))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip()
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    noise = max(
        summary.get(k, 0.0)
        for k in ("other_cpu_pct", "policy_other_cpu_pct", "durable_other_cpu_pct")
    )
    if noise > NOISY_PCT:
        lines.append(
            f"\nnote: other processes used up to {noise:.0f}% of the machine (median over "
            "a group of phases) during the runs; wall-clock figures (jobs/s, latency, rate "
            "accuracy) are depressed by it."
        )
    return "\n".join(lines)


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()


def _environment() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "machine": platform.machine(),
        "git_commit": _git_commit(),
    }


def _clean(value: float) -> float | None:
    return None if value != value else round(value, 3)  # NaN is not JSON


def document(summary: dict[str, float], runs: Runs, settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON object: headline medians first, then targets, runs, settings, environment."""
    doc: dict[str, Any] = {k: _clean(v) for k, v in summary.items()}
    targets = targets_of(summary)
    doc["targets"] = {t.key: t.describe() for t in targets}
    doc["ok"] = {t.key: t.met(summary[t.key]) for t in targets}
    doc["all_ok"] = all(doc["ok"].values())
    doc["runs"] = {
        phase: [run_dict(x) for x in getattr(runs, phase)]
        for phase in ("baseline", "unary_per_job", "batched", "latency", "http_push")
    }
    doc["runs"].update({phase: [run_dict(x) for x in ms] for phase, ms in runs.client.runs.items()})
    doc["runs"].update(
        {phase: [run_dict(x) for x in getattr(runs.policies, phase)] for phase in PolicyRuns.PHASES}
    )
    doc["runs"].update(
        {
            f"durable_{phase}": [run_dict(x) for x in getattr(runs.durable, phase)]
            for phase in DurableRuns.PHASES
        }
    )
    doc["runs"]["startup"] = [startup.run_dict(x) for x in runs.startup]
    doc["settings"] = settings
    doc["environment"] = _environment()
    doc["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return doc


def run_dict(x: Measured | Latency | RateRun | Fairness) -> dict[str, float]:
    d: dict[str, float] = {k: round(v, 3) for k, v in asdict(x).items()}
    if isinstance(x, Measured):
        d["jobs_per_s"] = round(x.jobs_per_s, 1)
        d["server_cpu_us_per_job"] = round(x.server_cpu_us_per_job, 2)
        d["client_cpu_us_per_job"] = round(x.client_cpu_us_per_job, 2)
        d["server_sys_pct"] = round(x.server_sys_pct, 1)
        d["other_cpu_pct"] = round(x.other_cpu_pct, 1)
    elif isinstance(x, RateRun):
        d["measured_per_s"] = round(x.measured_per_s, 2)
        d["ratio"] = round(x.ratio, 5)
        d["server_ratio"] = round(x.server_ratio, 5)
        d["jobs_per_msg"] = round(x.jobs_per_msg, 2)
        d["server_cpu_pct"] = round(x.server_cpu_pct, 1)
        d["client_cpu_pct"] = round(x.client_cpu_pct, 1)
    return d


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.json")  # *.json: ignored by git if left over
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
