"""HTML for the dashboard's pages, rendered from engine views.

Every value that came from a client (queue names, ids, headers, payloads, errors, worker
labels) passes through ``esc`` or ``attr``; the page has no inline script or style, and
the Content-Security-Policy header forbids them, so a slip cannot run code either.

A page is rendered on the event loop, so what it shows is bounded whatever a job holds:
payloads and results show their first PREVIEW_BYTES, errors and header values their first
TEXT_SHOWN characters (ERROR_CELL in a table), a job its last ATTEMPTS_SHOWN attempts; each
cut says how much there was.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from html import escape
from urllib.parse import quote

from dispatchd.backend import WorkerInfo
from dispatchd.engine import JobView, QueueView
from dispatchd.web.sparks import throughput_cell, wait_cell
from dispatchd.web.trends import Trend

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


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def url(*parts: str) -> str:
    # "@" and ":" are allowed in a path segment (RFC 3986 pchar) and appear in ids and names.
    return "/" + "/".join(quote(p, safe="@:") for p in parts)


def when(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def layout(title: str, body: str, *, live: bool = False) -> bytes:
    script = '<script src="/static/dashboard.js" defer></script>' if live else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{esc(title)} - dispatchd</title>"
        '<link rel=stylesheet href="/static/dashboard.css">'
        '<link rel=icon href="/static/favicon.svg" type="image/svg+xml">'
        f"{script}</head><body><nav><a href='/'>Queues</a> <a href='/workers'>Workers</a>"
        " <a href='/schedules'>Schedules</a> <a href='/logout'>Log out</a>"
        f"</nav><h1>{esc(title)}</h1>{body}</body></html>"
    ).encode()


def cut(text: str, limit: int) -> str:
    """``text`` escaped, cut to ``limit`` characters with a note of its full length."""
    if len(text) <= limit:
        return esc(text)
    return esc(text[:limit]) + f" <em>(first {limit} of {len(text)} characters)</em>"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], table_id: str = "") -> str:
    """Cells are already HTML (escaped by the caller); headers are constant text."""
    ident = f" id={table_id}" if table_id else ""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def rate_text(v: QueueView) -> str:
    r = v.settings.rate
    return "-" if r is None else f"{r.per_second:g}/s burst {r.burst}"


#: The columns of a queue's counts and settings, on the queues page and on its own page.
COUNT_COLUMNS = ["Pending", "Scheduled", "Underway", "Width", "Rate", "Paused", "Workers"]


def count_cells(v: QueueView) -> list[str]:
    """The cells under COUNT_COLUMNS, escaped."""
    return [
        str(v.pending_count),
        str(v.scheduled_count),
        str(v.underway_count),
        str(v.settings.width),
        esc(rate_text(v)),
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


def queues_page(views: Sequence[QueueView], csrf: str, trend_of: TrendOf) -> bytes:
    rows = [
        [
            f"<a href='{esc(url('queues', v.name))}'>{esc(v.name)}</a>",
            *count_cells(v),
            throughput_cell(trend),
            wait_cell(trend),
        ]
        for v, trend in ((v, trend_of(v.name)) for v in views)
    ]
    cols = ["Queue", *COUNT_COLUMNS, "Throughput", "Wait"]
    body = table(cols, rows, "queues") if rows else "<p>No queues yet.</p>"
    grace = _field("grace", "Grace seconds (empty: the server's --drain-grace)")
    drain = action_form("drain", {}, "Drain the server", csrf, grace)
    return layout("Queues", body + "<h2>Server</h2>" + drain, live=True)


def action_form(action: str, fields: dict[str, str], label: str, csrf: str, extra: str = "") -> str:
    """A POST form for one action; the server answers it with a confirmation page."""
    hidden = "".join(
        f"<input type=hidden name='{esc(k)}' value='{esc(v)}'>" for k, v in fields.items()
    )
    return (
        f"<form method=post action='/actions/{esc(action)}' class=action>"
        f"<input type=hidden name=csrf value='{esc(csrf)}'>{hidden}{extra}"
        f"<button type=submit>{esc(label)}</button></form>"
    )


def _field(name: str, label: str, value: str = "") -> str:
    return f"<label>{esc(label)} <input name={name} value='{esc(value)}' size=8></label>"


def queue_actions(v: QueueView, csrf: str) -> str:
    q = {"queue": v.name}
    pause = (
        action_form("resume", q, "Resume", csrf)
        if v.settings.paused
        else action_form("pause", q, "Pause", csrf)
    )
    r = v.settings.rate
    width = v.settings.width
    return (
        pause
        + action_form("width", q, "Set width", csrf, _field("width", "Width", str(width)))
        + action_form(
            "rate",
            q,
            "Set rate",
            csrf,
            _field("per_second", "Per second (empty: no limit)", f"{r.per_second:g}" if r else "")
            + _field("burst", "Burst", str(r.burst) if r else "0"),
        )
        + action_form("delete_queue", q, "Delete queue", csrf)
    )


def job_rows(jobs: Sequence[JobView], csrf: str, *, dead: bool = False) -> list[list[str]]:
    rows = []
    for j in jobs:
        link = f"<a href='{esc(url('jobs', j.id))}'>{esc(j.id)}</a>"
        row = [link, str(j.priority), str(j.attempt), esc(when(j.submit_time))]
        if dead:
            row.append(cut(j.error.message if j.error else "", ERROR_CELL))
            row.append(action_form("retry", {"job": j.id}, "Retry", csrf))
        elif j.lease is not None:
            row.append(esc(j.worker_id))
            row.append(esc(when(j.lease.deadline)))
        rows.append(row)
    return rows


def throttle_note(v: QueueView) -> str:
    """The throttle hold (docs/rate-limits.md) while there is one: until when and why; the
    adaptive rate in force and the quotas' counts, when the queue has them."""
    notes = []
    if v.throttled_until is not None:
        notes.append(
            f"Throttled until {esc(when(v.throttled_until))}: {esc(v.throttle_reason)}. "
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
        notes.append(f"Quotas used in their current windows: {esc(used)}.")
    return "".join(f"<p class=throttled>{n}</p>" for n in notes)


def queue_page(
    v: QueueView,
    pending: Sequence[JobView],
    next_token: str,
    underway: Sequence[JobView],
    dead: Sequence[JobView],
    csrf: str,
) -> bytes:
    base = ["Job", "Priority", "Attempt", "Submitted"]
    info = table(COUNT_COLUMNS, [count_cells(v)]) + throttle_note(v)
    more = (
        f"<p><a href='{esc(url('queues', v.name))}?page={esc(quote(next_token))}'>Next page</a></p>"
        if next_token
        else ""
    )
    body = (
        info
        + queue_actions(v, csrf)
        + "<h2>Pending, in dispatch order</h2>"
        + table(base, job_rows(pending, csrf), "pending")
        + more
        + "<h2>Underway</h2>"
        + table([*base, "Worker", "Lease deadline"], job_rows(underway, csrf), "underway")
        + "<h2>Dead</h2>"
        + table([*base, "Error", ""], job_rows(dead, csrf, dead=True), "dead")
    )
    return layout(f"Queue {v.name}", body)


def preview(data: bytes, content_type: str) -> str:
    """Text (or indented JSON) when it decodes as UTF-8, hex otherwise; capped."""
    shown = data[:PREVIEW_BYTES]
    note = f" (first {PREVIEW_BYTES} of {len(data)} bytes)" if len(data) > PREVIEW_BYTES else ""
    try:
        text = shown.decode("utf-8")
    except UnicodeDecodeError:
        return f"<p>hex{esc(note)}</p><pre>{esc(shown.hex(' ', 1))}</pre>"
    if not note and "json" in content_type:
        with contextlib.suppress(ValueError):  # not JSON after all: shown as text
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    return f"<p>text{esc(note)}</p><pre>{esc(text)}</pre>"


def job_page(j: JobView, csrf: str) -> bytes:
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
    ]
    fields += [(f"Header {k}", v) for k, v in sorted(j.headers.items())]
    info = table(
        ["Field", "Value"], [[esc(k), cut(str(v), TEXT_SHOWN)] for k, v in fields], "fields"
    )
    body = (
        info
        + job_actions(j, csrf)
        + "<h2>Payload</h2>"
        + preview(j.payload, j.content_type)
        + ("<h2>Result</h2>" + preview(j.result, "") if j.result else "")
        + "<h2>Attempts</h2>"
        + attempts_table(j)
    )
    return layout(f"Job {j.id}", body)


