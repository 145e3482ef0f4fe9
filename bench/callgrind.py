"""``make bench-callgrind``: instructions per job of the server's own work, by callgrind.

Method: bench/hotpath.py (the real servicer, engine, pump, observers and worker-stream
generator, every message serialized and parsed as on the wire, no sockets) runs under
``valgrind --tool=callgrind`` twice, with ``--small`` and ``--large`` jobs, each submitted in
SubmitBatch requests of ``--batch`` jobs (the size the AsyncClient's coalescing makes of 50
concurrent submitters), dispatched to 8 streams of 16 credits and acked with one
WorkResults per delivery message. Instructions per job = (Ir(large) - Ir(small)) /
(large - small): start-up, imports and set-up cancel out, leaving submit + dispatch + ack.
PYTHONHASHSEED is fixed, so two runs of the same code agree to a fraction of a percent,
and a change of a few percent is a real change, unlike wall-clock figures on a shared
machine. gRPC's core (HTTP/2 framing, the completion queue) is not in the figure.

Output: the figure on stdout and bench/results/callgrind.json; ``--annotate N`` also prints
the N C functions (CPython's evaluator, dict lookups, the allocator, protobuf's upb) that
the extra jobs of the large run cost, per job: the difference of the two runs' profiles.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "callgrind.json"
_TOTAL = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.MULTILINE)
# "1,234,567 (12.34%)  path/file.c:function [lib]" lines of callgrind_annotate.
_FUNCTION = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+(\S+?)(?: \[[^\]]*\])?$", re.MULTILINE)


def instructions(jobs: int, batch: int, durable: bool, out: Path, metrics: bool = True) -> int:
    """Ir of one hotpath run under callgrind."""
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "bench.hotpath",
        "--jobs",
        str(jobs),
        "--batch",
        str(batch),
    ]
    if durable:
        cmd.append("--durable")
    if not metrics:
        cmd.append("--no-metrics")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    root = Path(__file__).resolve().parent.parent
    subprocess.run(cmd, check=True, env=env, cwd=root, capture_output=True)
    m = _TOTAL.search(out.read_bytes())
    if m is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(m.group(1))


def _functions(out: Path) -> dict[str, int]:
    """Ir per C function of one run, from callgrind_annotate."""
    report = subprocess.run(
        ["callgrind_annotate", "--threshold=100", str(out)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found: dict[str, int] = {}
    for m in _FUNCTION.finditer(report):
        name = m.group(2).rsplit("/", 1)[-1]
        found[name] = found.get(name, 0) + int(m.group(1).replace(",", ""))
    return found


def _per_job_functions(tmp: Path, jobs: int) -> list[tuple[str, float]]:
    """The C functions the extra jobs of the large run cost, per job, largest first: the
    difference of the two runs, so start-up (parsing, imports) drops out."""
    small, large = _functions(tmp / "small.out"), _functions(tmp / "large.out")
    diff = {k: (v - small.get(k, 0)) / jobs for k, v in large.items()}
    return sorted(((k, v) for k, v in diff.items() if v > 0), key=lambda kv: -kv[1])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--small", type=int, default=1_000)
    p.add_argument("--large", type=int, default=3_000)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--durable", action="store_true", help="with the journal on")
    p.add_argument("--annotate", type=int, default=0, help="top N functions of the large run")
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument(
        "--no-metrics",
        action="store_true",
        help="without the metrics observer: the engine-only cycle its cost is held to",
    )
    ns = p.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (make bench-callgrind installs it)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="dispatchd-callgrind-") as tmp:
        started = time.monotonic()
        metrics = not ns.no_metrics
        small = instructions(ns.small, ns.batch, ns.durable, Path(tmp) / "small.out", metrics)
        large = instructions(ns.large, ns.batch, ns.durable, Path(tmp) / "large.out", metrics)
        per_job = (large - small) / (ns.large - ns.small)
        if ns.annotate:
            top = _per_job_functions(Path(tmp), ns.large - ns.small)
            for name, ir in top[: ns.annotate]:
                print(f"{ir:>10,.0f} Ir/job {ir / per_job:6.1%}  {name}")
    doc = {
        "ir_per_job": round(per_job),
        "what": "submit (SubmitBatch) + dispatch + ack, server-side Python and protobuf",
        "small_jobs": ns.small,
        "large_jobs": ns.large,
        "batch": ns.batch,
        "durable": ns.durable,
        "metrics": metrics,
        "ir_small": small,
        "ir_large": large,
        "seconds": round(time.monotonic() - started, 1),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    ns.output.parent.mkdir(parents=True, exist_ok=True)
    ns.output.write_text(json.dumps(doc, indent=2) + "\n")
    kind = "durable" if ns.durable else "memory"
    print(f"instructions per job ({kind}, batch {ns.batch}): {per_job:,.0f}  -> {ns.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
