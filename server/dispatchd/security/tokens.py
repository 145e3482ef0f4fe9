"""Bearer tokens by role, read from the --auth-tokens file.

The file has one token per line: ``ROLE TOKEN [NAME]``, separated by blanks; ``#`` starts a
comment, blank lines are skipped::

    # role   token                              name
    admin    9c1f0e6d2b7a4c58b3e1a0f4d6c2b8e7     ops
    submit   4e8a1c7f0b2d9e6a5c3f8b1d7e0a2c4f     billing-api
    work     a7d3e9c1f5b0284e6d2c8a4f1b9e7d3c     thumbnailer

Roles: ``submit`` (Submit, SubmitBatch, and GetJob / WaitJob / CancelJob of its own jobs),
``work`` (the Work stream and the slot calls), ``admin`` (everything). A token listed on
several lines holds all their roles. NAME says who the caller is: it is stamped on the jobs
it submits, so two tokens with the same name (an old and a new one, while rotating) own the
same jobs. Without a name the identity is ``token-`` plus a short hash of the token, so a
name never reveals a token.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dispatchd.security.errors import TokenFileError

MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 4096
# A token travels as an HTTP/2 header value: printable ASCII, no blanks; no '#', which
# starts a comment in the file.
_TOKEN = re.compile(r"[\x21\x22\x24-\x7e]+")
_NAME = re.compile(r"[A-Za-z0-9._:@-]{1,64}")


class Role(enum.Enum):
    SUBMIT = "submit"
    WORK = "work"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a token belongs to and what it may do."""

    name: str
    roles: frozenset[Role]

    def has(self, role: Role) -> bool:
        return role in self.roles or Role.ADMIN in self.roles


class TokenTable:
    """The known tokens. :meth:`identify` compares the presented token with every known one in
    constant time, so the answer time says nothing about how much of a token was right."""

    def __init__(self, entries: Iterable[tuple[str, Identity]]) -> None:
        self._entries = [(token.encode(), identity) for token, identity in entries]
        if not self._entries:
            raise TokenFileError("no tokens: list at least one `ROLE TOKEN [NAME]` line")

    def __len__(self) -> int:
        return len(self._entries)

    def identify(self, token: str) -> Identity | None:
        presented = token.encode()
        found: Identity | None = None
        for known, identity in self._entries:
            # No early exit: every call does the same comparisons.
            if hmac.compare_digest(presented, known):
                found = identity
        return found


def default_name(token: str) -> str:
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:10]


def parse_tokens(text: str, source: str = "<tokens>") -> TokenTable:
    """Parses the token file format above. Raises TokenFileError naming ``source:line``."""
    roles: dict[str, set[Role]] = {}
    names: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{number}"
        fields = line.split()
        if len(fields) not in (2, 3):
            raise TokenFileError(f"{where}: expected `ROLE TOKEN [NAME]`, got {len(fields)} fields")
        role_text, token = fields[0], fields[1]
        try:
            role = Role(role_text.lower())
        except ValueError:
            choices = ", ".join(r.value for r in Role)
            raise TokenFileError(f"{where}: unknown role {role_text!r}; use {choices}") from None
        if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS or not _TOKEN.fullmatch(token):
            raise TokenFileError(
                f"{where}: a token must be {MIN_TOKEN_CHARS}-{MAX_TOKEN_CHARS} printable ASCII "
                "characters without blanks or '#' (e.g. `openssl rand -hex 32`)"
            )
        name = fields[2] if len(fields) == 3 else default_name(token)
        if not _NAME.fullmatch(name):
            raise TokenFileError(f"{where}: name {name!r} must be 1-64 of [A-Za-z0-9._:@-]")
        if names.setdefault(token, name) != name:
            raise TokenFileError(
                f"{where}: this token is already named {names[token]!r}; one token, one name"
            )
        roles.setdefault(token, set()).add(role)
    if not roles:
        raise TokenFileError(f"{source}: no tokens; list at least one `ROLE TOKEN [NAME]` line")
    return TokenTable((t, Identity(names[t], frozenset(r))) for t, r in roles.items())


def load_tokens(path: Path) -> TokenTable:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenFileError(f"cannot read --auth-tokens file {path}: {e}") from None
    return parse_tokens(text, str(path))
