"""Push targets as plain, validated values: where the server itself delivers a queue's jobs.

The engine only keeps and validates them (they are queue settings, persisted with the
rest); the service's pusher reads them and makes the calls.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from dispatchd.engine.errors import InvalidArgument

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MIN_TIMEOUT = 0.1
MAX_TIMEOUT = 600.0
DEFAULT_TIMEOUT = 30.0
MAX_URL_CHARS = 2048
MAX_TARGET_HEADERS = 64
MAX_TARGET_HEADER_BYTES = 16 * 1024
MAX_SECRET_BYTES = 1024
MAX_SUCCESS_CODES = 100
# The pusher sets these itself; a target header could only contradict it.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te"}
)
RESERVED_PREFIX = "x-dispatchd-"
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(r"[\r\n\x00]")


@dataclass(frozen=True, slots=True)
class HttpTarget:
    """A queue's jobs go to ``method url`` (body: the payload) instead of to workers.
    ``success_codes`` empty means 200-299; ``signing_secret`` empty means unsigned;
    ``keep_response_body`` false means a success leaves the job's result empty (the body
    is read and dropped), so a target cannot hand whatever it answers to the submitter."""

    url: str
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    success_codes: tuple[int, ...] = ()
    signing_secret: str = ""
    keep_response_body: bool = False

    def is_success(self, status: int) -> bool:
        if self.success_codes:
            return status in self.success_codes
        return 200 <= status <= 299

    @staticmethod
    def of(
        url: str,
        method: str = "",
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        success_codes: Iterable[int] = (),
        signing_secret: str = "",
        keep_response_body: bool = False,
    ) -> HttpTarget:
        """Validates everything; raises InvalidArgument naming the field."""
        _check_url(url)
        method = (method or "POST").upper()
        if method not in HTTP_METHODS:
            raise InvalidArgument(
                f"http_target.method must be one of {', '.join(HTTP_METHODS)}, got {method!r}",
                field="http_target.method",
            )
        pairs = _check_headers(headers or {})
        timeout = DEFAULT_TIMEOUT if timeout is None else timeout
        if not (math.isfinite(timeout) and MIN_TIMEOUT <= timeout <= MAX_TIMEOUT):
            raise InvalidArgument(
                f"http_target.timeout must be {MIN_TIMEOUT:g} s to {MAX_TIMEOUT:g} s "
                f"(10 min), got {timeout:g} s",
                field="http_target.timeout",
            )
        codes = tuple(sorted(set(success_codes)))
        if len(codes) > MAX_SUCCESS_CODES:
            raise InvalidArgument(
                f"http_target.success_codes lists more than {MAX_SUCCESS_CODES}",
                field="http_target.success_codes",
            )
        bad = [c for c in codes if not 100 <= c <= 599]
        if bad:
            raise InvalidArgument(
                f"http_target.success_codes must be 100-599, got {bad[0]}",
                field="http_target.success_codes",
            )
        if len(signing_secret.encode()) > MAX_SECRET_BYTES:
            raise InvalidArgument(
                f"http_target.signing_secret is longer than {MAX_SECRET_BYTES} bytes",
                field="http_target.signing_secret",
            )
        return HttpTarget(url, method, pairs, timeout, codes, signing_secret, keep_response_body)


def _check_url(url: str) -> None:
    if not url:
        raise InvalidArgument(
            "http_target.url is empty; give an http:// or https:// URL", field="http_target.url"
        )
    if len(url) > MAX_URL_CHARS:
        raise InvalidArgument(
            f"http_target.url is longer than {MAX_URL_CHARS} characters", field="http_target.url"
        )
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise InvalidArgument(
            "http_target.url contains whitespace or control characters", field="http_target.url"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as e:
        raise InvalidArgument(
            f"http_target.url {url!r} is not a valid URL: {e}", field="http_target.url"
        ) from None
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument(
            f"http_target.url must start with http:// or https://, got {url[:40]!r}",
            field="http_target.url",
        )
    if not parts.hostname:
        raise InvalidArgument(f"http_target.url {url!r} names no host", field="http_target.url")


def _check_headers(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    if len(headers) > MAX_TARGET_HEADERS:
        raise InvalidArgument(
            f"http_target.headers has {len(headers)} entries; the limit is {MAX_TARGET_HEADERS}",
            field="http_target.headers",
        )
    size = sum(len(k) + len(v) for k, v in headers.items())
    if size > MAX_TARGET_HEADER_BYTES:
        raise InvalidArgument(
            f"http_target.headers take {size} bytes; the limit is {MAX_TARGET_HEADER_BYTES}",
            field="http_target.headers",
        )
    for name, value in headers.items():
        if not HEADER_NAME.fullmatch(name):
            raise InvalidArgument(
                f"http_target.headers: {name!r} is not a valid header name",
                field="http_target.headers",
            )
        low = name.lower()
        if low in RESERVED_HEADERS or low.startswith(RESERVED_PREFIX):
            raise InvalidArgument(
                f"http_target.headers: {name} is set by the server and cannot be configured",
                field="http_target.headers",
            )
        if _BAD_VALUE.search(value):
            raise InvalidArgument(
                f"http_target.headers: the value of {name} contains CR, LF or NUL",
                field="http_target.headers",
            )
    return tuple(sorted(headers.items()))
