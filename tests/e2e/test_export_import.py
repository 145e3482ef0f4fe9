"""`dispatchd export` / `dispatchd import` move jobs between data dirs while stopped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dispatchd_client import Client, JobState, Rate

from .conftest import ServerProcess


def _dispatchd(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatchd", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_export_then_import_into_a_new_data_dir(
    tmp_path: Path, start_server: type[ServerProcess]
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    first = start_server(old)
    with Client(first.wait_ready()) as client:
        client.update_queue("mig", rate=Rate(5, 2), width=3, create=True)
        ids = [client.submit("mig", f"job {i}".encode(), priority=i).id for i in range(5)]
    first.terminate()
    assert first.wait() == 0

    queues_file = tmp_path / "queues.ndjson"
    out = _dispatchd("export", "--data-dir", str(old), "--queues", str(queues_file))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 5
    assert {json.loads(line)["id"] for line in lines} == set(ids)
    assert "exported 5 jobs" in out.stderr

    imported = _dispatchd(
        "import", "--data-dir", str(new), "--queues", str(queues_file), stdin=out.stdout
    )
    assert imported.returncode == 0, imported.stderr
    second = start_server(new)
    with Client(second.wait_ready()) as client:
        queue = client.get_queue("mig")
        assert (queue.width, queue.rate, queue.pending_count) == (3, Rate(5.0, 2), 5)
        listed = [j.id for j in client.list_jobs("mig", JobState.PENDING)]
        assert listed == list(reversed(ids))  # priority order survived
        assert client.get(ids[2]).payload == b"job 2"
    second.terminate()
    assert second.wait() == 0


def test_import_refuses_a_bad_line_and_imports_nothing(tmp_path: Path) -> None:
    good = json.dumps({"id": "01J0000000000000000000000A", "queue": "q"})
    result = _dispatchd("import", "--data-dir", str(tmp_path), stdin=f"{good}\nnot json\n")
    assert result.returncode == 1
    assert "jobs:2: not a dispatchd.v1.Job" in result.stderr
    assert not (tmp_path / "journal.sqlite3").exists()  # nothing was written


def test_export_without_data_says_so(tmp_path: Path) -> None:
    result = _dispatchd("export", "--data-dir", str(tmp_path / "empty"))
    assert result.returncode == 1
    assert "no journal.sqlite3 and no snapshot.pb" in result.stderr
