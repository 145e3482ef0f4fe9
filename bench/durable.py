"""The durable batched figure: the batched phase against a second dispatchd started with
``--data-dir`` (so with its default durability, the SQLite journal: a Submit is answered
once its record is fsynced, in group commits), run in the same rounds as the memory
batched phase, right after it so both see the same machine load. The durable per-job and
burn-down figures come from the client path (bench/client_path.py), against the same
journaled server.

``durable_batched_vs_memory`` is the ratio of the medians; ``*_paired`` is the median of
the per-round ratios of adjacent runs, less exposed to other programs' load that drifts
between rounds.
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
    ("durable_batched_jobs_per_s", "durable batched jobs/s"),
    ("durable_batched_vs_memory_paired", "durable / memory batched, paired"),
    ("durable_batched_server_cpu_us_per_job", "durable batched server CPU us/job"),
    ("durable_batched_vs_baseline", "durable batched / raw baseline"),
    ("durable_other_cpu_pct", "durable batched: other CPU % (noise)"),
)


@dataclass
class DurableRuns:
    """Every durable batched run (paired by index with the memory run of its round)."""

    batched: list[Measured] = field(default_factory=list)

    PHASES = ("batched",)

    def __bool__(self) -> bool:
        return bool(self.batched)


def _med(values: Sequence[float]) -> float:
    return median(values) if values else float("nan")


def _paired(durable: Sequence[Measured], memory: Sequence[Measured]) -> float:
    ratios = [d.jobs_per_s / m.jobs_per_s for d, m in zip(durable, memory, strict=False)]
    return _med(ratios)


def summarize(
    d: DurableRuns, memory_batched: Sequence[Measured], baseline_per_s: float
) -> dict[str, float]:
    """Medians of the durable runs and their ratios to the memory medians of the same
    command; empty when the durable group did not run."""
    if not d:
        return {}
    mem_batched = _med([m.jobs_per_s for m in memory_batched])
    s = {
        "durable_batched_jobs_per_s": _med([m.jobs_per_s for m in d.batched]),
        "durable_batched_server_cpu_us_per_job": _med([m.server_cpu_us_per_job for m in d.batched]),
        "durable_other_cpu_pct": _med([m.other_cpu_pct for m in d.batched]),
        "durable_batched_vs_memory_paired": _paired(d.batched, memory_batched),
    }
    s["durable_batched_vs_memory"] = s["durable_batched_jobs_per_s"] / mem_batched
    s["durable_batched_vs_baseline"] = s["durable_batched_jobs_per_s"] / baseline_per_s
    return s
