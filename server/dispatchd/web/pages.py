"""The dashboard's pages: Jinja2 templates (web/templates/, package data) rendered from
engine views.

Autoescape is on for every template, so each value that came from a client (queue
names, ids, headers, payloads, errors, worker labels) is escaped unless a template marks
it safe, which none does with client data: a forgotten filter cannot become an XSS. The
pages have no inline script or style either, and the Content-Security-Policy forbids
them, so a slip could not run code anyway.

A page is rendered on the event loop, so what it shows is bounded whatever a job holds:
payloads and results show their first PREVIEW_BYTES, errors and header values their first
TEXT_SHOWN characters (ERROR_CELL in a table), a job its last ATTEMPTS_SHOWN attempts; each
cut says how much there was.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import jinja2

from dispatchd.backend import WorkerInfo
from dispatchd.engine import JobState, JobView, QueueFigures, QueueView
from dispatchd.web.bulk import PICK
from dispatchd.web.bulk import Preview as BulkPreview
from dispatchd.web.links import url
from dispatchd.web.overview import Attention, by_attention, chart, totals
from dispatchd.web.search import FIELDS, SCAN_CAP, Found
from dispatchd.web.sparks import throughput_cell, wait_cell
from dispatchd.web.trends import Rates, Trend

#: A queue's trend by name (None: no ring for it).
TrendOf = Callable[[str], Trend | None]

#: Bytes of a payload or result shown on the job page.
PREVIEW_BYTES = 4096
#: Characters of an error message or header value shown in a field.
TEXT_SHOWN = 1024
#: Characters of an error message shown in a table cell (dead jobs, attempts).
ERROR_CELL = 200
#: Attempts listed on a job page: the most recent ones.
ATTEMPTS_SHOWN = 50

NAV = [
    ("/", "Overview"),
    ("/workers", "Workers"),
    ("/schedules", "Schedules"),
    ("/logout", "Log out"),
]


def when(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def labels_text(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("dispatchd.web", "templates"),
    autoescape=True,  # every template, whatever its name
    undefined=jinja2.StrictUndefined,  # a misspelt name fails the test, not the page
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.globals.update(url=url, when=when, labels_text=labels_text, nav=NAV)


def render(template: str, title: str, *, here: str = "", live: str = "", **values: Any) -> bytes:
    page = _ENV.get_template(template)
    defaults = {"search_text": ""}
    return page.render(title=title, here=here, live=live, **{**defaults, **values}).encode()


def rate_text(v: QueueView) -> str:
    r = v.settings.rate
    return "-" if r is None else f"{r.per_second:g}/s burst {r.burst}"


#: The states a queue page can filter by, in the order its menu lists them.
FILTER_STATES = [s.name for s in JobState if s is not JobState.UNSPECIFIED]

#: The purge form's menu: every finished state, or one.
PURGE_STATES = ["ALL", "SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED", "DEAD"]

#: The columns of a queue's counts and settings, on the queues page and on its own page.
COUNT_COLUMNS = ["Pending", "Scheduled", "Underway", "Width", "Rate", "Paused", "Workers"]


def count_cells(v: QueueView) -> list[str]:
    """The cells under COUNT_COLUMNS, as text (the template escapes them)."""
    return [
        str(v.pending_count),
        str(v.scheduled_count),
        str(v.underway_count),
        str(v.settings.width),
        rate_text(v),
        "yes" if v.settings.paused else "no",
        str(v.worker_count),
    ]


def queue_row(v: QueueView, trend: Trend | None) -> dict[str, object]:
    """One queue as the JSON the live refresh reads (and the table shows)."""
    return {
        "name": v.name,
        "pending": v.pending_count,
        "scheduled": v.scheduled_count,
        "underway": v.underway_count,
        "width": v.settings.width,
        "rate": rate_text(v),
        "paused": v.settings.paused,
        "throttled_until": v.throttled_until,
        "throttled_keys": v.throttled_key_count,
        "workers": v.worker_count,
        "bucket_seconds": trend.bucket_seconds if trend else None,
        "throughput": trend.throughput if trend else None,
        "wait": trend.wait if trend else None,
    }


def queues_json(views: Sequence[QueueView], trend_of: TrendOf) -> bytes:
    return json.dumps({"queues": [queue_row(v, trend_of(v.name)) for v in views]}).encode()


@dataclass(frozen=True, slots=True)
class Fleet:
    """What the overview reads: the backend's queues, workers and fleet counts (the
    chart), this process's rings (sparklines, dead in the window)."""

    views: Sequence[QueueView]
    workers: Sequence[WorkerInfo]
    trends: dict[str, Trend | None]
    rates: Rates | None
    shared: bool
    """Several replicas share the queues (Redis): the chart sums every replica's."""
    figures: Mapping[str, QueueFigures] = field(default_factory=dict)
    """The backend's figures by queue name (dead and failed counts, why jobs wait)."""
    now: float = 0.0
    rated: list[tuple[QueueView, Attention]] | None = None
    """The queues by attention (overview.by_attention), when the caller sorted them
    already (in slices, between yields to the loop)."""


