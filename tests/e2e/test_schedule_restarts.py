"""A schedule every second through two kill -9s and a drain of a real server: every tick
inside the catch-up window has exactly one job (the downtime's ticks fire on restart)."""

from __future__ import annotations

import datetime
from collections import Counter
from pathlib import Path

from dispatchd_client import Client, NewJob, Overlap, ScheduleSpec
from tests.polling import until

from .conftest import ServerProcess


def _ticks(client: Client) -> Counter[int]:
    keys = [j.idempotency_key for j in client.list_jobs("e2e-ticks")]
    return Counter(
        int(
            datetime.datetime.strptime(k.split("@")[1], "%Y-%m-%dT%H:%M:%SZ")
            .replace(tzinfo=datetime.UTC)
            .timestamp()
        )
        for k in keys
    )


def _count_grows(target: str, beyond: int) -> None:
    def grown() -> bool:
        with Client(target) as client:
            return sum(_ticks(client).values()) > beyond

    until(grown, within=20, what=f"more than {beyond} jobs")


def test_every_tick_has_one_job_through_kills_and_a_drain(
    tmp_path: Path, start_server: type[ServerProcess]
) -> None:
    server = start_server(tmp_path)
    target = server.wait_ready()
    with Client(target) as client:
        client.update_queue("e2e-ticks", width=1, create=True)
        made = client.create_schedule(
            "every-second",
            ScheduleSpec.of(every=1),
            NewJob("e2e-ticks", b"tick"),
            overlap=Overlap.ALLOW,
            catchup_window=600,
        )
    assert made.create_time is not None
    created = made.create_time.timestamp()
    _count_grows(target, 2)

    for stop in ("kill", "kill", "drain"):
        if stop == "kill":
            server.kill()  # SIGKILL: no drain, no snapshot; the journal is the truth
        else:
            server.terminate()
            assert server.wait() == 0, server.log
        server = start_server(tmp_path)
        target = server.wait_ready()
        with Client(target) as client:
            seen = sum(_ticks(client).values())
        _count_grows(target, seen + 1)

    with Client(target) as client:
        last = client.pause_schedule("every-second", "test over")
        ticks = _ticks(client)
    server.terminate()
    assert server.wait() == 0, server.log
    assert last.last_tick_time is not None
    end = int(last.last_tick_time.timestamp())
    expected = set(range(int(created) + 1, end + 1))
    assert set(ticks) == expected, (
        f"missing {sorted(expected - set(ticks))[:10]}, extra {sorted(set(ticks) - expected)[:10]}"
    )
    assert max(ticks.values()) == 1, [t for t, n in ticks.items() if n > 1]
    assert last.missed_count == 0
    assert last.submitted_count == len(ticks)
