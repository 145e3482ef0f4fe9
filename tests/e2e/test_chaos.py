"""The short version of ``make chaos``: kill -9 at random moments, during a drain, under
heavy writes and right after a purge; nothing acknowledged is lost, nothing runs that was
not submitted, a job runs twice only when its lease was lost, and no queue ever has more
leases held than its width. See tests/e2e/chaos.py for how each is measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from .chaos import KILL_MODES, run_chaos

KILLS = 5
JOBS = 5_000


@pytest.mark.timeout(300)
def test_kill_9_under_load_loses_nothing(tmp_path: Path) -> None:
    report = run_chaos(tmp_path, kills=KILLS, jobs=JOBS, seed=5)
    table = report.table()
    print(table)  # shown by -ra / -s, and on failure
    assert report.errors == [], table
    assert [k.mode for k in report.kills].count("drain") >= 1, table
    assert {k.mode for k in report.kills} == set(KILL_MODES), table
    assert report.acknowledged == JOBS, table
    assert report.lost == [], table
    assert report.unexpected == [], table
    assert report.bad_duplicates == [], table
    assert report.vanished_bugs == [], table
    assert report.reruns == [], table
    for q in report.queues:
        assert q.max_held <= q.width, f"{q.name}: {q.violation}\n{table}"
    assert report.passed, table
