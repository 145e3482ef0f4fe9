"""The dashboard's schedules page: every schedule (the first SHOWN by id) with its next fire
time, its latest tick and what that did. Read-only; dispatchctl and the API change them."""

from __future__ import annotations

from collections.abc import Sequence

from dispatchd.engine.schedules import ScheduleRecord
from dispatchd.web.pages import render, when

#: Schedules listed on the page (a ListSchedules page).
SHOWN = 500
COLUMNS = ["Id", "Queue", "Spec", "Paused", "Next fire", "Last tick", "Outcome", "Counts"]


def _spec(rec: ScheduleRecord) -> str:
    spec = rec.spec
    parts = [f"cron {e}" for e in spec.cron_expressions]
    parts += [
        f"every {every}s" + (f" +{offset}s" if offset else "") for every, offset in spec.intervals
    ]
    zone = f" ({spec.time_zone})" if spec.time_zone and spec.cron_expressions else ""
    return ", ".join(parts) + zone


def _row(rec: ScheduleRecord) -> list[str]:
    """The cells under COLUMNS, as text (the template escapes them)."""
    last = rec.recent[0] if rec.recent else None
    fire = rec.next_fire()
    paused = "yes" + (f": {rec.note}" if rec.note else "") if rec.paused else "no"
    return [
        rec.id,
        rec.template.job.queue,
        _spec(rec),
        paused,
        when(fire),
        when(last.tick) if last else "-",
        last.outcome.name if last else "-",
        f"{rec.submitted} submitted, {rec.skipped} skipped, {rec.missed} missed",
    ]


def schedules_page(schedules: Sequence[ScheduleRecord], more: bool) -> bytes:
    rows = [_row(r) for r in schedules]
    return render(
        "schedules.html",
        "Schedules",
        here="/schedules",
        rows=rows,
        columns=COLUMNS,
        more=more,
        shown=SHOWN,
    )
