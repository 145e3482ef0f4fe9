"""The dispatch-policy figures: medians of the rate, fairness, key-cost and policy per-job
runs, and the targets they are held to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.keys import Fairness
from bench.measure import Measured, median
from bench.rate import RATES, RateRun
from bench.targets import Target


def _rate_key(per_second: float, what: str) -> str:
    return f"rate_{per_second:g}_{what}"


TARGETS = (
    *(Target(_rate_key(r, "ratio"), f"rate {r:g}/s: measured / set", "~", 0.02) for r in RATES),
    Target("fairness_jain_100_keys", "fairness (Jain) 100 skewed keys", ">=", 0.99),
    Target("policy_vs_core_ratio", "unary per-job with rate+keys / without", ">=", 0.80),
)

INFO_ROWS = (
    *((_rate_key(r, "per_s"), f"rate {r:g}/s: measured dispatches/s") for r in RATES),
    *((_rate_key(r, "server_ratio"), f"rate {r:g}/s: same by server count") for r in RATES),
    *((_rate_key(r, "jobs_per_msg"), f"rate {r:g}/s: jobs per delivery msg") for r in RATES),
    *((_rate_key(r, "server_cpu_pct"), f"rate {r:g}/s: server CPU % of a core") for r in RATES),
    ("fairness_min_share", "fairness: least-served key / mean"),
    ("fairness_window_dispatches", "fairness: dispatches in window"),
    ("keys_10k_server_cpu_us_per_job", "burn-down 10k keys server CPU us/job"),
    ("no_keys_server_cpu_us_per_job", "burn-down no keys server CPU us/job"),
    ("keys_10k_vs_no_keys", "burn-down CPU 10k keys / no keys"),
    ("keys_10k_submit_server_cpu_us_per_job", "submit 10k keys server CPU us/job"),
    ("no_keys_submit_server_cpu_us_per_job", "submit no keys server CPU us/job"),
    ("policy_per_job_jobs_per_s", "unary per-job jobs/s with rate+keys"),
    ("policy_per_job_server_cpu_us_per_job", "unary per-job server CPU us/job, rate+keys"),
    ("policy_vs_core_server_cpu", "unary per-job server CPU/job rate+keys / plain"),
    ("policy_other_cpu_pct", "policy phases: other CPU % (noise)"),
)


@dataclass
class PolicyRuns:
    """Every measured run of the policy phases."""

    policy_per_job: list[Measured] = field(default_factory=list)
    rate: list[RateRun] = field(default_factory=list)
    fairness: list[Fairness] = field(default_factory=list)
    keys_submit: list[Measured] = field(default_factory=list)
    keys_burndown: list[Measured] = field(default_factory=list)
    no_keys_submit: list[Measured] = field(default_factory=list)
    no_keys_burndown: list[Measured] = field(default_factory=list)

    PHASES = (
        "policy_per_job",
        "rate",
        "fairness",
        "keys_submit",
        "keys_burndown",
        "no_keys_submit",
        "no_keys_burndown",
    )


def _med(values: Sequence[float]) -> float:
    return median(values) if values else float("nan")


def _cpu(runs: Sequence[Measured]) -> float:
    return _med([m.server_cpu_us_per_job for m in runs])


def summarize(p: PolicyRuns, core: dict[str, float]) -> dict[str, float]:
    """Medians per figure; the policy ratios are of the policy per-job medians to the
    plain unary per-job medians of the same command (in ``core``, the core summary): both
    phases send one Submit per job through raw stubs."""
    s: dict[str, float] = {}
    for r in RATES:
        runs = [x for x in p.rate if x.set_per_s == r]
        s[_rate_key(r, "ratio")] = _med([x.ratio for x in runs])
        s[_rate_key(r, "per_s")] = _med([x.measured_per_s for x in runs])
        s[_rate_key(r, "server_ratio")] = _med([x.server_ratio for x in runs])
        s[_rate_key(r, "jobs_per_msg")] = _med([x.jobs_per_msg for x in runs])
        s[_rate_key(r, "server_cpu_pct")] = _med([x.server_cpu_pct for x in runs])
    s["fairness_jain_100_keys"] = _med([f.jain for f in p.fairness])
    s["fairness_min_share"] = _med([f.min_share for f in p.fairness])
    s["fairness_window_dispatches"] = _med([f.window_dispatches for f in p.fairness])
    s["keys_10k_server_cpu_us_per_job"] = _cpu(p.keys_burndown)
    s["no_keys_server_cpu_us_per_job"] = _cpu(p.no_keys_burndown)
    s["keys_10k_vs_no_keys"] = (
        s["keys_10k_server_cpu_us_per_job"] / s["no_keys_server_cpu_us_per_job"]
    )
    s["keys_10k_submit_server_cpu_us_per_job"] = _cpu(p.keys_submit)
    s["no_keys_submit_server_cpu_us_per_job"] = _cpu(p.no_keys_submit)
    s["policy_per_job_jobs_per_s"] = _med([m.jobs_per_s for m in p.policy_per_job])
    s["policy_per_job_server_cpu_us_per_job"] = _cpu(p.policy_per_job)
    s["policy_vs_core_ratio"] = s["policy_per_job_jobs_per_s"] / core["unary_per_job_jobs_per_s"]
    s["policy_vs_core_server_cpu"] = (
        s["policy_per_job_server_cpu_us_per_job"] / core["unary_per_job_server_cpu_us_per_job"]
    )
    measured = p.policy_per_job + p.keys_burndown + p.no_keys_burndown
    s["policy_other_cpu_pct"] = _med(
        [m.other_cpu_pct for m in measured]
        + [x.other_cpu_pct for x in p.rate]
        + [f.other_cpu_pct for f in p.fairness]
    )
    return s
