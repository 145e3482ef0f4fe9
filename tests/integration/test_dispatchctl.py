"""dispatchctl as a subprocess against a real server: every command, tables, JSON, errors."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pty
from pathlib import Path

import pytest

from dispatchd.runtime import DispatchdServer
from dispatchd_client import AsyncClient, JobState, PermanentError, ReceivedJob, Worker
from tests.integration.dispatchctl import DISPATCHCTL, Dispatchctl, Run, dispatchctl


@pytest.fixture
def ctl(target: str) -> Dispatchctl:
    return Dispatchctl(target)


def ok(run: Run) -> Run:
    assert run.code == 0, run.err
    return run


def rows(run: Run) -> list[list[str]]:
    """The table's rows without the header, split on blanks."""
    return [line.split() for line in ok(run).out.splitlines()[1:]]


def test_the_console_script_is_installed() -> None:
    assert DISPATCHCTL.exists(), "pip install -e '.[dev]' installs dispatchctl"


async def test_queue_settings_pause_and_resume(ctl: Dispatchctl) -> None:
    ok(await ctl("queue", "set", "mail", "--width", "3", "--lease", "12", "--create"))
    assert rows(await ctl("queues")) == [["mail", "0", "0", "0", "3", "unlimited", "no", "0"]]
    shown = ok(await ctl("queue", "show", "mail")).out
    assert "width:" in shown
    assert "lease:     12s" in shown
    paused = ok(await ctl("pause", "mail", "-o", "json")).json()["queue"]
    assert (paused["paused"], paused["width"]) == (True, 3)
    assert rows(await ctl("queues"))[0][6] == "yes"
    resumed = ok(await ctl("-o", "json", "resume", "mail", "--width", "5")).json()["queue"]
    assert (resumed["paused"], resumed["width"]) == (False, 5)
    listed = ok(await ctl("queues", "--output", "json")).json()
    assert listed["queues"][0]["pending_count"] == 0  # zero values are printed, as numbers


async def test_submit_list_show_reprioritize_cancel(ctl: Dispatchctl, tmp_path: Path) -> None:
    payload = tmp_path / "payload.json"
    payload.write_text('{"to": "ada"}')
    first = ok(await ctl("submit", "mail", "--payload-file", str(payload), "-o", "json")).json()
    second = ok(
        await ctl(
            "submit",
            "mail",
            "--payload-file",
            "-",
            "--priority",
            "5",
            "--header",
            "k=v",
            stdin=b"from stdin",
        )
    )
    second_id = rows(second)[0][0]
    first_id = first["job"]["id"]
    pending = rows(await ctl("jobs", "mail", "--state", "pending"))
    assert [r[0] for r in pending] == [second_id, first_id]  # priority 5 first
    ok(await ctl("reprioritize", first_id, "9"))
    pending = rows(await ctl("jobs", "mail", "--state", "PENDING"))
    assert [(r[0], r[2]) for r in pending] == [(first_id, "9"), (second_id, "5")]
    limited = await ctl("jobs", "mail", "--limit", "1")
    assert len(rows(limited)) == 1
    assert "raise --limit" in limited.err

    detail = ok(await ctl("job", second_id)).out
    assert "payload:      from stdin" in detail
    assert "header k:     v" in detail
    as_json = ok(await ctl("job", first_id, "-o", "json")).json()["job"]
    assert base64.b64decode(as_json["payload"]) == b'{"to": "ada"}'

    cancelled = rows(await ctl("cancel", first_id))
    assert cancelled[0][:2] == [first_id, "CANCELLED"]
    again = await ctl("cancel", first_id)
    assert again.code == 1
    assert again.err.startswith("dispatchctl: FAILED_PRECONDITION: job ")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["job", "nope"], 1, "INVALID_ARGUMENT: job_id 'nope' is not a job id"),
        (["jobs", "mail", "--state", "bogus"], 2, "unknown state 'bogus'; use one of pending"),
        (["queue", "set", "mail", "--burst", "4"], 2, "--burst needs --rate"),
        (["queue", "set", "mail"], 2, "nothing to set"),
        (["pause", "no such queue!"], 1, "INVALID_ARGUMENT: "),
        (["submit", "mail", "--payload-file", "/nonexistent"], 2, "cannot read --payload-file"),
        (["watch", "--interval", "0"], 2, "--interval must be > 0"),
        (["queues", "--key", "k.pem"], 2, "TLS options: "),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ],
)
async def test_errors_print_the_reason_and_exit_non_zero(
    ctl: Dispatchctl, args: list[str], code: int, message: str
) -> None:
    run = await ctl(*args)
    assert (run.code, run.out) == (code, "")
    assert message in run.err


async def test_an_unreachable_server_is_an_error(tmp_path: Path) -> None:
    run = await dispatchctl("--target", "127.0.0.1:1", "--timeout", "2", "queues")
    assert run.code == 1
    assert run.err.startswith("dispatchctl: UNAVAILABLE: ")


async def test_watch_redraws_the_queue_table(ctl: Dispatchctl) -> None:
    ok(await ctl("queue", "set", "a", "--width", "1", "--create"))
    run = ok(await ctl("watch", "--count", "3", "--interval", "0.05"))
    assert run.out.count("dispatchctl watch ") == 3
    assert run.out.count("\na     0") == 3
    assert "\x1b[2J" not in run.out  # not a terminal: frames follow each other
    lines = ok(await ctl("watch", "--once", "-o", "json")).out.splitlines()
    assert [json.loads(line)["queues"][0]["name"] for line in lines] == ["a"]


