"""The Redis backend's pure parts: job ids, stored policy forms, URLs, the replica checks."""

from __future__ import annotations

import pytest

from dispatchd.config import load
from dispatchd.engine.policies import Rate, RetryPolicy
from dispatchd.redis import connect, records
from dispatchd.redis.errors import RedisUrlError
from dispatchd.redis.scripts import JOB_FIELDS, OPERATIONS, _read
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


def test_every_script_exists_and_job_fields_are_read_from_common_lua() -> None:
    for op in OPERATIONS:
        assert "redis.call" in _read(op)
    assert JOB_FIELDS[:2] == ("id", "q")
    assert "ls" in JOB_FIELDS


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
