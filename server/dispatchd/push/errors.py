"""The push package's error family."""

from __future__ import annotations


class PushError(Exception):
    """Root of the errors the HTTP pusher raises on purpose."""


class PushConfigError(PushError):
    """The pusher cannot start (an unreadable CA bundle); the message says which file."""


class InvalidJobHeader(PushError):
    """A job header cannot be sent over HTTP; the attempt fails without a retry."""


class TargetForbidden(PushError):
    """A target's host has no address the server may call (loopback, private, metadata,
    ... and not in --http-allow-cidr); the attempt fails without a retry."""