async def test_watch_clears_the_screen_on_a_terminal(target: str) -> None:
    """Under a pseudo-terminal each frame starts with the ANSI clear."""
    main, replica = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        str(DISPATCHCTL),
        "--target",
        target,
        "watch",
        "--count",
        "2",
        "--interval",
        "0.05",
        stdout=replica,
        stderr=replica,
    )
    os.close(replica)
    assert await asyncio.wait_for(proc.wait(), 30) == 0
    out = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    assert out.count(b"\x1b[H\x1b[2J") == 2, out


async def test_drain(ctl: Dispatchctl, server: DispatchdServer) -> None:
    ok(await ctl("submit", "mail", "--payload", "x"))
    run = ok(await ctl("drain", "--grace", "1"))
    assert run.out.strip() == "draining: 1 pending, 0 underway"
    await asyncio.wait_for(server.stopped.wait(), 10)


async def test_rate_retry_and_purge(ctl: Dispatchctl, target: str) -> None:
    ok(
        await ctl(
            "queue", "set", "mail", "--width", "2", "--rate", "5", "--burst", "10", "--create"
        )
    )
    assert "5/s burst 10" in ok(await ctl("queues")).out
    (queue,) = ok(await ctl("queues", "-o", "json")).json()["queues"]
    assert queue["rate"] == {"per_second": 5.0, "burst": 10}
    cleared = ok(await ctl("queue", "set", "mail", "--rate", "0", "-o", "json")).json()["queue"]
    assert "rate" not in cleared  # unlimited again
    assert cleared["width"] == 2

    worker = Worker(target)

    @worker.handler("mail")
    def first_attempt_fails(job: ReceivedJob) -> bytes:
        if job.attempt == 1:
            raise PermanentError("bad address")
        return b"sent"

    run = asyncio.create_task(worker.run_async())
    try:
        await worker.wait_connected(10)
        async with AsyncClient(target) as client:
            job = await client.submit("mail", b"x")
            failed = await client.wait(job.id, timeout=10)
            assert failed.state is JobState.FAILED
            retried = rows(await ctl("retry", job.id))
            assert retried[0][:2] == [job.id, "PENDING"]
            done = await client.wait(job.id, timeout=10)
            assert (done.state, done.result) == (JobState.SUCCEEDED, b"sent")
    finally:
        await worker.stop()
        await run
    purged = ok(await ctl("purge", "mail", "--state", "succeeded"))
    assert purged.out.strip() == "purged 1 jobs from mail"
    gone = await ctl("job", job.id)
    assert gone.code == 1
    assert "NOT_FOUND" in gone.err


async def test_schedules_create_list_show_pause_resume_trigger_delete(ctl: Dispatchctl) -> None:
    made = ok(
        await ctl(
            "schedules",
            "create",
            "nightly",
            "--queue",
            "reports",
            "--cron",
            "30 2 * * *",
            "--time-zone",
            "Europe/Berlin",
            "--payload",
            "build",
            "--overlap",
            "buffer-one",
            "-o",
            "json",
        )
    ).json()["schedule"]
    assert made["spec"]["cron_expressions"] == ["30 2 * * *"]
    assert made["policies"]["overlap"] == "SCHEDULE_OVERLAP_POLICY_BUFFER_ONE"
    assert len(made["next_fire_times"]) == 10
    ok(await ctl("schedules", "create", "beat", "--queue", "pings", "--every", "3600"))
    listed = rows(await ctl("schedules", "list"))
    assert [r[0] for r in listed] == ["beat", "nightly"]
    shown = ok(await ctl("schedules", "show", "nightly")).out
    assert "overlap:     BUFFER_ONE" in shown
    assert "(Europe/Berlin)" in shown
    paused = ok(await ctl("schedules", "pause", "nightly", "--note", "moving", "-o", "json"))
    assert (paused.json()["schedule"]["paused"], paused.json()["schedule"]["note"]) == (
        True,
        "moving",
    )
    ok(await ctl("schedules", "resume", "nightly"))
    fired = ok(await ctl("schedules", "trigger", "nightly")).out
    assert fired.startswith("SUBMITTED ")
    ok(await ctl("schedules", "delete", "beat"))
    missing = await ctl("schedules", "show", "beat")
    assert missing.code == 1
    assert "NOT_FOUND" in missing.err
    wrong = await ctl("schedules", "create", "x", "--queue", "q")
    assert wrong.code == 2


async def test_queue_delete(ctl: Dispatchctl) -> None:
    ok(await ctl("queue", "set", "old", "--width", "0", "--create"))
    ok(await ctl("submit", "old", "--payload", "x"))
    refused = await ctl("queue", "delete", "old")
    assert refused.code == 1
    assert "FAILED_PRECONDITION: queue 'old' is not empty: it has 1 pending job" in refused.err
    ok(await ctl("queue", "set", "empty", "--width", "1", "--create"))
    assert ok(await ctl("queue", "delete", "empty")).out.strip() == (
        "deleted queue empty and 0 finished jobs"
    )
    assert "empty" not in ok(await ctl("queues")).out