#: Queues the overview lists unless asked for all (?all=1): those needing attention most.
OVERVIEW_ROWS = 200


def _overview(fleet: Fleet, every: bool) -> dict[str, Any]:
    rated = fleet.rated
    if rated is None:
        rated = by_attention(fleet.views, fleet.trends, fleet.figures, fleet.now)
    shown = rated if every else rated[:OVERVIEW_ROWS]
    return {
        "totals": totals(fleet.views, fleet.workers, fleet.trends, fleet.rates, fleet.figures),
        "rated": shown,
        "hidden": len(rated) - len(shown),
        "chart": chart(fleet.rates) if fleet.rates else None,
    }


def overview_json_parts(fleet: Fleet, every: bool = False) -> Iterator[str]:
    """The overview as the live refresh reads it (totals, the chart, queues by attention),
    in pieces: a caller on the event loop may yield between them, so a thousand queues
    never hold the loop for one long stretch."""
    o = _overview(fleet, every)
    # "at": when it was computed, so a page drawn later ignores an older answer (a
    # pushed or cached one can be up to a second old) instead of dropping newer rows.
    head = {"at": fleet.now, "totals": asdict(o["totals"]), "chart": o["chart"]}
    yield json.dumps(head)[:-1] + ', "queues": ['
    for i, (v, a) in enumerate(o["rated"]):
        row = queue_row(v, fleet.trends[v.name])
        row["attention"] = a.reason
        row["level"] = a.level
        yield ("," if i else "") + json.dumps(row)
    yield "]}"


def overview_json(fleet: Fleet, every: bool = False) -> bytes:
    return "".join(overview_json_parts(fleet, every)).encode()


def overview_page(fleet: Fleet, csrf: str, every: bool = False) -> bytes:
    o = _overview(fleet, every)
    rows = [
        (
            v,
            a,
            count_cells(v),
            throughput_cell(fleet.trends[v.name]),
            wait_cell(fleet.trends[v.name]),
        )
        for v, a in o["rated"]
    ]
    return render(
        "overview.html",
        "Overview",
        here="/",
        live="overview",
        rows=rows,
        totals=o["totals"],
        hidden=o["hidden"],
        chart=o["chart"],
        shared=fleet.shared,
        at=repr(fleet.now),
        count_columns=COUNT_COLUMNS,
        pick=PICK,
        csrf=csrf,
    )


def throttle_notes(v: QueueView) -> list[str]:
    """The throttle hold (docs/rate-limits.md) while there is one: until when and why; the
    adaptive rate in force and the quotas' counts, when the queue has them. Text: the
    template escapes it."""
    notes = []
    if v.throttled_until is not None:
        notes.append(
            f"Throttled until {when(v.throttled_until)}: {v.throttle_reason}. "
            "Nothing of the queue is dispatched before."
        )
    if v.throttled_key_count:
        notes.append(f"{v.throttled_key_count} fairness key(s) held by a throttle signal.")
    if v.settings.adaptive is not None and v.settings.rate is not None:
        notes.append(
            f"Adaptive rate: {v.effective_rate:.4g}/s in force now "
            f"(configured {v.settings.rate.per_second:g}/s)."
        )
    if v.window_usage:
        used = "; ".join(
            f"{n} of {w.limit} per {w.period:g} s"
            for w, (_, _, n) in zip(v.settings.windows, v.window_usage, strict=False)
        )
        notes.append(f"Quotas used in their current windows: {used}.")
    return notes


