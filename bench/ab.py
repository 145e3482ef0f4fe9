"""``python -m bench.ab --base-tree DIR``: the client-path figures of this checkout against
those of another one, in the same command, for before/after figures of a change.

Method: ``DIR`` holds another commit's tree (``git archive COMMIT | tar -x -C DIR``). Two
servers run side by side, one from each tree (the other tree is put first on PYTHONPATH, so
its ``dispatchd`` and ``dispatchd_client`` are imported instead of this checkout's), and the
bench/client_path.py phases run against each in turn, the producer and worker children
importing the same tree's client as their server (bench/drive.py itself comes from this
checkout: run from its root). The order alternates per round (ABBA), so a drift in
the machine's load hits both sides alike. Medians per side and phase are printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bench import client_path, procs, rpc
from bench.measure import Measured

READY_TIMEOUT = 30.0
SIDES = ("base", "this")
KINDS = ("per_job", "burndown", "enforced_per_job", "enforced_burndown")


@contextmanager
def _tree(base: Path | None) -> Iterator[None]:
    """Children started inside import ``base``'s packages (None: this checkout's)."""
    saved = os.environ.get("PYTHONPATH")
    if base is not None:
        paths = [base / "server", base / "clients" / "python"]
        os.environ["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    else:
        os.environ.pop("PYTHONPATH", None)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


async def _ready(api: rpc.Dispatchd, server: procs.ServerProcess) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if await api.serving():
            return
        server.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{server.name} not serving after {READY_TIMEOUT:.0f} s")
        await asyncio.sleep(0.05)


async def _run(base: Path, rounds: int, kinds: Sequence[str], shape: client_path.Shape) -> None:
    servers = {}
    os.environ.setdefault(client_path.PROBE_ENV, "1")  # the servers' slot turnaround probe
    for side in SIDES:
        with _tree(base if side == "base" else None):
            servers[side] = procs.start_dispatchd(procs.free_port())
    runs: dict[tuple[str, str], list[Measured]] = {}
    turns: dict[tuple[str, str], list[client_path.Turnaround]] = {}
    try:
        apis = {side: rpc.Dispatchd(rpc.channel(s.target)) for side, s in servers.items()}
        for side, api in apis.items():
            await _ready(api, servers[side])
        for r in range(rounds):
            for kind in kinds:
                for side in SIDES if r % 2 == 0 else SIDES[::-1]:
                    run = client_path.per_job if kind.endswith("per_job") else client_path.burndown
                    with _tree(base if side == "base" else None):
                        one = await run(
                            apis[side], servers[side], f"ab.{kind}.{r}", shape, kind[0] == "e"
                        )
                    m, t = one
                    runs.setdefault((kind, side), []).append(m)
                    turns.setdefault((kind, side), []).append(t)
                    print(
                        f"round {r + 1} {kind:<18} {side:<4} {m.jobs_per_s:8,.0f}/s  server "
                        f"{m.server_cpu_us_per_job:6.1f} us/job  client "
                        f"{m.client_cpu_us_per_job:6.1f} us/job  other {m.other_cpu_pct:3.0f}%  "
                        f"turnaround p50/p99 server {t.server_p50_us:.0f}/{t.server_p99_us:.0f}"
                        f" worker {t.worker_p50_us:.0f}/{t.worker_p99_us:.0f} us",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        procs.stop_all(list(servers.values()))
    for (kind, side), ms in sorted(runs.items()):
        print(
            f"{kind:<18} {side:<4} jobs/s {statistics.median(m.jobs_per_s for m in ms):8,.0f}  "
            f"server us/job {statistics.median(m.server_cpu_us_per_job for m in ms):6.1f}  "
            f"client us/job {statistics.median(m.client_cpu_us_per_job for m in ms):6.1f}  "
            f"other % {statistics.median(m.other_cpu_pct for m in ms):3.0f}  turnaround "
            f"server p50 {statistics.median(t.server_p50_us for t in turns[kind, side]):5.0f} "
            f"p99 {statistics.median(t.server_p99_us for t in turns[kind, side]):6.0f} us  "
            f"worker gap p50 {statistics.median(t.worker_p50_us for t in turns[kind, side]):5.0f} "
            f"p99 {statistics.median(t.worker_p99_us for t in turns[kind, side]):6.0f} us"
        )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--base-tree", type=Path, required=True, help="another commit's tree")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-job-jobs", type=int, default=20_000)
    p.add_argument("--burndown-jobs", type=int, default=50_000)
    p.add_argument("--kinds", default=",".join(KINDS), help=f"some of {','.join(KINDS)}")
    ns = p.parse_args(argv)
    kinds = [k for k in ns.kinds.split(",") if k]
    if not set(kinds) <= set(KINDS):
        p.error(f"--kinds: choose among {', '.join(KINDS)}")
    shape = client_path.Shape(per_job_jobs=ns.per_job_jobs, burndown_jobs=ns.burndown_jobs)
    asyncio.run(_run(ns.base_tree.resolve(), ns.rounds, kinds, shape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
