"""A TCP proxy a test can partition: while partitioned it forwards nothing either way but
closes nothing, as a network that drops packets does (a half-open connection: neither
side hears a FIN or a reset)."""

from __future__ import annotations

import asyncio
import contextlib


class PartitionProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._open = asyncio.Event()
        self._open.set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{self.port}"

    def partition(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        """New connections work again; the ones cut off stay dead (their peers gave up)."""
        for writer in self._writers:
            writer.close()
        self._writers.clear()
        self._open.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open.is_set():  # a partitioned network: the connection goes nowhere
            self._writers.append(writer)
            return
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while True:
                data = await src.read(65536)
                if not data:
                    break
                if not self._open.is_set():
                    return  # dropped on the floor, and everything after it
                dst.write(data)
                await dst.drain()
