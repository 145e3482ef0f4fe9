"""GET /api/events (web/live.py): the job and queue pages' Server-Sent Events, against a
real server on every backend, read by a plain HTTP client over a socket."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from dispatchd.config import Config
from dispatchd.runtime import DispatchdServer
from dispatchd.web import live
from dispatchd_client import AsyncClient, JobState
from tests.polling import eventually

from .conftest import StartWorker
from .web import get


@pytest.fixture
def server_config(server_config: Config) -> Config:
    return dataclasses.replace(server_config, http_listen="127.0.0.1:0")


def _port(server: DispatchdServer) -> int:
    assert server.web is not None
    return server.web.port


class Sse:
    """One open stream: its status and headers, then its messages one by one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self._body = b""  # the de-chunked body not read yet
        self._ended = False

    async def line(self) -> str:
        """The next line of the body ('' once it ended): aiohttp sends it chunked."""
        while b"\n" not in self._body and not self._ended:
            size = int((await self.reader.readline()).strip() or b"0", 16)
            if size == 0:
                self._ended = True
                break
            self._body += (await self.reader.readexactly(size + 2))[:-2]
        line, sep, self._body = self._body.partition(b"\n")
        return (line + sep).decode()

    async def head(self) -> None:
        line = await asyncio.wait_for(self.reader.readline(), 10)
        self.status = int(line.split()[1])
        while (line := await asyncio.wait_for(self.reader.readline(), 10)) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            self.headers[name.strip().lower()] = value.strip()

    async def message(self) -> dict[str, str]:
        """The next message with data (comments and the retry line skipped)."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(10):
            while True:
                line = await self.line()
                assert line, "the stream ended"
                line = line.rstrip("\n")
                if line == "" and "data" in fields:
                    return fields
                if line and not line.startswith(":"):
                    name, _, value = line.partition(": ")
                    fields[name] = value


@asynccontextmanager
async def sse(
    port: int, query: str, headers: str = "", path: str = "/api/events?"
) -> AsyncIterator[Sse]:
    stream = await _open_stream(port, path + query, headers)
    try:
        yield stream
    finally:
        stream.writer.close()


async def _open_stream(port: int, target: str, headers: str = "") -> Sse:
    """GET target on a connection of its own, its status and headers read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n".encode())
    stream = Sse(reader, writer)
    try:
        await stream.head()
    except BaseException:
        writer.close()
        raise
    return stream


async def _kinds_until(stream: Sse, last: str) -> list[str]:
    kinds: list[str] = []
    while not kinds or kinds[-1] != last:
        kinds.append(json.loads((await stream.message())["data"])["kind"])
    return kinds


async def test_a_job_stream_gets_the_job_events_and_a_queue_stream_its_queue(
    server: DispatchdServer, client: AsyncClient, start_worker: StartWorker
) -> None:
    port = _port(server)
    await client.update_queue("ev", width=1, create=True)
    job = await client.submit("ev", b"x")
    async with sse(port, f"job={job.id}") as mine, sse(port, "queue=ev") as queue:
        assert mine.status == 200
        assert mine.headers["content-type"].startswith("text/event-stream")
        # EventSource is a connect-src fetch: default-src 'self' allows it, nothing else
        assert mine.headers["content-security-policy"].startswith("default-src 'self';")
        start_worker(configure=lambda w: w.handler("ev")(lambda j: "ok"))
        assert (await client.wait(job.id, timeout=10)).state is JobState.SUCCEEDED
        assert await _kinds_until(mine, "SUCCEEDED") == ["DISPATCHED", "SUCCEEDED"]
        first = await queue.message()
        assert json.loads(first["data"])["job"] == job.id
        assert first["id"]
        # a reconnect with Last-Event-ID goes on after that event: the SUCCEEDED comes again
        async with sse(port, "queue=ev", f"Last-Event-ID: {first['id']}\r\n") as again:
            assert json.loads((await again.message())["data"])["kind"] == "SUCCEEDED"


async def test_bad_requests_are_refused_before_any_stream(server: DispatchdServer) -> None:
    port = _port(server)
    assert (await get(port, "/api/events")).status == 400
    assert (await get(port, "/api/events?job=A&queue=b")).status == 400
    # not a job (400 where the id's form is not this backend's: Redis ids name their queue)
    assert (await get(port, "/api/events?job=01ARZ3NDEKTSV4RRFFQ69G5FAV")).status in (400, 404)
    assert (await get(port, "/api/events?queue=nosuch")).status == 404
    bad_host = await get(port, "/api/events?queue=x", {"Host": "rebind.example"})
    assert bad_host.status == 421


