"""The engine's error family. The service layer maps each class to one gRPC status, and the
facts an error carries (which field, which stable reason, when to retry) to the standard
error details (google.rpc.BadRequest, ErrorInfo, RetryInfo): service/errors.py."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import ClassVar, Self


class Reason(StrEnum):
    """Every ErrorInfo.reason the server sends: a closed list, documented in docs/errors.md
    with its status code. Clients branch on these, never on message text."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    QUEUE_FULL = "QUEUE_FULL"
    TOO_MANY_PENDING = "TOO_MANY_PENDING"
    TOO_MANY_QUEUES = "TOO_MANY_QUEUES"
    QUEUE_NOT_EMPTY = "QUEUE_NOT_EMPTY"
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    QUEUE_NOT_FOUND = "QUEUE_NOT_FOUND"
    SLOT_NOT_HELD = "SLOT_NOT_HELD"
    JOB_FINISHED = "JOB_FINISHED"
    JOB_NOT_RETRYABLE = "JOB_NOT_RETRYABLE"
    JOB_UNDERWAY = "JOB_UNDERWAY"
    STREAM_BACKLOG = "STREAM_BACKLOG"
    BACKEND_FAULT = "BACKEND_FAULT"
    UNSUPPORTED_BY_BACKEND = "UNSUPPORTED_BY_BACKEND"
    HELLO_REQUIRED = "HELLO_REQUIRED"
    HELLO_REPEATED = "HELLO_REPEATED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    DRAINING = "DRAINING"
    BACKEND_UNAVAILABLE = "BACKEND_UNAVAILABLE"
    JOURNAL_UNAVAILABLE = "JOURNAL_UNAVAILABLE"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_JOB_OWNER = "NOT_JOB_OWNER"
    SCHEDULE_NOT_FOUND = "SCHEDULE_NOT_FOUND"
    SCHEDULE_EXISTS = "SCHEDULE_EXISTS"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PARENT_NOT_FOUND = "PARENT_NOT_FOUND"
    BATCH_NOT_FOUND = "BATCH_NOT_FOUND"
    BATCH_EXISTS = "BATCH_EXISTS"
    BATCH_CLOSED = "BATCH_CLOSED"


#: Seconds a client should wait before it retries a refusal that a retry can cure: a draining
#: server (another replica, or this one after its restart), Redis back, a full queue drained
#: by its workers. Short: the client's own backoff grows it.
RETRY_SECONDS = 1.0


class EngineError(Exception):
    """Root of every error the engine raises on purpose. The message is for a person;
    ``field``, ``reason``, ``retry_after`` and ``metadata`` are for programs.

    ``field`` is the request field at fault as a path relative to the call that raised
    it (``jobs[3].queue``, ``width``, ``page_token``); the service layer roots it in the
    request (``queue.width`` for UpdateQueue). Empty when no one field is to blame."""

    default_reason: ClassVar[Reason] = Reason.FAILED_PRECONDITION

    def __init__(
        self,
        message: str,
        *,
        field: str = "",
        reason: Reason | None = None,
        retry_after: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.reason = reason or self.default_reason
        self.retry_after = retry_after
        """Seconds to wait before a retry may succeed; None when a retry will not help."""
        self.metadata = dict(metadata or {})
        """Facts for ErrorInfo.metadata (the job id, the queue, the bound passed)."""

    def under(self, prefix: str, *, label: bool = False) -> Self:
        """The same error with ``field`` rooted under ``prefix`` (``jobs[2]`` + ``queue`` is
        ``jobs[2].queue``; an error naming no field stays so); ``label`` also puts
        ``prefix: `` before the message."""
        message = f"{prefix}: {self}" if label else str(self)
        field = _join(prefix, self.field) if self.field else ""
        return type(self)(
            message,
            field=field,
            reason=self.reason,
            retry_after=self.retry_after,
            metadata=self.metadata,
        )

    def with_field(self, field: str) -> Self:
        """The same error naming another field (the service layer's own name for it)."""
        return type(self)(
            str(self),
            field=field,
            reason=self.reason,
            retry_after=self.retry_after,
            metadata=self.metadata,
        )


def _join(prefix: str, field: str) -> str:
    return f"{prefix}{field}" if field.startswith("[") else f"{prefix}.{field}"


class InvalidArgument(EngineError):
    """The request is malformed; nothing was changed."""

    default_reason = Reason.INVALID_ARGUMENT


class NotFound(EngineError):
    """The named job or queue does not exist (or is no longer retained)."""

    default_reason = Reason.NOT_FOUND


class AlreadyExists(EngineError):
    """What the request would create exists already (a schedule id); nothing changed."""

    default_reason = Reason.ALREADY_EXISTS


class FailedPrecondition(EngineError):
    """The request is well-formed but the job or queue is in the wrong state for it."""

    default_reason = Reason.FAILED_PRECONDITION


class ResourceExhausted(EngineError):
    """A size or count bound would be exceeded."""

    default_reason = Reason.RESOURCE_EXHAUSTED


class Unavailable(EngineError):
    """The engine is draining and takes no new work, or its store cannot be reached: a
    retry (after ``retry_after``, on this server or another) may succeed."""

    default_reason = Reason.UNAVAILABLE

    def __init__(
        self,
        message: str,
        *,
        field: str = "",
        reason: Reason | None = None,
        retry_after: float | None = RETRY_SECONDS,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            message, field=field, reason=reason, retry_after=retry_after, metadata=metadata
        )


class Internal(EngineError):
    """The server failed at something it should have done — a Redis script failed on one
    queue's data —: a bug or damaged data, not the caller's doing. The message names what
    failed; other queues are not affected."""

    default_reason = Reason.BACKEND_FAULT


def draining(what: str) -> Unavailable:
    """The refusal of a draining server: ``what`` it no longer does."""
    return Unavailable(f"server is draining and {what}", reason=Reason.DRAINING)
