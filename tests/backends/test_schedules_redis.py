"""Replicas sharing one Redis (or a Redis Cluster) race for every tick of a schedule: each
tick fires once, and on a Cluster a replica dying between a firing's two steps costs
neither the tick's job nor makes a second one."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from redis.asyncio import Redis

from dispatchd.config import Config
from dispatchd.engine.schedules import fire_due
from dispatchd.redis.backend import RedisBackend
from dispatchd.redis.schedules import _Plan
from dispatchd_client import (
    AsyncClient,
    FiringCause,
    FiringOutcome,
    NewJob,
    Overlap,
    ScheduleSpec,
)
from tests.inproc import base_config
from tests.polling import eventually

from .conftest import start_server

pytestmark = pytest.mark.redis_only


def _config(tmp_path: Path, url: str) -> Config:
    return replace(base_config(tmp_path), backend="redis", redis_url=url, data_dir=None)


#: The url fixture of one Redis and of a Cluster (where a firing is two scripts).
REDISES = ["redis_url", "redis_cluster_url"]


@pytest.mark.parametrize("url_fixture", REDISES)
async def test_three_replicas_racing_fire_each_tick_once(
    tmp_path: Path, url_fixture: str, request: pytest.FixtureRequest
) -> None:
    redis_url = request.getfixturevalue(url_fixture)
    replicas = [await start_server(_config(tmp_path, redis_url)) for _ in range(3)]
    try:
        async with AsyncClient(f"127.0.0.1:{replicas[0].port}") as client:
            await client.create_schedule(
                "race", ScheduleSpec.of(every=1), NewJob("raced"), overlap=Overlap.ALLOW
            )
            backends = [r.backend for r in replicas if isinstance(r.backend, RedisBackend)]
            assert len(backends) == 3
            # Besides each replica's own loop, hammer the firing from all three at once.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                await asyncio.gather(*(b.schedules.fire_pass() for b in backends))
                await asyncio.sleep(0.05)
            await client.pause_schedule("race")
            schedule = await client.get_schedule("race")
            jobs = [j async for j in client.list_jobs("raced")]
        ticks = Counter(j.idempotency_key for j in jobs)
        assert len(ticks) >= 4
        assert max(ticks.values()) == 1, [k for k, n in ticks.items() if n > 1]
        assert schedule.submitted_count == len(jobs)
        assert schedule.skipped_count == schedule.refused_count == 0
        fired = [f.tick_time for f in schedule.recent_firings]
        assert len(set(fired)) == len(fired)
        assert all(f.outcome is FiringOutcome.SUBMITTED for f in schedule.recent_firings)
        seconds = sorted(int(k.split("@")[1][17:19]) for k in ticks)
        assert len(seconds) == len(set(seconds))
    finally:
        for r in replicas:
            await r.stop_now()


async def test_a_draining_replica_leaves_the_ticks_to_the_others(
    tmp_path: Path, redis_url: str
) -> None:
    a = await start_server(_config(tmp_path, redis_url))
    b = await start_server(_config(tmp_path, redis_url))
    try:
        async with AsyncClient(f"127.0.0.1:{b.port}") as client:
            await client.create_schedule(
                "left", ScheduleSpec.of(every=1), NewJob("leftq"), overlap=Overlap.ALLOW
            )
            await a.drain(0.1)
            before = (await client.get_schedule("left")).submitted_count

            async def more() -> bool:
                return (await client.get_schedule("left")).submitted_count >= before + 2

            await eventually(more, within=10, what="ticks fired by the replica that stayed")
            jobs = [j async for j in client.list_jobs("leftq")]
        keys = Counter(j.idempotency_key for j in jobs)
        assert max(keys.values()) == 1
    finally:
        await b.stop_now()
        if not a.stopped.is_set():
            await a.stop_now()


async def test_a_firing_whose_record_was_lost_finds_its_job_instead_of_a_second(
    tmp_path: Path, redis_url: str
) -> None:
    """As if the script's answer and its cursor move were lost (a fail-over that kept the
    job but not the schedule's hash write): the tick fires again and finds its job."""
    server = await start_server(_config(tmp_path, redis_url))
    try:
        backend = server.backend
        assert isinstance(backend, RedisBackend)
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            await client.create_schedule(
                "lost", ScheduleSpec.of(every=1), NewJob("lostq"), overlap=Overlap.ALLOW
            )

            async def fired() -> bool:
                return (await client.get_schedule("lost")).submitted_count >= 1

            await eventually(fired, within=10, what="a first firing")
            await client.pause_schedule("lost")
            first = (await client.get_schedule("lost")).recent_firings[0]
            redis = Redis.from_url(redis_url)
            try:  # the cursor back before the tick, the schedule running again
                await redis.hset(
                    "ds:s:lost", mapping={"cur": repr(first.tick_time.timestamp() - 0.5)}
                )
                rec, version = await backend.schedules._read("lost")
                rec.paused = False
                await backend.schedules._script("put", rec, version)
            finally:
                await redis.aclose()
            await backend.schedules.fire_pass()
            await client.pause_schedule("lost")
            again = await client.get_schedule("lost")
            jobs = [j async for j in client.list_jobs("lostq")]
        refired = [f for f in again.recent_firings if f.tick_time == first.tick_time]
        assert [f.outcome for f in refired][:1] == [FiringOutcome.DUPLICATE]
        assert refired[0].job_id == first.job_id
        keys = Counter(j.idempotency_key for j in jobs)
        assert max(keys.values()) == 1
    finally:
        await server.stop_now()


