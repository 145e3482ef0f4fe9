"""Structured logs: readable text or one JSON object per line, and the engine's lifecycle
events as log lines.

Fields go in ``extra`` (``queue``, ``job_id``, ``worker_id``, ``reason``, ...); the text
format appends them as ``key=value``, the JSON format as keys.

Much of what is logged comes from clients (worker ids, queue names, error messages), so
the text format escapes control characters: a CR or LF in a worker id cannot start a line
of its own that looks like the server's. A field value with a blank, ``=`` or ``"`` is
quoted (logfmt style), so it cannot pose as another field either. Continuation lines (a
traceback) are indented. The JSON format needs none of this: ``json.dumps`` escapes.

At info level nothing is logged per job: only lifecycle events (start, restore, drain
steps, workers coming and going, lease expiries, dead jobs). At debug level every job
state change gets a line.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from collections.abc import Sequence
from typing import IO, Any

from opentelemetry import trace

from dispatchd.engine import (
    EngineObserver,
    FinishedJob,
    JobRecord,
    JobState,
    LeaseRecord,
)

log = logging.getLogger("dispatchd.jobs")

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: anything a
# terminal or a log reader may take as the end of a line (or as a command).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_QUOTES = re.compile(r'[\s="]')


def _escape_char(m: re.Match[str]) -> str:
    c = m.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def escape_text(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(_escape_char, text)


def field_value(value: object) -> str:
    """A field's value for the text format: bare when it is one plain word, else quoted
    with its quotes, backslashes and control characters escaped."""
    text = str(value)
    if text and not _NEEDS_QUOTES.search(text) and not _CONTROL.search(text):
        return text
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escape_text(quoted)}"'


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...``: one line per record (control
    characters escaped), then a traceback's lines, if any, indented."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_text(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        head, sep, trace_back = line.partition("\n")
        fields = _fields(record)
        if fields:
            head += " " + " ".join(f"{k}={field_value(v)}" for k, v in fields.items())
        if not sep:
            return head
        lines = (escape_text(t) for t in trace_back.split("\n"))
        return head + "".join(f"\n    {t}" for t in lines)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, msg, the ``extra``
    fields, the trace and span ids of the current span (when one is recording), and the
    exception text if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_fields(record))
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            out["trace_id"] = trace.format_trace_id(ctx.trace_id)
            out["span_id"] = trace.format_span_id(ctx.span_id)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(level: str, fmt: str, stream: IO[str] | None = None) -> None:
    """Sets up the root logger once at start-up (replacing earlier handlers)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request at INFO ("HTTP Request: POST ..."): one line per HTTP push
    # attempt, where the docs promise nothing per job at info. At debug they stay.
    quiet = logging.NOTSET if root.isEnabledFor(logging.DEBUG) else logging.WARNING
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)


#: Libraries that log per request at INFO: WARNING and up only, unless --log-level debug.
CHATTY_LIBRARIES = ("httpx", "httpcore")


class LifecycleLog(EngineObserver):
    """Info and warning lines for events an operator acts on; none per healthy job."""

    def lease_expired(self, lease: LeaseRecord) -> None:
        job = lease.job
        log.info(
            "lease of job %s expired on worker %s; the job goes back to pending",
            job.id,
            lease.worker.worker_id,
            extra={"queue": job.queue, "job_id": job.id, "worker_id": lease.worker.worker_id},
        )

    def job_finished(self, job: FinishedJob) -> None:
        if job.state_code == JobState.DEAD:
            message = job.error.message if job.error is not None else ""
            log.warning(
                "job %s is dead after %d attempts: %s",
                job.id,
                job.attempt,
                message,
                extra={"queue": job.queue, "job_id": job.id, "attempt": job.attempt},
            )


class StateLog(EngineObserver):
    """A debug line per job state change. Only installed when the level is debug, so
    info-level servers pay nothing for it."""

    def jobs_submitted(self, jobs: Sequence[JobRecord]) -> None:
        for job in jobs:
            log.debug("submitted", extra={"queue": job.queue, "job_id": job.id})

    def job_dispatched(self, lease: LeaseRecord) -> None:
        job = lease.job
        log.debug(
            "dispatched",
            extra={
                "queue": job.queue,
                "job_id": job.id,
                "attempt": job.attempt,
                "worker_id": lease.worker.worker_id,
            },
        )

    def job_finished(self, job: FinishedJob) -> None:
        log.debug(
            "finished",
            extra={"queue": job.queue, "job_id": job.id, "state": job.state.name},
        )

    def job_requeued(self, job: JobRecord, reason: str) -> None:
        log.debug("requeued", extra={"queue": job.queue, "job_id": job.id, "reason": reason})

    def job_retrying(self, job: JobRecord, due: float) -> None:
        log.debug(
            "retrying",
            extra={"queue": job.queue, "job_id": job.id, "attempt": job.attempt, "due": due},
        )
