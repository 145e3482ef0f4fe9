"""The durable figures: the per-job and batched phases against a second dispatchd started
with ``--data-dir`` (so with its default durability, the SQLite journal: a Submit is
answered once its record is fsynced, in group commits), run in the same rounds as the
memory phases, each right after its memory twin so both see the same machine load.

``durable_*_vs_memory`` are ratios of the medians (the issue's figures);
``*_paired`` are medians of the per-round ratios of adjacent runs, less exposed to
other programs' load that drifts between rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.measure import Measured, median
from bench.targets import Target

TARGETS = (
    Target("durable_per_job_vs_memory", "durable per-job / memory per-job", ">=", 0.50),
    Target("durable_batched_vs_memory", "durable batched / memory batched", ">=", 0.40),
)

INFO_ROWS = (
    ("durable_per_job_jobs_per_s", "durable per-job jobs/s"),
    ("durable_batched_jobs_per_s", "durable batched jobs/s"),
    ("durable_per_job_vs_memory_paired", "durable / memory per-job, paired"),
    ("durable_batched_vs_memory_paired", "durable / memory batched, paired"),
    ("durable_per_job_server_cpu_us_per_job", "durable per-job server CPU us/job"),
    ("durable_batched_server_cpu_us_per_job", "durable batched server CPU us/job"),
    ("durable_per_job_server_sys_pct", "durable per-job server CPU in kernel %"),
    ("durable_other_cpu_pct", "durable phases: other CPU % (noise)"),
)


@dataclass
class DurableRuns:
    """Every durable run, and the memory run it was paired with (same round)."""

    per_job: list[Measured] = field(default_factory=list)
    batched: list[Measured] = field(default_factory=list)

    PHASES = ("per_job", "batched")

    def __bool__(self) -> bool:
        return bool(self.per_job or self.batched)


def _med(values: Sequence[float]) -> float:
    return median(values) if values else float("nan")


def _paired(durable: Sequence[Measured], memory: Sequence[Measured]) -> float:
    ratios = [d.jobs_per_s / m.jobs_per_s for d, m in zip(durable, memory, strict=False)]
    return _med(ratios)


def summarize(
    d: DurableRuns, memory_per_job: Sequence[Measured], memory_batched: Sequence[Measured]
) -> dict[str, float]:
    """Medians of the durable runs and their ratios to the memory medians of the same
    command; empty when the durable group did not run."""
    if not d:
        return {}
    mem_per_job = _med([m.jobs_per_s for m in memory_per_job])
    mem_batched = _med([m.jobs_per_s for m in memory_batched])
    s = {
        "durable_per_job_jobs_per_s": _med([m.jobs_per_s for m in d.per_job]),
        "durable_batched_jobs_per_s": _med([m.jobs_per_s for m in d.batched]),
        "durable_per_job_server_cpu_us_per_job": _med([m.server_cpu_us_per_job for m in d.per_job]),
        "durable_batched_server_cpu_us_per_job": _med([m.server_cpu_us_per_job for m in d.batched]),
        "durable_per_job_server_sys_pct": _med([m.server_sys_pct for m in d.per_job]),
        "durable_other_cpu_pct": _med([m.other_cpu_pct for m in d.per_job + d.batched]),
        "durable_per_job_vs_memory_paired": _paired(d.per_job, memory_per_job),
        "durable_batched_vs_memory_paired": _paired(d.batched, memory_batched),
    }
    s["durable_per_job_vs_memory"] = s["durable_per_job_jobs_per_s"] / mem_per_job
    s["durable_batched_vs_memory"] = s["durable_batched_jobs_per_s"] / mem_batched
    return s
