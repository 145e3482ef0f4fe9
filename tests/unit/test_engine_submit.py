"""Submit: validation, all-or-nothing batches, priority order, queue creation."""

from __future__ import annotations

import pytest

from dispatchd.engine import (
    Engine,
    EngineLimits,
    InvalidArgument,
    JobState,
    NewJob,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

from .engine_helpers import Connect, Dispatch, Submit


def pending_ids(engine: Engine, queue: str = "q") -> list[str]:
    jobs, token = engine.list_jobs(queue, JobState.PENDING, 1000, "")
    assert token == ""
    return [j.id for j in jobs]


def test_submit_returns_pending_records(engine: Engine) -> None:
    [job] = engine.submit(
        [NewJob("q", payload=b"x", priority=3, headers={"a": "b"}, content_type="t/p")], 5.0
    )
    assert job.state is JobState.PENDING
    assert job.queue == "q"
    assert job.payload == b"x"
    assert job.priority == 3
    assert job.headers == {"a": "b"}
    assert job.content_type == "t/p"
    assert job.submit_time == 5.0
    assert job.attempt == 0
    assert job.lease is None
    assert engine.get_job(job.id) is job


def test_submit_copies_headers(engine: Engine) -> None:
    headers = {"k": "v"}
    [job] = engine.submit([NewJob("q", headers=headers)], 0.0)
    headers["k"] = "changed"
    assert job.headers == {"k": "v"}


def test_higher_priority_first_fifo_among_equals(engine: Engine, submit: Submit) -> None:
    low1 = submit(priority=0)[0]
    high1 = submit(priority=5)[0]
    low2 = submit(priority=0)[0]
    neg = submit(priority=-1)[0]
    high2 = submit(priority=5)[0]
    expected = [high1.id, high2.id, low1.id, low2.id, neg.id]
    assert pending_ids(engine) == expected


def test_dispatch_follows_priority_order(
    engine: Engine, submit: Submit, connect: Connect, dispatch: Dispatch
) -> None:
    a = submit(priority=1)[0]
    b = submit(priority=2)[0]
    c = submit(priority=1)[0]
    connect(credits=1)
    order = []
    for t in range(3):
        [lease] = dispatch(float(t))
        order.append(lease.job.id)
        engine.complete(lease.worker, lease.job.id, lease.lease_id, b"", float(t))
    assert order == [b.id, a.id, c.id]


def test_batch_keeps_order_within_batch(engine: Engine) -> None:
    jobs = engine.submit([NewJob("q", payload=bytes([i])) for i in range(5)], 0.0)
    assert pending_ids(engine) == [j.id for j in jobs]
    assert len({j.id for j in jobs}) == 5


def test_batch_one_bad_job_admits_nothing(engine: Engine) -> None:
    specs = [NewJob("q"), NewJob("q"), NewJob("bad name"), NewJob("other")]
    with pytest.raises(InvalidArgument, match=r"jobs\[2\]"):
        engine.submit(specs, 0.0)
    assert engine.list_queues() == []
    with pytest.raises(NotFound):
        engine.get_queue("q")


def test_batch_oversized_payload_names_index(engine: Engine, limits: EngineLimits) -> None:
    engine.submit([NewJob("q")], 0.0)
    big = b"x" * (limits.max_payload_bytes + 1)
    with pytest.raises(ResourceExhausted, match=r"jobs\[1\]"):
        engine.submit([NewJob("q"), NewJob("q", payload=big), NewJob("q")], 0.0)
    assert engine.get_queue("q").pending_count == 1


def test_single_job_error_has_no_index(engine: Engine) -> None:
    with pytest.raises(InvalidArgument) as info:
        engine.submit([NewJob("")], 0.0)
    assert "jobs[" not in str(info.value)


def test_empty_batch_is_invalid(engine: Engine) -> None:
    with pytest.raises(InvalidArgument):
        engine.submit([], 0.0)


@pytest.mark.parametrize("limits", [EngineLimits(max_batch_jobs=3)])
def test_batch_size_limit(engine: Engine) -> None:
    engine.submit([NewJob("q")] * 3, 0.0)
    with pytest.raises(InvalidArgument, match="limit is 3"):
        engine.submit([NewJob("q")] * 4, 0.0)
    assert engine.get_queue("q").pending_count == 3


@pytest.mark.parametrize(
    "name",
    ["", "x" * 129, "has space", "slash/no", "uni\u00e9", "pipe|no", "tab\t"],
)
def test_bad_queue_names_rejected(engine: Engine, name: str) -> None:
    with pytest.raises(InvalidArgument):
        engine.submit([NewJob(name)], 0.0)
    assert engine.list_queues() == []


@pytest.mark.parametrize("name", ["x" * 128, "a", "A-z_0.9:x", "...", "--"])
def test_good_queue_names_accepted(engine: Engine, name: str) -> None:
    engine.submit([NewJob(name)], 0.0)
    assert engine.get_queue(name).pending_count == 1


def test_payload_at_cap_ok_over_cap_exhausted(engine: Engine, limits: EngineLimits) -> None:
    engine.submit([NewJob("q", payload=b"x" * limits.max_payload_bytes)], 0.0)
    with pytest.raises(ResourceExhausted, match="payload"):
        engine.submit([NewJob("q", payload=b"x" * (limits.max_payload_bytes + 1))], 0.0)
    assert engine.get_queue("q").pending_count == 1


@pytest.mark.parametrize("limits", [EngineLimits(max_payload_bytes=10)])
def test_payload_cap_is_configurable(engine: Engine) -> None:
    engine.submit([NewJob("q", payload=b"0123456789")], 0.0)
    with pytest.raises(ResourceExhausted):
        engine.submit([NewJob("q", payload=b"0123456789a")], 0.0)


@pytest.mark.parametrize("limits", [EngineLimits(max_headers=2, max_header_bytes=10)])
def test_header_limits(engine: Engine) -> None:
    engine.submit([NewJob("q", headers={"a": "1", "b": "2"})], 0.0)
    with pytest.raises(InvalidArgument, match="headers"):
        engine.submit([NewJob("q", headers={"a": "1", "b": "2", "c": "3"})], 0.0)
    with pytest.raises(InvalidArgument, match="bytes"):
        engine.submit([NewJob("q", headers={"key": "valuevalue"})], 0.0)
    engine.submit([NewJob("q", headers={"key": "valueva"})], 0.0)  # exactly 10 bytes
    with pytest.raises(InvalidArgument, match="empty name"):
        engine.submit([NewJob("q", headers={"": "v"})], 0.0)
    assert engine.get_queue("q").pending_count == 2


def test_default_header_limits(engine: Engine, limits: EngineLimits) -> None:
    too_many = {f"h{i}": "" for i in range(limits.max_headers + 1)}
    with pytest.raises(InvalidArgument):
        engine.submit([NewJob("q", headers=too_many)], 0.0)
    too_big = {"h": "v" * limits.max_header_bytes}
    with pytest.raises(InvalidArgument):
        engine.submit([NewJob("q", headers=too_big)], 0.0)


def test_content_type_limit(engine: Engine, limits: EngineLimits) -> None:
    engine.submit([NewJob("q", content_type="c" * limits.max_content_type_bytes)], 0.0)
    with pytest.raises(InvalidArgument, match="content_type"):
        engine.submit([NewJob("q", content_type="c" * (limits.max_content_type_bytes + 1))], 0.0)


def test_draining_refuses_submit(engine: Engine, submit: Submit) -> None:
    submit()
    engine.begin_drain()
    with pytest.raises(Unavailable):
        engine.submit([NewJob("q")], 1.0)
    assert engine.get_queue("q").pending_count == 1


def test_queue_created_on_first_submit_with_defaults(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.get_queue("fresh")
    engine.submit([NewJob("fresh")], 0.0)
    view = engine.get_queue("fresh")
    assert view.settings.width == 10
    assert view.settings.paused is False
    assert view.settings.lease_seconds == 30.0
    assert view.pending_count == 1
    assert view.underway_count == 0
    assert [v.name for v in engine.list_queues()] == ["fresh"]


@pytest.mark.parametrize("limits", [EngineLimits(default_width=3, default_lease_seconds=7.0)])
def test_queue_defaults_come_from_limits(engine: Engine) -> None:
    engine.submit([NewJob("q")], 0.0)
    settings = engine.get_queue("q").settings
    assert (settings.width, settings.lease_seconds) == (3, 7.0)


def test_list_queues_sorted(engine: Engine) -> None:
    engine.submit([NewJob("b"), NewJob("a"), NewJob("c")], 0.0)
    assert [v.name for v in engine.list_queues()] == ["a", "b", "c"]


def test_get_job_errors(engine: Engine) -> None:
    with pytest.raises(InvalidArgument):
        engine.get_job("")
    with pytest.raises(NotFound):
        engine.get_job("01ARZ3NDEKTSV4RRFFQ69G5FAV")


def test_get_queue_validates_name(engine: Engine) -> None:
    with pytest.raises(InvalidArgument):
        engine.get_queue("bad name")
