"""DeleteQueue in the engine: an empty queue goes with its settings and finished jobs; one
that still has work, slots or workers is refused, saying which, and nothing changes."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dispatchd.engine import (
    Engine,
    EngineLimits,
    EngineObserver,
    FailedPrecondition,
    NewJob,
    NotFound,
)
from dispatchd.engine.errors import Reason

from .engine_helpers import Connect, Pump, ok


class Deletions(EngineObserver):
    def __init__(self) -> None:
        self.forgotten: list[str] = []
        self.deleted: list[str] = []

    def jobs_forgotten(self, job_ids: Sequence[str]) -> None:
        self.forgotten += job_ids

    def queue_deleted(self, name: str) -> None:
        self.deleted.append(name)


def test_an_empty_queue_goes_with_its_finished_jobs(
    engine: Engine, connect: Connect, pump: Pump
) -> None:
    seen = Deletions()
    engine.observer = seen
    engine.update_queue("q", width=3, create=True)
    [job] = engine.submit([NewJob("q", idempotency_key="k")], 0.0)
    w = connect()
    [lease] = pump(0.0)
    ok(engine, lease, 1.0)
    engine.disconnect(w, 1.0)
    assert engine.delete_queue("q") == 1
    assert (seen.forgotten, seen.deleted) == ([job.id], ["q"])
    with pytest.raises(NotFound):
        engine.get_queue("q")
    with pytest.raises(NotFound):
        engine.get_job(job.id)
    # A queue of that name starts afresh: defaults, and the key is free again.
    [(again, dup)] = engine.submit_many([NewJob("q", idempotency_key="k")], 2.0)
    assert not dup
    assert again.id != job.id
    assert engine.get_queue("q").settings.width == engine.limits.default_width
    engine.tick(10_000.0)  # retention: nothing of the old queue is left to evict


@pytest.mark.parametrize(
    ("make", "holds"),
    [
        (lambda e, c: e.submit([NewJob("q")], 0.0), "1 pending job"),
        (lambda e, c: e.submit([NewJob("q", not_before=50.0)], 0.0), "1 scheduled job"),
        (lambda e, c: e.request_slot("q", "cron", 10.0, 0, 0.0), "1 slot held or requested"),
        (lambda e, c: c("q"), "1 connected worker"),
    ],
)
def test_a_queue_that_is_not_empty_stays(engine: Engine, connect: Connect, make, holds) -> None:  # type: ignore[no-untyped-def]
    engine.update_queue("q", width=0, create=True)
    make(engine, connect)
    with pytest.raises(FailedPrecondition) as refused:
        engine.delete_queue("q")
    assert refused.value.reason is Reason.QUEUE_NOT_EMPTY
    assert holds in str(refused.value)
    assert "nothing was deleted" in str(refused.value)
    assert engine.get_queue("q").name == "q"


def test_underway_jobs_and_their_worker_are_named(
    engine: Engine, connect: Connect, pump: Pump
) -> None:
    engine.submit([NewJob("q"), NewJob("q")], 0.0)
    connect(credits=1)
    pump(0.0)
    with pytest.raises(FailedPrecondition, match="1 pending job, 1 underway job, 1 connected"):
        engine.delete_queue("q")
    with pytest.raises(NotFound):
        engine.delete_queue("nope")


@pytest.mark.parametrize("limits", [EngineLimits(max_queues=1)])
def test_deleting_a_queue_makes_room_under_max_queues(engine: Engine) -> None:
    engine.update_queue("a", width=1, create=True)
    engine.delete_queue("a")
    engine.submit([NewJob("b")], 0.0)
    assert [v.name for v in engine.list_queues()] == ["b"]
