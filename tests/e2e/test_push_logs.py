"""A real dispatchd at --log-level info pushing jobs to a real HTTP endpoint logs nothing
per attempt: httpx's "HTTP Request: ..." INFO lines are silenced (the docs promise no line
per healthy job at info), while the server's own info lines still come."""

from __future__ import annotations

from pathlib import Path

from dispatchd_client import AsyncClient, HttpTarget, JobState, NewJob

from ..integration.endpoint import Endpoint
from .conftest import ServerProcess


async def test_http_push_attempts_log_no_line_at_info(
    tmp_path: Path, start_server: type[ServerProcess]
) -> None:
    server = start_server(tmp_path, "--http-allow-cidr", "127.0.0.0/8")
    target = server.wait_ready()
    endpoint = await Endpoint().start()
    try:
        async with AsyncClient(target) as client:
            await client.update_queue("hook", http_target=HttpTarget(url=endpoint.url), create=True)
            jobs = await client.submit_batch([NewJob("hook", b"x")] * 3)
            for job in jobs:
                assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
    finally:
        await endpoint.stop()
    server.terminate()
    assert server.wait() == 0
    assert len(endpoint.calls) == 3
    assert "queue hook: delivering to POST" in server.log  # info lines still come
    assert "HTTP Request" not in server.log, server.log