async def test_past_the_bound_a_stream_is_refused_and_a_slot_frees_when_a_client_goes(
    server: DispatchdServer, client: AsyncClient
) -> None:
    port = _port(server)
    await client.update_queue("many", width=1, create=True)
    opened: list[Sse] = []
    try:
        for _ in range(live.MAX_STREAMS):
            s = await _open_stream(port, "/api/events?queue=many")
            assert s.status == 200
            opened.append(s)
        refused = await get(port, "/api/events?queue=many")
        assert refused.status == 503
        assert "at most" in refused.body
        opened.pop().writer.close()

        # the stream notices within TICK: then a lookup gets past the bound (404, not 503)
        async def past_the_bound() -> bool:
            return (await get(port, "/api/events?queue=nosuch")).status != 503

        await eventually(past_the_bound, live.TICK + 5, "a stream slot freed", interval=0.1)
    finally:
        for s in opened:
            s.writer.close()


async def _comments_until_end(stream: Sse) -> list[str]:
    lines: list[str] = []
    async with asyncio.timeout(10):
        while line := await stream.line():
            lines.append(line.rstrip("\n"))
    return lines


async def test_keep_alives_then_the_stream_ends_at_its_lifetime(
    server: DispatchdServer, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "KEEPALIVE", 0.2)
    monkeypatch.setattr(live, "TICK", 0.05)
    monkeypatch.setattr(live, "MAX_SECONDS", 1.0)
    await client.update_queue("alive", width=1, create=True)
    async with sse(_port(server), "queue=alive") as stream:
        lines = await _comments_until_end(stream)  # ends by itself: the browser reconnects
    assert lines[:2] == [f"retry: {live.RETRY_MS}", ": open"]
    assert lines.count(": keep-alive") >= 3


async def test_a_server_stop_ends_an_open_stream_at_once(
    server: DispatchdServer, client: AsyncClient
) -> None:
    await client.update_queue("stop", width=1, create=True)
    assert server.web is not None
    async with sse(_port(server), "queue=stop") as stream:
        assert await stream.line() == f"retry: {live.RETRY_MS}\n"  # the stream is running
        async with asyncio.timeout(5):  # not aiohttp's 60 s wait for its handlers
            await server.web.close()
        assert await _comments_until_end(stream) is not None


async def test_a_head_is_refused(server: DispatchdServer, client: AsyncClient) -> None:
    await client.update_queue("head", width=1, create=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
    writer.write(b"HEAD /api/events?queue=head HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    try:
        assert (await asyncio.wait_for(reader.readline(), 10)).split()[1] == b"405"
    finally:
        writer.close()


async def test_the_workers_and_overview_figures_are_pushed_to_every_stream(
    server: DispatchdServer, client: AsyncClient, start_worker: StartWorker
) -> None:
    port = _port(server)
    await client.update_queue("pushed", width=1, create=True)
    workers = "/api/live/workers"
    async with sse(port, "", path=workers) as one, sse(port, "", path=workers) as two:
        assert one.status == 200
        assert one.headers["content-type"].startswith("text/event-stream")
        for stream in (one, two):
            first = await stream.message()
            assert first["event"] == "workers"
            assert json.loads(first["data"]) == {"workers": []}
        start_worker(configure=lambda w: w.handler("pushed")(lambda j: "ok"), worker_id="pw")
        for stream in (one, two):  # sent when it changed, to every stream
            data = json.loads((await stream.message())["data"])
            assert [w["worker_id"] for w in data["workers"]] == ["pw"]
    async with sse(port, "all=1", path="/api/live/overview?") as overview:
        message = await overview.message()
        assert message["event"] == "overview"
        data = json.loads(message["data"])
        assert [q["name"] for q in data["queues"]] == ["pushed"]
        assert set(data["chart"]["series"]) == {"dispatched", "succeeded", "failed"}
    assert (await get(port, "/api/live/nosuch")).status == 404


async def test_pushed_streams_share_the_bound_of_event_streams(
    server: DispatchdServer, client: AsyncClient
) -> None:
    port = _port(server)
    await client.update_queue("bound", width=1, create=True)
    opened: list[Sse] = []
    try:
        for i in range(live.MAX_STREAMS):
            path = "/api/live/overview" if i % 2 else "/api/events?queue=bound"
            s = await _open_stream(port, path)
            assert s.status == 200
            opened.append(s)
        refused = await get(port, "/api/live/workers")
        assert refused.status == 503
        assert "the page polls instead" in refused.body
    finally:
        for s in opened:
            s.writer.close()
