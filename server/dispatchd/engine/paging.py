"""Opaque page tokens for ListJobs: the sort key of the last job returned, bound to the
queue and state filter they were made for so a token cannot be replayed elsewhere."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from dispatchd.engine.errors import InvalidArgument

_VERSION = "1"
BAD_TOKEN = "page_token is not one this server made; start again without it"


@dataclass(frozen=True, slots=True)
class Cursor:
    """Resume after the job with key (k1, k2) in phase ``phase`` (a JobState number)."""

    phase: int
    k1: int
    k2: int


def encode(queue: str, state: int, cursor: Cursor) -> str:
    raw = f"{_VERSION}|{queue}|{state}|{cursor.phase}|{cursor.k1}|{cursor.k2}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(token: str, queue: str, state: int) -> Cursor:
    bad = InvalidArgument(BAD_TOKEN, field="page_token")
    try:
        padded = token + "=" * (-len(token) % 4)
        raw = base64.urlsafe_b64decode(padded.encode("ascii")).decode()
        version, tqueue, tstate, phase, k1, k2 = raw.split("|")
        cursor = Cursor(int(phase), int(k1), int(k2))
        token_state = int(tstate)
    except (ValueError, UnicodeError, binascii.Error):
        raise bad from None
    if version != _VERSION:
        raise bad
    if tqueue != queue or token_state != state:
        raise InvalidArgument(
            "page_token was made for another queue or state; pass the same queue and state",
            field="page_token",
        )
    return cursor
