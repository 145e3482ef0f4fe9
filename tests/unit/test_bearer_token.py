"""The one reading of ``Authorization: Bearer`` that /metrics and the dashboard share."""

from __future__ import annotations

import pytest

from dispatchd.loop_http import bearer_token


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("  BEARER abc", "abc"),
        ("Basic abc", ""),
        ("Bearer", ""),
        ("", ""),
        ("abc", ""),
    ],
)
def test_bearer_token_reads_only_the_bearer_scheme(header: str, token: str) -> None:
    assert bearer_token(header) == token
