"""Job ids (ULID-style) and lease ids."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatchd.engine import Engine, NewJob
from dispatchd.engine.ids import IdSource

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def decode(text: str) -> int:
    value = 0
    for ch in text:
        value = value * 32 + CROCKFORD.index(ch)
    return value


def test_job_id_shape_and_timestamp() -> None:
    ids = IdSource(random.Random(0))
    job_id = ids.job_id(1_700_000_000.123)
    assert len(job_id) == 26
    assert set(job_id) <= set(CROCKFORD)
    assert decode(job_id) >> 80 == 1_700_000_000_123


def test_job_ids_sort_by_time() -> None:
    ids = IdSource(random.Random(0))
    times = [0.0, 0.001, 0.5, 1.0, 86_400.0, 1_700_000_000.0, 4_000_000_000.0]
    made = [ids.job_id(t) for t in times]
    assert made == sorted(made)
    assert len(set(made)) == len(made)


def test_job_ids_monotonic_within_one_ms() -> None:
    ids = IdSource(random.Random(0))
    made = [ids.job_id(12.3456) for _ in range(1000)]
    assert made == sorted(made)
    assert len(set(made)) == 1000
    assert {decode(i) >> 80 for i in made} == {12345}


def test_job_ids_monotonic_when_clock_steps_back() -> None:
    ids = IdSource(random.Random(0))
    a = ids.job_id(100.0)
    b = ids.job_id(99.0)
    c = ids.job_id(100.0)
    assert a < b < c


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    steps=st.lists(st.floats(0.0, 0.01, allow_nan=False), min_size=1, max_size=50),
)
def test_job_ids_strictly_increasing(seed: int, steps: list[float]) -> None:
    ids = IdSource(random.Random(seed))
    now = 1_000.0
    made = []
    for step in steps:
        now += step
        made.append(ids.job_id(now))
    assert made == sorted(set(made))


def test_same_seed_same_ids() -> None:
    a = IdSource(random.Random(7))
    b = IdSource(random.Random(7))
    assert [a.job_id(1.0) for _ in range(3)] == [b.job_id(1.0) for _ in range(3)]
    assert a.lease_id() == b.lease_id()


def test_lease_ids_unique_and_prefixed() -> None:
    a = IdSource(random.Random(1))
    b = IdSource(random.Random(2))
    la = [a.lease_id() for _ in range(100)]
    lb = [b.lease_id() for _ in range(100)]
    assert len(set(la)) == 100
    assert not set(la) & set(lb)  # a restarted engine hands out different ids
    assert len({lease_id.split("-")[0] for lease_id in la}) == 1


def test_engine_job_ids_follow_submit_order() -> None:
    engine = Engine(rng=random.Random(0))
    made = [j.id for j in engine.submit([NewJob("q")] * 10, 5.0)]
    made += [j.id for j in engine.submit([NewJob("q")], 5.0)]
    made += [j.id for j in engine.submit([NewJob("q")], 6.0)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
