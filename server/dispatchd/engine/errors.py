"""The engine's error family. The service layer maps each class to one gRPC status."""

from __future__ import annotations


class EngineError(Exception):
    """Root of every error the engine raises on purpose. The message is for a person."""


class InvalidArgument(EngineError):
    """The request is malformed; nothing was changed."""


class NotFound(EngineError):
    """The named job or queue does not exist (or is no longer retained)."""


class FailedPrecondition(EngineError):
    """The request is well-formed but the job or queue is in the wrong state for it."""


class ResourceExhausted(EngineError):
    """A size or count bound would be exceeded."""


class Unavailable(EngineError):
    """The engine is draining and takes no new work."""
