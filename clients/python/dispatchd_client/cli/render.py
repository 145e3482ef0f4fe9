"""How dispatchctl shows answers: aligned tables for people, proto JSON for scripts.

JSON output is the response message in the protobuf JSON mapping with the proto's own
(snake_case) field names, so it reads like the .proto and feeds ``jq`` directly: zero values
included, counts as numbers, timestamps as RFC 3339, durations as ``"30s"``, and bytes
(payload, result) base64-encoded, as that mapping says.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Sequence

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from dispatchd_client.v1 import dispatcher_pb2 as pb

QUEUE_COLUMNS = ("NAME", "PENDING", "SCHEDULED", "UNDERWAY", "WIDTH", "RATE", "PAUSED", "WORKERS")
JOB_COLUMNS = ("ID", "STATE", "PRIORITY", "ATTEMPT", "SUBMITTED", "WORKER")
#: Payloads longer than this are cut in the human view (the JSON view has them whole).
PREVIEW_CHARS = 200


def _as_dict(message: Message) -> dict[str, object]:
    # Zero values are printed too (a script should not have to know proto3 defaults), and
    # int64 counts as numbers where they fit, so `jq '.queues[].pending_count > 0'` works.
    return json_format.MessageToDict(
        message,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=True,
        unquote_int64_if_possible=True,
    )


def to_json(message: Message) -> str:
    return json.dumps(_as_dict(message), indent=2, sort_keys=True)


def to_json_line(message: Message) -> str:
    """One line per message, for ``watch --output json`` (JSON lines)."""
    return json.dumps(_as_dict(message), sort_keys=True)


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns two blanks apart; numbers are left-aligned too, like kubectl."""
    body = [list(header), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in body) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in body
    )


def state_name(state: int) -> str:
    name: str = pb.JobState.Name(state) if state in pb.JobState.values() else str(state)
    return name.removeprefix("JOB_STATE_")


#: The server's default max_throttle_bounces (engine/throttling.py), not shown.
DEFAULT_MAX_BOUNCES = 20


def when(ts: Timestamp, present: bool) -> str:
    if not present:
        return "-"
    t = ts.ToDatetime(tzinfo=datetime.UTC)
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def rate(queue: pb.Queue) -> str:
    if not queue.HasField("rate"):
        return "unlimited"
    r = queue.rate
    return f"{r.per_second:g}/s burst {r.burst}" if r.burst else f"{r.per_second:g}/s"


def queue_row(q: pb.Queue) -> list[str]:
    return [
        q.name,
        str(q.pending_count),
        str(q.scheduled_count),
        str(q.underway_count),
        str(q.width),
        rate(q),
        "yes" if q.paused else "no",
        str(q.worker_count),
    ]


def queues_table(queues: Iterable[pb.Queue]) -> str:
    return table(QUEUE_COLUMNS, (queue_row(q) for q in queues))


def job_row(job: pb.Job) -> list[str]:
    return [
        job.id,
        state_name(job.state),
        str(job.priority),
        str(job.attempt),
        when(job.submit_time, job.HasField("submit_time")),
        job.worker_id or "-",
    ]


def jobs_table(jobs: Iterable[pb.Job]) -> str:
    return table(JOB_COLUMNS, (job_row(j) for j in jobs))


def preview(data: bytes) -> str:
    """Text as text (cut at PREVIEW_CHARS), anything else as its size."""
    if not data:
        return "-"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(data)} bytes>"
    if not text.isprintable():
        return f"<{len(data)} bytes>"
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "..."


def job_details(job: pb.Job) -> str:
    """One ``field: value`` line per interesting field of one job."""
    lines = [
        ("id", job.id),
        ("queue", job.queue),
        ("state", state_name(job.state)),
        ("priority", str(job.priority)),
        ("attempt", str(job.attempt)),
        ("submitted", when(job.submit_time, job.HasField("submit_time"))),
        ("dispatched", when(job.dispatch_time, job.HasField("dispatch_time"))),
        ("finished", when(job.finish_time, job.HasField("finish_time"))),
        ("worker", job.worker_id or "-"),
        ("content type", job.content_type or "-"),
        ("payload", preview(job.payload)),
    ]
    if job.result:
        lines.append(("result", preview(job.result)))
    if job.HasField("error"):
        retry = "retryable" if job.error.retryable else "permanent"
        code = f"[{job.error.code}] " if job.error.code else ""
        lines.append(("error", f"{code}{job.error.message} ({retry})"))
    lines += [(f"header {k}", v) for k, v in sorted(job.headers.items())]
    width = max(len(k) for k, _ in lines) + 1
    return "\n".join(f"{k + ':':<{width}} {v}" for k, v in lines)


