"""The Redis backend's pure parts: job ids, stored forms of policies, targets, attempts,
tallies and page cursors, URLs, the replica checks."""

from __future__ import annotations

import pytest

from dispatchd.config import load
from dispatchd.engine import AttemptRecord, HttpTarget, JobFailure, JobState
from dispatchd.engine.errors import InvalidArgument
from dispatchd.engine.paging import Cursor
from dispatchd.engine.policies import Rate, RetryPolicy
from dispatchd.redis import connect, records
from dispatchd.redis.errors import RedisUrlError, ScriptReplyError
from tests.e2e.replica_checks import most_at_once, worst_burst


def test_job_ids_carry_their_queue_and_keys_share_its_hash_tag() -> None:
    job_id = records.job_id("01ABC", "mail.out:eu-1")
    assert records.queue_of(job_id) == "mail.out:eu-1"
    assert records.job_key("q", job_id).startswith("{dq:q}:")
    assert records.cfg_key("q") == "{dq:q}:cfg"
    for foreign in ("01ABC", "@q", "01ABC@", ""):
        assert records.queue_of(foreign) is None


def test_policies_survive_their_stored_form() -> None:
    policy = RetryPolicy(5, 0.25, 30.0, 1.5, 0.1)
    assert records.policy_of(records.policy_text(policy)) == policy
    assert records.policy_of(records.policy_text(None)) is None
    assert records.rate_text(Rate(0.5, 3)) == "0.5|3"


def test_attempts_decode_with_and_without_http_data() -> None:
    old = ',[1,"w",10.5,11.5,true,"boom",true,"E"]'
    new = ',[2,"w",12,13,false,"",false,"",503,0.25],[3,"w",14,15,false,"",false,"",0,""]'
    first, second, third = records._attempts(old + new)
    assert first == AttemptRecord(1, "w", 10.5, 11.5, JobFailure("boom", True, "E"))
    assert (second.http_status, second.latency, second.error) == (503, 0.25, None)
    assert (third.http_status, third.latency) == (0, None)


def test_http_targets_survive_their_stored_form_secret_included() -> None:
    target = HttpTarget.of(
        "https://h.example/hook",
        "put",
        {"X-A": "1", "Authorization": "Bearer t"},
        5.0,
        (200, 202),
        "s3cret",
    )
    assert records.target_of(records.target_text(target)) == target
    assert records.target_text(None) == ""
    assert records.target_of("") is None
    with pytest.raises(ScriptReplyError, match="http_target"):
        records.target_of('{"url": "x"}')


def test_a_view_reply_carries_the_http_target() -> None:
    target = HttpTarget.of("http://h:8080/")
    reply: list[bytes | int] = [b"4", b"0", b"30.0", b"", b"", b"", b"0", b"86400"]
    reply += [2, 1, 0, 3, b"", b"", b"", 0, records.target_text(target).encode()]
    view = records.queue_of_view("q", reply)
    assert (view.settings.width, view.settings.http_target) == (4, target)
    assert (view.pending_count, view.underway_count, view.worker_count) == (2, 1, 3)
    assert records.queue_of_view("q", reply[:16]).settings.http_target is None
    assert records.queue_of_view("q", [*reply[:16], b""]).settings.http_target is None


def test_tallies_count_finishes_by_queue_and_state_and_retries_by_queue() -> None:
    tally = records.tally_of([b"a", b"7", 2, b"b", b"8", 1, b"a", b"retried", 3])
    assert tally.finished == {("a", JobState.EXPIRED): 2, ("b", JobState.DEAD): 1}
    assert tally.retried == {"a": 3}
    assert (tally.expired("a"), tally.expired("b")) == (2, 0)
    assert records.tally_of([]) == records.Tally()


@pytest.mark.parametrize(
    ("state", "score", "member", "start"),
    [
        (JobState.PENDING, b"-5", b"00000000000000ffJ1@q", ("-5", "255")),
        (JobState.PENDING, b"0", b"0000000000000001J1@q", ("0", "1")),
        (
            JobState.SCHEDULED,
            b"1712345678.123456",
            b"000000000000000aJ@q",
            ("1712345678.123456", "10"),
        ),
        (
            JobState.DEAD,
            b"1712345678.1",
            b"0000000000000003J@q",
            ("1712345678.1", "3"),
        ),
        (JobState.UNDERWAY, b"42", b"J@q", ("42", "")),
    ],
)
def test_a_page_resumes_just_after_its_last_job_in_the_index(
    state: JobState, score: bytes, member: bytes, start: tuple[str, str]
) -> None:
    cursor = records.cursor_of(state, score, member)
    assert records.page_start(state, cursor) == start
    assert float(start[0]) == float(score)  # the exact score the index holds
    assert records.page_start(JobState.FAILED, cursor) == ("", "")  # another state: from the top
    assert records.page_start(state, None) == ("", "")


def test_a_forged_cursor_beyond_what_a_score_holds_is_refused() -> None:
    for cursor in (Cursor(1, 2**60, 0), Cursor(6, 0, -1), Cursor(3, 1, 2**53)):
        with pytest.raises(InvalidArgument, match="page_token is not one this server made"):
            records.page_start(JobState(cursor.phase), cursor)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h:1/", "scheme must be one of"),
        ("redis+sentinel://h:26379", "a Sentinel URL is"),
        ("redis+sentinel://h:x/mymaster", "is not host:port"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(RedisUrlError, match=message):
        connect.check_url(url)


def test_sentinel_urls_name_nodes_service_and_db() -> None:
    nodes, service, db, password = connect._sentinel_parts(
        "redis+sentinel://:s3cret@a:26379,b:26380/mymaster/2"
    )
    assert (nodes, service, db, password) == ([("a", 26379), ("b", 26380)], "mymaster", 2, "s3cret")
    connect.check_url("rediss://h:6380/0")


def test_replica_checks_count_overlap_and_bursts() -> None:
    assert most_at_once([(0, 1), (0.5, 2), (1, 3)]) == 2  # an end frees its slot first
    assert worst_burst([0.0, 0.0, 0.0], 10.0) == 3
    assert worst_burst([i / 10 for i in range(50)], 10.0) == pytest.approx(1.0)


def test_backend_and_redis_url_come_from_flags_or_the_environment() -> None:
    env = {"DISPATCHD_BACKEND": "redis", "DISPATCHD_REDIS_URL": "redis://r:6379/0"}
    c = load([], env=env)
    assert (c.backend, c.redis_url) == ("redis", "redis://r:6379/0")
    c = load(["--backend", "embedded", "--redis-url", ""], env=env)
    assert (c.backend, c.redis_url) == ("embedded", "")
    assert load([], env={}).backend == "embedded"