def attempts_table(j: JobView) -> str:
    shown = j.attempts[-ATTEMPTS_SHOWN:]
    note = (
        f"<p>{len(j.attempts)} attempts; the last {len(shown)} are shown.</p>"
        if len(shown) < len(j.attempts)
        else ""
    )
    return note + table(
        ["#", "Worker", "Dispatched", "Finished", "HTTP", "Error"],
        [
            [
                str(a.number),
                esc(a.worker_id),
                esc(when(a.dispatch_time)),
                esc(when(a.finish_time)),
                str(a.http_status or "-"),
                cut(a.error.message, ERROR_CELL) if a.error else "-",
            ]
            for a in shown
        ],
        "attempts",
    )


def job_actions(j: JobView, csrf: str) -> str:
    actions = ""
    if not j.state.finished:
        actions += action_form("cancel", {"job": j.id}, "Cancel", csrf)
        actions += action_form(
            "reprioritize", {"job": j.id}, "Set priority", csrf, _field("priority", "Priority")
        )
    elif j.state.name in ("DEAD", "FAILED"):
        actions += action_form("retry", {"job": j.id}, "Retry", csrf)
    return actions


def held_jobs(w: WorkerInfo) -> str:
    links = [f"<a href='{esc(url('jobs', i))}'>{esc(i)}</a>" for i in w.held_jobs]
    more = f" and {w.held - len(w.held_jobs)} more" if w.held > len(w.held_jobs) else ""
    return f"{w.held}: " + ", ".join(links) + more if w.held else "0"