def http_target(t: pb.HttpTarget) -> str:
    """Method, URL and what is set: header names (never values: the server keeps those),
    signing, whether the response body is kept."""
    parts = [f"{t.method or 'POST'} {t.url}"]
    if t.header_names:
        parts.append("headers " + ", ".join(t.header_names))
    if t.signing_enabled:
        parts.append("signed")
    if t.keep_response_body:
        parts.append("keeps the response body")
    return "; ".join(parts)


def window_text(w: pb.RateWindow) -> str:
    period = w.period.seconds + w.period.nanos / 1e9
    for unit, seconds in (("d", 86_400), ("h", 3600), ("m", 60)):
        if period >= seconds and period % seconds == 0:
            return f"{w.used}/{w.limit} per {period / seconds:g}{unit}"
    return f"{w.used}/{w.limit} per {period:g}s"


def throttle_lines(q: pb.Queue) -> list[tuple[str, str]]:
    """The throttle hold (docs/rate-limits.md), shown only while there is one, and the bound
    on bounces when it is not the default."""
    lines = []
    if q.HasField("throttled_until"):
        until = when(q.throttled_until, True)
        lines.append(("THROTTLED UNTIL", f"{until} ({q.throttle_reason})"))
    if q.throttled_key_count:
        lines.append(("THROTTLED KEYS", str(q.throttled_key_count)))
    if q.max_throttle_bounces and q.max_throttle_bounces != DEFAULT_MAX_BOUNCES:
        lines.append(("MAX THROTTLE BOUNCES", str(q.max_throttle_bounces)))
    if q.windows:
        lines.append(("WINDOWS", "; ".join(window_text(w) for w in q.windows)))
    if q.HasField("adaptive"):
        a = q.adaptive
        quiet = a.quiet_interval.seconds + a.quiet_interval.nanos / 1e9
        step = f"+{a.increase:g}/s" if a.increase else "+5%"
        lines.append(
            (
                "ADAPTIVE",
                f"floor {a.floor:g}/s, x{a.decrease:g} per signal, {step} per {quiet:g}s quiet",
            )
        )
        lines.append(("EFFECTIVE RATE", f"{q.effective_rate:.4g}/s"))
    return lines


def queue_details(q: pb.Queue) -> str:
    lease = q.lease_duration.seconds + q.lease_duration.nanos / 1e9
    lines = [*zip(QUEUE_COLUMNS, queue_row(q), strict=True), ("LEASE", f"{lease:g}s")]
    if q.max_pending:
        lines.append(("MAX PENDING", str(q.max_pending)))
    if q.HasField("http_target"):
        lines.append(("HTTP TARGET", http_target(q.http_target)))
    lines += throttle_lines(q)
    width = max(len(k) for k, _ in lines) + 1
    return "\n".join(f"{(k.lower() + ':'):<{width}} {v}" for k, v in lines)


def event_line(resp: pb.WatchEventsResponse) -> str:
    """One WatchEvents message as a line: time, kind, queue, job (or batch), details, and
    the resume token last (for --from)."""
    if resp.WhichOneof("kind") == "missed":
        m = resp.missed
        return f"-- MISSED {m.reason}: {m.message} (last token {m.resume_token})"
    e = resp.event
    kind = pb.JobEventKind.Name(e.kind) if e.kind in pb.JobEventKind.values() else str(e.kind)
    parts = [
        when(e.time, e.HasField("time")),
        kind.removeprefix("JOB_EVENT_KIND_"),
        e.queue,
        e.job_id or f"batch:{e.batch_id}",
    ]
    if e.batch_id and e.job_id:
        parts.append(f"batch={e.batch_id}")
    if e.attempt:
        parts.append(f"attempt={e.attempt}")
    if e.worker_id:
        parts.append(f"worker={e.worker_id}")
    if e.HasField("progress"):
        p = e.progress
        pct = f"{p.percent}% " if p.HasField("percent") else ""
        parts.append(f"progress={pct}{p.message!r}")
    if e.HasField("error"):
        parts.append(f"error={e.error.message!r}")
    if e.HasField("batch_counts"):
        c = e.batch_counts
        parts.append(f"total={c.total} succeeded={c.succeeded} failed={c.failed + c.dead}")
    parts.append(f"token={e.resume_token}")
    return "  ".join(parts)