async def test_a_cluster_replica_dying_between_the_steps_leaves_one_job_per_tick(
    tmp_path: Path, redis_cluster_url: str
) -> None:
    """Step 1 (the jobs, on the queue's slot) alone, as if the replica died before step 2
    (the record, on the schedule's slot); then normal passes: the tick's job is the one step
    1 made, recorded SUBMITTED once, and no tick has two jobs."""
    server = await start_server(_config(tmp_path, redis_cluster_url))
    try:
        backend = server.backend
        assert isinstance(backend, RedisBackend)
        schedules = backend.schedules
        await schedules.stop()  # this test makes the passes
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            await client.create_schedule(
                "crash", ScheduleSpec.of(every=1), NewJob("crashq"), overlap=Overlap.ALLOW
            )
            made: list[str] = []

            async def step_one_alone() -> bool:
                rec, version = await schedules._read("crash")
                now = schedules.clock()
                planner = _Plan({}, schedules._job_ids(now))
                firings = fire_due(rec, now, planner)
                if firings:
                    made.extend(planner.jobs)
                    await schedules.submit_step(rec, version, firings, planner)
                return bool(firings)

            await eventually(step_one_alone, within=10, what="a tick to fire")
            unrecorded = await client.get_schedule("crash")
            assert unrecorded.submitted_count == 0
            assert not unrecorded.recent_firings
            assert [j.id async for j in client.list_jobs("crashq")] == made

            async def recorded() -> bool:
                await schedules.fire_pass()
                return (await client.get_schedule("crash")).submitted_count > len(made)

            await eventually(recorded, within=10, what="the next passes' firings")
            await client.pause_schedule("crash")
            schedule = await client.get_schedule("crash")
            jobs = [j async for j in client.list_jobs("crashq")]
        keys = Counter(j.idempotency_key for j in jobs)
        assert max(keys.values()) == 1, keys
        assert schedule.submitted_count == len(jobs)
        firings = {f.job_id: f.outcome for f in schedule.recent_firings}
        assert all(firings[job_id] is FiringOutcome.SUBMITTED for job_id in made)
    finally:
        await server.stop_now()


async def test_a_cluster_plan_racing_the_first_of_its_version_gets_the_first_decision(
    tmp_path: Path, redis_cluster_url: str
) -> None:
    """Two replicas plan from one version but differently (the second's clock is two ticks
    on): the second's step 1 submits nothing and answers the first's decision, which is
    what gets recorded."""
    server = await start_server(_config(tmp_path, redis_cluster_url))
    try:
        backend = server.backend
        assert isinstance(backend, RedisBackend)
        schedules = backend.schedules
        await schedules.stop()
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            await client.create_schedule(
                "twice", ScheduleSpec.of(every=1), NewJob("twiceq"), overlap=Overlap.ALLOW
            )
            decisions: list[bytes] = []
            plans: list[list[str]] = []

            async def step_one(later: float) -> bool:
                rec, version = await schedules._read("twice")
                now = schedules.clock() + later
                planner = _Plan({}, schedules._job_ids(now))
                firings = fire_due(rec, now, planner)
                if firings:
                    plans.append(list(planner.jobs))
                    decisions.append(await schedules.submit_step(rec, version, firings, planner))
                return bool(firings)

            await eventually(lambda: step_one(0.0), within=10, what="a tick to fire")
            assert await step_one(2.0)
            assert len(plans[1]) > len(plans[0])  # the second plan had more ticks
            assert decisions[1] == decisions[0]
            assert [j.id async for j in client.list_jobs("twiceq")] == plans[0]
            await schedules.fire_pass()
            schedule = await client.get_schedule("twice")
        recorded = [f.job_id for f in schedule.recent_firings]
        assert set(plans[0]) <= set(recorded)
        assert not set(plans[1]) & set(recorded)
        assert schedule.submitted_count >= len(plans[0])
    finally:
        await server.stop_now()


async def test_a_cluster_trigger_after_an_unrecorded_pass_records_that_then_its_own(
    tmp_path: Path, redis_cluster_url: str
) -> None:
    """A pass's step 1 alone, then TriggerSchedule: the trigger's step 1 gets the pass's
    decision; it records that one, plans again and answers its own TRIGGERED firing."""
    server = await start_server(_config(tmp_path, redis_cluster_url))
    try:
        backend = server.backend
        assert isinstance(backend, RedisBackend)
        schedules = backend.schedules
        await schedules.stop()
        async with AsyncClient(f"127.0.0.1:{server.port}") as client:
            await client.create_schedule(
                "trig", ScheduleSpec.of(every=1), NewJob("trigq"), overlap=Overlap.ALLOW
            )
            made: list[str] = []

            async def step_one_alone() -> bool:
                rec, version = await schedules._read("trig")
                planner = _Plan({}, schedules._job_ids(schedules.clock()))
                firings = fire_due(rec, schedules.clock(), planner)
                if firings:
                    made.extend(planner.jobs)
                    await schedules.submit_step(rec, version, firings, planner)
                return bool(firings)

            await eventually(step_one_alone, within=10, what="a tick to fire")
            firing = await client.trigger_schedule("trig")
            schedule = await client.get_schedule("trig")
            jobs = [j.id async for j in client.list_jobs("trigq")]
        assert firing.cause is FiringCause.TRIGGERED
        assert firing.outcome is FiringOutcome.SUBMITTED
        assert firing.job_id not in made
        assert sorted(jobs) == sorted([*made, firing.job_id])
        causes = {f.job_id: f.cause for f in schedule.recent_firings}
        assert all(causes[job_id] is FiringCause.SCHEDULED for job_id in made)
    finally:
        await server.stop_now()
