"""The schedule RPCs through the real client, on both backends and on a Redis Cluster (where
a firing is two scripts, redis/schedules.py): the resource, firing by the clock once per
tick, overlap, trigger, backfill without duplicates, pause, and refusals."""

from __future__ import annotations

import datetime
from collections import Counter

import pytest

from dispatchd.runtime import DispatchdServer
from dispatchd_client import (
    AlreadyExists,
    AsyncClient,
    CatchupMode,
    FiringCause,
    FiringOutcome,
    InvalidArgument,
    JobState,
    NewJob,
    NotFound,
    Overlap,
    ScheduleSpec,
)
from tests.integration.scrape import scrape
from tests.polling import eventually

pytestmark = pytest.mark.on_cluster

EVERY_SECOND = ScheduleSpec.of(every=1)


async def _jobs(client: AsyncClient, queue: str) -> list[str]:
    try:
        return [j.idempotency_key async for j in client.list_jobs(queue)]
    except NotFound:
        return []


async def test_a_schedule_round_trips_and_pages(client: AsyncClient) -> None:
    spec = ScheduleSpec.of("30 2 * * *", time_zone="Europe/Berlin")
    made = await client.create_schedule(
        "nightly",
        spec,
        NewJob("reports", b"build", priority=3, headers={"k": "v"}, options={"ttl": 600}),
        overlap=Overlap.BUFFER_ONE,
        catchup_window=120,
        catchup_mode=CatchupMode.LATEST,
        note="the nightly report",
    )
    assert made.spec == spec
    assert (made.overlap, made.catchup_window, made.catchup_mode) == (
        Overlap.BUFFER_ONE,
        120.0,
        CatchupMode.LATEST,
    )
    assert made.template.queue == "reports"
    assert made.template.priority == 3
    assert made.template.ttl.seconds == 600
    assert len(made.next_fire_times) == 10
    berlin = [t.astimezone(datetime.UTC) for t in made.next_fire_times]
    assert all(t.minute == 30 and t.hour in (0, 1) for t in berlin)  # 02:30 CET/CEST
    for i in range(5):
        await client.create_schedule(f"s{i}", EVERY_SECOND, NewJob("q"), paused=True)
    ids = [s.id async for s in client.list_schedules(page_size=2)]
    assert ids == ["nightly", "s0", "s1", "s2", "s3", "s4"]
    with pytest.raises(AlreadyExists) as exists:
        await client.create_schedule("nightly", spec, NewJob("reports"))
    assert exists.value.reason == "SCHEDULE_EXISTS"

    changed = await client.update_schedule("nightly", overlap=Overlap.ALLOW, note="")
    assert changed.overlap is Overlap.ALLOW
    assert changed.catchup_mode is CatchupMode.LATEST  # the other policies stay
    assert changed.note == ""
    assert changed.spec == spec
    paused = await client.pause_schedule("nightly", "holiday")
    assert (paused.paused, paused.note, paused.next_fire_times) == (True, "holiday", ())
    resumed = await client.resume_schedule("nightly")
    assert (resumed.paused, resumed.note) == (False, "holiday")
    await client.delete_schedule("nightly")
    with pytest.raises(NotFound) as gone:
        await client.get_schedule("nightly")
    assert gone.value.reason == "SCHEDULE_NOT_FOUND"


