"""Links between the dashboard's pages (shared by the pages and the actions' answers)."""

from __future__ import annotations

from urllib.parse import quote


def url(*parts: str) -> str:
    # "@" and ":" are allowed in a path segment (RFC 3986 pchar) and appear in ids and names.
    return "/" + "/".join(quote(p, safe="@:") for p in parts)
