"""Dashboard sessions: what the login cookie names instead of the admin token itself.

The cookie used to be the raw token, so a leaked cookie (a proxy log, a shared browser
profile) was a gRPC admin credential with no expiry and no way to end it. A session is
a random id the server maps to the token for a while: it expires, logout ends it, it
works only on the dashboard, and a restart ends them all (the map is in memory).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass

#: How long a login lasts without being used again (seconds).
SESSION_SECONDS = 8 * 3600.0
#: Sessions kept at once; logging in past it ends the oldest, so logins cannot grow memory.
MAX_SESSIONS = 1000


@dataclass(slots=True)
class _Session:
    token: str
    expires: float


class Sessions:
    """Session id -> admin token, each expiring ``SESSION_SECONDS`` after its last use."""

    def __init__(self, lifetime: float = SESSION_SECONDS, capacity: int = MAX_SESSIONS) -> None:
        self._lifetime = lifetime
        self._capacity = capacity
        self._by_id: OrderedDict[str, _Session] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._by_id)

    def open(self, token: str, now: float) -> str:
        while len(self._by_id) >= self._capacity:
            self._by_id.popitem(last=False)
        session_id = secrets.token_urlsafe(32)
        self._by_id[session_id] = _Session(token, now + self._lifetime)
        return session_id

    def token(self, session_id: str, now: float) -> str | None:
        """The token behind a live session (its expiry pushed back), or None."""
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if session.expires <= now:
            del self._by_id[session_id]
            return None
        session.expires = now + self._lifetime
        self._by_id.move_to_end(session_id)
        return session.token

    def close(self, session_id: str) -> None:
        self._by_id.pop(session_id, None)