def queue_page(
    v: QueueView,
    pending: Sequence[JobView],
    next_token: str,
    underway: Sequence[JobView],
    dead: Sequence[JobView],
    csrf: str,
) -> bytes:
    r = v.settings.rate
    return render(
        "queue.html",
        f"Queue {v.name}",
        live="queue",
        v=v,
        cells=count_cells(v),
        count_columns=COUNT_COLUMNS,
        rate_per_second=f"{r.per_second:g}" if r else "",
        rate_burst=str(r.burst) if r else "0",
        pending=pending,
        next_token=next_token,
        underway=underway,
        dead=dead,
        error_cell=ERROR_CELL,
        states=FILTER_STATES,
        purge_states=PURGE_STATES,
        throttle=throttle_notes(v),
        csrf=csrf,
    )


def queue_state_page(
    v: QueueView, state: JobState, jobs: Sequence[JobView], next_token: str, csrf: str
) -> bytes:
    """One state's jobs of a queue, 50 a page."""
    return render(
        "queue_state.html",
        f"Queue {v.name}",
        v=v,
        throttle=throttle_notes(v),
        cells=count_cells(v),
        count_columns=COUNT_COLUMNS,
        chosen=state,
        states=FILTER_STATES,
        jobs=jobs,
        next_token=next_token,
        error_cell=ERROR_CELL,
        csrf=csrf,
    )


def search_page(text: str, field: str, queue: str, found: Found | None) -> bytes:
    return render(
        "search.html",
        "Find a job",
        search_text=text,
        text=text,
        field=field,
        fields=FIELDS,
        queue=queue,
        found=found,
        cap=SCAN_CAP,
    )


@dataclass(frozen=True, slots=True)
class Preview:
    size: int
    """The whole payload's length in bytes."""
    kind: str
    """"text" or "hex"."""
    note: str
    """How much was left out ("" when nothing was)."""
    text: str


#: Control characters that make decodable bytes binary all the same (tab, CR, LF are text).
_BINARY = frozenset(range(32)) - {9, 10, 13}


def _as_text(shown: bytes, cut: bool) -> str | None:
    """``shown`` as UTF-8 text, or None for binary. A cut may split a character: up to
    three trailing bytes of it are dropped rather than calling the whole thing binary."""
    for trim in range(4 if cut else 1):
        try:
            text = shown[: len(shown) - trim].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return None if any(ord(c) in _BINARY for c in text) else text
    return None


def preview(data: bytes, content_type: str) -> Preview:
    """Text (or indented JSON) when it is UTF-8 text, hex otherwise; capped."""
    shown = data[:PREVIEW_BYTES]
    cut = len(data) > PREVIEW_BYTES
    note = f" (first {PREVIEW_BYTES} of {len(data)} bytes)" if cut else ""
    text = _as_text(shown, cut)
    if text is None:
        return Preview(len(data), "hex", note, shown.hex(" ", 1))
    if not cut and "json" in content_type:
        with contextlib.suppress(ValueError):  # not JSON after all: shown as text
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    return Preview(len(data), "text", note, text)


def job_fields(j: JobView) -> list[tuple[str, object]]:
    fields: list[tuple[str, object]] = [
        ("Queue", j.queue),
        ("State", j.state.name),
        ("Priority", j.priority),
        ("Attempt", j.attempt),
        ("Submitted", when(j.submit_time)),
        ("Not before", when(j.not_before)),
        ("Expires", when(j.expire_at)),
        ("Dispatched", when(j.dispatch_time)),
        ("Finished", when(j.finish_time)),
        ("Worker", j.worker_id or "-"),
        ("Lease deadline", when(j.lease.deadline) if j.lease else "-"),
        ("Content type", j.content_type or "-"),
        ("Ordering key", j.ordering_key or "-"),
        ("Fairness key", j.fairness_key or "-"),
        ("Idempotency key", j.idempotency_key or "-"),
        ("Error", j.error.message if j.error else "-"),
        ("Progress", _progress(j)),
        ("Batch", j.batch_id or "-"),
        ("Parents", ", ".join(j.parent_ids[:PARENTS_SHOWN]) or "-"),
        ("Cancel reason", j.cancel_reason or "-"),
    ]
    return fields + [(f"Header {k}", v) for k, v in sorted(j.headers.items())]