@pytest.mark.parametrize(
    ("spec", "template", "field"),
    [
        (ScheduleSpec.of("61 * * * *"), NewJob("q"), "schedule.spec.cron_expressions[0]"),
        (ScheduleSpec.of("* * *"), NewJob("q"), "schedule.spec.cron_expressions[0]"),
        (
            ScheduleSpec.of("0 0 * * *", time_zone="Mars/Olympus"),
            NewJob("q"),
            "schedule.spec.time_zone",
        ),
        (ScheduleSpec(), NewJob("q"), "schedule.spec.cron_expressions"),
        (ScheduleSpec.of(every=0.5), NewJob("q"), "schedule.spec.intervals[0].every"),
        (EVERY_SECOND, NewJob("bad queue"), "schedule.template.queue"),
        (
            EVERY_SECOND,
            NewJob("q", options={"idempotency_key": "k"}),
            "schedule.template.idempotency_key",
        ),
    ],
)
async def test_bad_schedules_are_refused_naming_the_field(
    client: AsyncClient, spec: ScheduleSpec, template: NewJob, field: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await client.create_schedule("bad", spec, template)
    assert refused.value.field_violations[0][0] == field
    with pytest.raises(NotFound):
        await client.get_schedule("bad")


async def test_each_tick_fires_one_job_by_the_clock(client: AsyncClient) -> None:
    await client.create_schedule("tick", EVERY_SECOND, NewJob("ticks", b"t"), overlap=Overlap.ALLOW)

    async def three() -> bool:
        return len(await _jobs(client, "ticks")) >= 3

    await eventually(three, within=15, what="three ticks")
    keys = await _jobs(client, "ticks")
    assert len(set(keys)) == len(keys)
    assert all(k.startswith("schedule:tick@") and k.endswith("Z") for k in keys)
    rec = await client.get_schedule("tick")
    assert rec.submitted_count >= 3
    latest = rec.recent_firings[0]
    assert (latest.outcome, latest.cause) == (FiringOutcome.SUBMITTED, FiringCause.SCHEDULED)
    job = await client.get(latest.job_id)
    assert job.idempotency_key == "schedule:tick@" + latest.tick_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert job.payload == b"t"


async def test_skip_and_buffer_one_hold_back_ticks_while_a_job_is_unfinished(
    client: AsyncClient,
) -> None:
    await client.create_schedule("skip", EVERY_SECOND, NewJob("skipq"), overlap=Overlap.SKIP)
    await client.create_schedule("buf", EVERY_SECOND, NewJob("bufq"), overlap=Overlap.BUFFER_ONE)

    async def skipped_both() -> bool:
        a, b = await client.get_schedule("skip"), await client.get_schedule("buf")
        return a.skipped_count >= 2 and b.skipped_count >= 2

    await eventually(skipped_both, within=15, what="ticks skipped by both")
    skip, buf = await client.get_schedule("skip"), await client.get_schedule("buf")
    assert skip.submitted_count == 1  # nobody runs the first job: every later tick skips
    assert buf.submitted_count == 2  # one more waits behind it
    jobs = [j async for j in client.list_jobs("bufq")]
    assert {j.ordering_key for j in jobs} == {"schedule:buf"}


async def test_trigger_and_backfill_never_make_two_jobs_for_one_tick(client: AsyncClient) -> None:
    await client.create_schedule(
        "bf", ScheduleSpec.of(every=2), NewJob("bfq"), overlap=Overlap.ALLOW, paused=True
    )
    fired = await client.trigger_schedule("bf")
    assert (fired.outcome, fired.cause) == (FiringOutcome.SUBMITTED, FiringCause.TRIGGERED)
    assert (await client.get(fired.job_id)).state is JobState.PENDING

    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    start, end = now - datetime.timedelta(seconds=20), now - datetime.timedelta(seconds=11)
    first = await client.backfill_schedule("bf", start, end)
    assert [f.outcome for f in first] == [FiringOutcome.SUBMITTED] * 5
    assert all(f.cause is FiringCause.BACKFILL for f in first)
    again = await client.backfill_schedule("bf", start, end + datetime.timedelta(seconds=2))
    assert [f.outcome for f in again] == [FiringOutcome.DUPLICATE] * 5 + [FiringOutcome.SUBMITTED]
    assert [f.job_id for f in again[:5]] == [f.job_id for f in first]
    keys = Counter(await _jobs(client, "bfq"))
    assert len(keys) == 7
    assert max(keys.values()) == 1

    with pytest.raises(InvalidArgument) as future:
        await client.backfill_schedule("bf", now, now + datetime.timedelta(hours=1))
    assert future.value.field_violations[0][0] == "end_time"
    with pytest.raises(InvalidArgument):
        await client.backfill_schedule("bf", now - datetime.timedelta(days=1), now)


async def test_a_paused_schedule_fires_nothing_until_resumed(client: AsyncClient) -> None:
    await client.create_schedule("p", EVERY_SECOND, NewJob("pq"), paused=True, note="later")
    await client.trigger_schedule("p")  # one job from the trigger, none from the clock
    resumed = await client.resume_schedule("p")
    assert resumed.next_fire_times

    async def fired() -> bool:
        return (await client.get_schedule("p")).recent_firings[0].cause is FiringCause.SCHEDULED

    await eventually(fired, within=10, what="a scheduled firing after the resume")


async def test_a_draining_server_refuses_schedule_changes(server: DispatchdServer) -> None:
    async with AsyncClient(f"127.0.0.1:{server.port}", retry_unavailable=0) as client:
        await client.create_schedule("d", EVERY_SECOND, NewJob("dq"), paused=True)
        await server.backend.begin_drain(0.1)
        from dispatchd_client import Unavailable

        with pytest.raises(Unavailable):
            await client.create_schedule("d2", EVERY_SECOND, NewJob("dq"))
        with pytest.raises(Unavailable):
            await client.trigger_schedule("d")
        assert (await client.get_schedule("d")).paused


async def test_firings_are_counted_in_metrics(server: DispatchdServer, client: AsyncClient) -> None:
    await client.create_schedule("m", EVERY_SECOND, NewJob("mq"), overlap=Overlap.SKIP)
    port = server.observability.metrics_port

    async def fired_and_skipped() -> bool:
        samples = await scrape(port)
        firings = "dispatchd_schedule_firings_total"
        return (
            samples.value(firings, outcome="submitted", cause="scheduled") == 1
            and samples.value(firings, outcome="skipped", cause="scheduled") >= 1
        )

    await eventually(fired_and_skipped, within=15, what="a firing and a skip in /metrics")
    samples = await scrape(port)
    assert samples.value("dispatchd_schedule_fire_lag_seconds_count") == 1
