"""Structured logs: readable text or one JSON object per line, and the engine's lifecycle
events as log lines.

Fields go in ``extra`` (``queue``, ``job_id``, ``worker_id``, ``reason``, ...); the text
format appends them as ``key=value``, the JSON format as keys. At info level nothing is
logged per job: only lifecycle events (start, restore, drain steps, workers coming and
going, lease expiries, dead jobs). At debug level every job state change gets a line.
"""

from __future__ import annotations

import datetime
import json
import logging
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


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        head, sep, trace_back = line.partition("\n")
        return f"{head} {extra}{sep}{trace_back}"


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
