"""The --auth-tokens file format and the token table."""

from __future__ import annotations

import re

import pytest

from dispatchd.security import Role, TokenFileError, parse_tokens
from dispatchd.security.policy import rule_for
from dispatchd.security.tokens import default_name

A = "a" * 16
B = "b" * 32


def test_lines_roles_names_and_comments() -> None:
    table = parse_tokens(
        f"""
        # role token name
        admin  {A}  ops   # trailing comment
        submit {B}
        work   {B}
        """
    )
    assert len(table) == 2
    ops = table.identify(A)
    assert ops is not None
    assert (ops.name, ops.roles) == ("ops", frozenset({Role.ADMIN}))
    assert ops.has(Role.WORK)  # admin holds every role
    both = table.identify(B)
    assert both is not None
    assert both.roles == {Role.SUBMIT, Role.WORK}
    assert both.name == default_name(B)
    assert B not in both.name  # the default name never shows the token
    assert not both.has(Role.ADMIN)
    assert table.identify("c" * 16) is None
    assert table.identify(A[:-1]) is None
    assert table.identify("") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no tokens"),
        ("# only a comment\n", "no tokens"),
        (f"boss {A}", "unknown role 'boss'; use submit, work, admin"),
        ("admin short", "16-4096 printable ASCII"),
        (f"admin {A} name extra", "expected `ROLE TOKEN [NAME]`, got 4 fields"),
        (f"admin {A} bad/name", "name 'bad/name'"),
        (f"admin {A} x\nwork {A} y", "already named 'x'"),
        ("admin tok\u00e9n-with-accent-0123", "printable ASCII"),
    ],
)
def test_bad_lines_name_the_line(text: str, message: str) -> None:
    with pytest.raises(TokenFileError, match=re.escape(message)):
        parse_tokens(text, "tokens.txt")


def test_errors_point_at_the_line() -> None:
    with pytest.raises(TokenFileError, match=r"^tokens.txt:3: "):
        parse_tokens(f"admin {A}\n\nwork short\n", "tokens.txt")


def test_roles_are_case_insensitive_and_rotation_shares_a_name() -> None:
    table = parse_tokens(f"SUBMIT {A} billing\nsubmit {B} billing\n")
    old, new = table.identify(A), table.identify(B)
    assert old is not None
    assert new is not None
    assert old.name == new.name == "billing"


def test_unlisted_methods_need_admin_and_health_is_open() -> None:
    rule = rule_for("/some.Other/Method")
    assert rule is not None
    assert rule.role is Role.ADMIN
    assert rule_for("/grpc.health.v1.Health/Check") is None
    assert rule_for("/grpc.health.v1.Health/Watch") is None
