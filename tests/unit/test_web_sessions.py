"""Dashboard sessions expire when unused, end on logout and stay bounded in number."""

from __future__ import annotations

from dispatchd.web.sessions import Sessions


def test_a_session_expires_when_unused_and_lives_on_while_used() -> None:
    s = Sessions(lifetime=10.0)
    sid = s.open("tok", now=0.0)
    assert s.token(sid, now=9.0) == "tok"
    assert s.token(sid, now=18.0) == "tok"  # used at 9: lives until 19
    assert s.token(sid, now=28.0) is None
    assert len(s) == 0


def test_a_closed_or_unknown_session_names_no_token() -> None:
    s = Sessions()
    sid = s.open("tok", now=0.0)
    s.close(sid)
    assert s.token(sid, now=1.0) is None
    assert s.token("made-up", now=1.0) is None


def test_logins_past_the_bound_end_the_least_recently_used() -> None:
    s = Sessions(capacity=2)
    a = s.open("a", now=0.0)
    b = s.open("b", now=0.0)
    assert s.token(a, now=1.0) == "a"  # b is now the least recently used
    c = s.open("c", now=2.0)
    assert len(s) == 2
    assert s.token(b, now=3.0) is None
    assert (s.token(a, now=3.0), s.token(c, now=3.0)) == ("a", "c")
