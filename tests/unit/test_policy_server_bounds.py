"""Server-wide bounds: the jobs waiting across all queues (--max-pending-total) and the
number of queues (--max-queues). Past either a submit is refused whole, before anything
changes, with its own reason and a retry delay."""

from __future__ import annotations

import pytest

from dispatchd.engine import Engine, EngineLimits, NewJob, ResourceExhausted
from dispatchd.engine.errors import Reason

from .engine_helpers import Connect, Pump, ok


def jobs(queue: str, n: int, **kw: object) -> list[NewJob]:
    return [NewJob(queue, **kw) for _ in range(n)]  # type: ignore[arg-type]


@pytest.mark.parametrize("limits", [EngineLimits(max_pending_total=5)])
def test_a_submit_past_the_server_wide_bound_is_refused_whole(engine: Engine) -> None:
    engine.submit(jobs("a", 2), 0.0)
    engine.submit(jobs("b", 2, not_before=100.0), 0.0)  # scheduled jobs count too
    with pytest.raises(ResourceExhausted) as refused:
        engine.submit(jobs("a", 1) + jobs("c", 1), 1.0)
    e = refused.value
    assert e.reason is Reason.TOO_MANY_PENDING
    assert e.retry_after is not None
    assert "--max-pending-total" in str(e)
    assert e.metadata["max_pending_total"] == "5"
    assert [v.name for v in engine.list_queues()] == ["a", "b"]  # nothing admitted, no queue
    assert sum(v.pending_count + v.scheduled_count for v in engine.list_queues()) == 4
    engine.submit(jobs("c", 1), 1.0)  # exactly at the bound is fine


@pytest.mark.parametrize("limits", [EngineLimits(max_pending_total=3)])
def test_underway_and_finished_jobs_leave_room(
    engine: Engine, connect: Connect, pump: Pump
) -> None:
    def full() -> None:
        with pytest.raises(ResourceExhausted):
            engine.submit(jobs("q", 1), 9.0)

    engine.submit(jobs("q", 3), 0.0)
    full()
    w = connect(credits=2)
    a, b = pump(0.0)
    engine.submit(jobs("q", 2), 0.0)  # two underway: room for two
    full()
    ok(engine, a, 1.0)
    engine.cancel(b.job.id, 1.0)  # cancelled while running: finished, not waiting
    assert engine.waiting_total() == 3
    engine.disconnect(w, 2.0)  # the cancelled lease ends; nothing comes back
    assert engine.waiting_total() == 3
    w2 = connect(credits=3)
    assert len(pump(2.0)) == 3
    assert engine.waiting_total() == 0
    engine.disconnect(w2, 3.0)  # given back: waiting again
    assert engine.waiting_total() == 3
    full()


@pytest.mark.parametrize("limits", [EngineLimits(max_pending_total=2)])
def test_repeated_keys_do_not_count_toward_the_server_bound(engine: Engine) -> None:
    engine.submit([NewJob("q", idempotency_key="k"), NewJob("q")], 0.0)
    [(_, dup)] = engine.submit_many([NewJob("q", idempotency_key="k")], 1.0)
    assert dup


@pytest.mark.parametrize("limits", [EngineLimits(max_queues=2)])
def test_creating_a_queue_past_max_queues_is_refused(engine: Engine, connect: Connect) -> None:
    engine.submit(jobs("a", 1) + jobs("b", 1), 0.0)
    engine.submit(jobs("a", 1), 0.0)  # known queues take jobs as before
    for make in (
        lambda: engine.submit(jobs("a", 1) + jobs("c", 1), 0.0),
        lambda: engine.update_queue("c", width=3, create=True),
        lambda: connect(["a", "c"]),
        lambda: engine.request_slot("c", "cron", 10.0, 0, 0.0),
    ):
        with pytest.raises(ResourceExhausted) as refused:
            make()
        assert refused.value.reason is Reason.TOO_MANY_QUEUES
        assert "--max-queues" in str(refused.value)
        assert refused.value.metadata["max_queues"] == "2"
    assert [v.name for v in engine.list_queues()] == ["a", "b"]
    assert engine.get_queue("a").pending_count == 2  # the refused batch admitted nothing
    assert engine.workers() == []
