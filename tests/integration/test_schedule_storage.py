"""Schedules on the embedded backend's disk: the drain snapshot (no journal) and the journal
both bring a schedule back with its state, and the next start catches up what it missed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd.store.snapshot import SnapshotStore
from dispatchd_client import AsyncClient, FiringOutcome, NewJob, Overlap, ScheduleSpec
from tests.inproc import serving
from tests.polling import eventually

pytestmark = pytest.mark.embedded_only  # the journal and the snapshot are the embedded backend's


@pytest.mark.parametrize("durability", ["none", "journal"])
async def test_a_schedule_outlives_a_drain_with_its_state(
    server_config: Config, tmp_path: Path, durability: str
) -> None:
    config = dataclasses.replace(server_config, durability=durability)
    async with serving(DispatchdServer(config)) as first:
        async with AsyncClient(f"127.0.0.1:{first.port}") as client:
            await client.create_schedule(
                "kept", ScheduleSpec.of(every=1), NewJob("keptq"), overlap=Overlap.ALLOW, note="n"
            )

            async def two() -> bool:
                return (await client.get_schedule("kept")).submitted_count >= 2

            await eventually(two, within=10, what="two firings")
        await first.drain(0.1)
        before = first.engine.get_schedule("kept")
    if durability == "none":
        stored = SnapshotStore(config.data_dir or tmp_path).read_message()
        assert [s.id for s in stored.schedules] == ["kept"]
    async with (
        serving(DispatchdServer(config)) as second,
        AsyncClient(f"127.0.0.1:{second.port}") as client,
    ):
        back = await client.get_schedule("kept")
        assert back.note == "n"
        assert back.submitted_count >= before.submitted
        assert back.last_tick_time is not None

        async def caught_up() -> bool:
            s = await client.get_schedule("kept")
            return s.submitted_count > before.submitted + 1

        await eventually(caught_up, within=10, what="firings after the restart")
        now = await client.get_schedule("kept")
        assert {f.outcome for f in now.recent_firings} == {FiringOutcome.SUBMITTED}
        keys = [j.idempotency_key async for j in client.list_jobs("keptq")]
        assert len(keys) == len(set(keys))