def labels_text(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def workers_page(workers: Sequence[WorkerInfo]) -> bytes:
    """Every connected worker; with several replicas, which one holds its stream."""
    fleet = any(w.replica for w in workers)
    rows = []
    for w in sorted(workers, key=lambda w: (w.replica, w.connect_time, w.worker_id)):
        free = max(0, w.max_in_flight - w.held) if not w.draining else 0
        row = [
            esc(w.worker_id),
            esc(labels_text(w.labels)),
            esc(", ".join(w.queues)),
            f"{free} free of {w.max_in_flight}",
            held_jobs(w),
            "yes" if w.draining else "no",
            esc(when(w.connect_time)),
        ]
        rows.append([*row, esc(w.replica)] if fleet else row)
    cols = ["Worker", "Labels", "Queues", "Credits", "Held jobs", "Draining", "Connected since"]
    if fleet:
        cols.append("Replica")
    return layout("Workers", table(cols, rows, "workers") if rows else "<p>No workers.</p>")


def confirm_page(action: str, form: dict[str, str], csrf: str, what: str) -> bytes:
    fields = {k: v for k, v in form.items() if k != "csrf"}
    fields["confirm"] = "yes"
    body = f"<p>{esc(what)}</p>" + action_form(action, fields, "Confirm", csrf)
    return layout("Confirm", body + "<p><a href='/'>Cancel</a></p>")


def done_page(message: str, back: str) -> bytes:
    return layout("Done", f"<p>{esc(message)}</p><p><a href='{esc(back)}'>Back</a></p>")


def login_page(auth_on: bool) -> bytes:
    if not auth_on:
        return layout("Login", "<p>Auth is off: no login needed.</p>")
    form = (
        "<form method=post action='/login'><label>Admin token "
        "<input type=password name=token autocomplete=off></label>"
        "<button type=submit>Log in</button></form>"
    )
    return layout("Login", form)


def logout_page(csrf: str) -> bytes:
    form = (
        f"<form method=post action='/logout'><input type=hidden name=csrf value='{esc(csrf)}'>"
        "<button type=submit>Log out</button></form>"
    )
    return layout("Log out", form)
