"""Who may talk to the dashboard: the Host a request names and the Origin a form posts from.

With auth off the dashboard is open to anyone who reaches its port, and a browser can be
made to reach it: a page on rebind.attacker.example whose name then resolves to 127.0.0.1
(DNS rebinding) is same-origin with the dashboard as far as the browser knows, so it reads
the CSRF token and posts a pause or a drain. A rebinding page can only name its own host,
so a dashboard that answers only requests for a name it knows (an IP literal, localhost,
or one the operator listed) is out of its reach; a cross-site form is refused by its
Origin header as well, whatever the CSRF token says.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from dispatchd.web.errors import WebError

#: Always allowed: they cannot be made to resolve to somewhere else by a page.
LOCAL_NAMES = frozenset({"localhost"})


def allowed_hosts(listed: Iterable[str]) -> frozenset[str]:
    """The lower-cased names from ``--dashboard-allowed-hosts`` (a comma list)."""
    return frozenset(n.strip().lower().rstrip(".") for n in listed if n.strip())


def _hostname(authority: str) -> str:
    """The host part of ``host[:port]`` or ``[v6]:port``, lower-cased."""
    parsed = urlsplit(f"//{authority}")
    try:
        name = parsed.hostname or ""
    except ValueError:
        return ""
    return name.lower().rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def check_host(headers: Mapping[str, str], allowed: frozenset[str]) -> None:
    """Refuses (421) a request whose Host is a name this dashboard was not told about."""
    name = _hostname(headers.get("host", ""))
    if not name:
        raise WebError(400, "a Host header is required")
    if _is_ip(name) or name in LOCAL_NAMES or name.endswith(".localhost") or name in allowed:
        return
    raise WebError(
        421,
        f"this dashboard does not answer for host {name!r}; "
        "list the names it is served under with --dashboard-allowed-hosts",
    )


def check_origin(headers: Mapping[str, str]) -> None:
    """Refuses (403) a POST whose Origin is not the dashboard's own (a cross-site form).
    A request without Origin is not a browser's cross-site form (browsers send it on
    every POST), so it is judged by its CSRF token alone."""
    origin = headers.get("origin")
    if origin is None:
        return
    host = headers.get("host", "").lower()
    parsed = urlsplit(origin)
    if origin == "null" or parsed.netloc.lower() != host:
        raise WebError(403, f"a form from origin {origin!r} cannot act on this dashboard")