#: Parent ids listed on a job page.
PARENTS_SHOWN = 20


def _progress(j: JobView) -> str:
    """A worker's latest progress report: percent, message and when."""
    if j.progress is None:
        return "-"
    percent, message, at = j.progress
    share = f"{percent}%" if percent is not None else ""
    return " ".join(x for x in (share, message, f"({when(at)})") if x)


#: The job page's fields its live refresh rewrites (the rest never change).
LIVE_FIELDS = (
    "Progress",
    "Cancel reason",
    "State",
    "Priority",
    "Attempt",
    "Not before",
    "Dispatched",
    "Finished",
    "Worker",
    "Lease deadline",
    "Error",
)


def job_json(j: JobView) -> bytes:
    """The job page's changing fields, as its live refresh reads them (text, capped)."""
    fields = {k: str(v)[:TEXT_SHOWN] for k, v in job_fields(j) if k in LIVE_FIELDS}
    return json.dumps({"id": j.id, "finished": j.state.finished, "fields": fields}).encode()


def job_page(j: JobView, csrf: str) -> bytes:
    return render(
        "job.html",
        f"Job {j.id}",
        live="job",
        j=j,
        fields=job_fields(j),
        payload=preview(j.payload, j.content_type),
        result=preview(j.result, "") if j.result else None,
        attempts=j.attempts[-ATTEMPTS_SHOWN:],
        text_shown=TEXT_SHOWN,
        error_cell=ERROR_CELL,
        csrf=csrf,
    )


def workers_page(workers: Sequence[WorkerInfo], shared: bool = False) -> bytes:
    """Every connected worker; with several replicas, which one holds its stream."""
    fleet = shared or any(w.replica for w in workers)
    rows = [(w, _free(w)) for w in _ordered(workers)]
    replicas = sorted({w.replica for w in workers if w.replica})
    return render(
        "workers.html",
        "Workers",
        here="/workers",
        live="workers",
        rows=rows,
        fleet=fleet,
        replicas=replicas,
    )


def confirm_page(
    action: str, form: dict[str, str], csrf: str, what: str, bulk: BulkPreview | None = None
) -> bytes:
    fields = {k: v for k, v in form.items() if k != "csrf"}
    fields["confirm"] = "yes"
    back = url("queues", form["queue"]) if "queue" in form and bulk else "/"
    return render(
        "confirm.html",
        "Confirm",
        action=action,
        fields=fields,
        csrf=csrf,
        what=what,
        bulk=bulk,
        back=back,
    )


def done_page(message: str, back: str) -> bytes:
    return render("done.html", "Done", message=message, back=back)


def login_page(auth_on: bool) -> bytes:
    return render("login.html", "Login", auth_on=auth_on)


def logout_page(csrf: str) -> bytes:
    return render("logout.html", "Log out", here="/logout", csrf=csrf)


def worker_row(w: WorkerInfo) -> dict[str, object]:
    """One worker as the workers page's live refresh reads it."""
    return {
        "worker_id": w.worker_id,
        "labels": labels_text(w.labels),
        "queues": ", ".join(w.queues),
        "credits": f"{_free(w)} free of {w.max_in_flight}",
        "held": w.held,
        "held_jobs": list(w.held_jobs),
        "draining": "yes" if w.draining else "no",
        "connected": when(w.connect_time),
        "replica": w.replica,
    }


def _free(w: WorkerInfo) -> int:
    return 0 if w.draining else max(0, w.max_in_flight - w.held)


def _ordered(workers: Sequence[WorkerInfo]) -> list[WorkerInfo]:
    return sorted(workers, key=lambda w: (w.replica, w.connect_time, w.worker_id))


def workers_json(workers: Sequence[WorkerInfo]) -> bytes:
    return json.dumps({"workers": [worker_row(w) for w in _ordered(workers)]}).encode()
