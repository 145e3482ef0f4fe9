"""The raw grpc.aio floor: one bidi method that answers every message with an ack.

Run as a script it is the baseline server (``python bench/baseline.py --port N``): grpc.aio
on uvloop, like dispatchd, with a generic handler and identity (bytes) serializers, so no
proto is involved and the handler does nothing but echo an ack. Imported, it is the client:
``streams`` bidi streams, each keeping up to ``window`` messages unacked -- the same shape as
dispatchd worker streams with that many credits -- one message per job, one ack per message.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence

import grpc

SERVICE = "bench.Baseline"
METHOD = f"/{SERVICE}/Echo"
MESSAGE = b"x" * 32
ACK = b"k"
EchoCall = grpc.aio.StreamStreamCall[bytes, bytes]
Echo = grpc.aio.StreamStreamMultiCallable[bytes, bytes]


async def _echo(requests: AsyncIterator[bytes], context: object) -> AsyncIterator[bytes]:
    async for _ in requests:
        yield ACK


async def serve(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.stream_stream_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Echo": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1.0)


def echo_method(chan: grpc.aio.Channel) -> Echo:
    method: Echo = chan.stream_stream(METHOD, None, None)  # None: bytes as they are
    return method


async def ping(echo: Echo) -> bool:
    """One message and its ack, for the readiness probe."""
    call: EchoCall = echo(None, wait_for_ready=False)
    try:
        await asyncio.wait_for(_one_round_trip(call), 0.5)
    except (grpc.RpcError, TimeoutError):
        call.cancel()
        return False
    return True


async def _one_round_trip(call: EchoCall) -> None:
    await call.write(MESSAGE)
    await call.read()
    await call.done_writing()
    await call.read()  # EOF once the server has ended the call


async def _stream(echo: Echo, messages: int, window: int) -> None:
    call: EchoCall = echo(None)
    credits = asyncio.Semaphore(window)

    async def write_all() -> None:
        for _ in range(messages):
            await credits.acquire()
            await call.write(MESSAGE)
        await call.done_writing()

    writer = asyncio.create_task(write_all())
    try:
        for _ in range(messages):
            if await call.read() != ACK:
                raise RuntimeError("baseline stream ended early")
            credits.release()
        await writer
    finally:
        writer.cancel()


async def run(echo: Echo, counts: Sequence[int], window: int) -> float:
    """Runs one stream per entry of ``counts``; returns the end (perf_counter) of the last ack."""
    await asyncio.gather(*(_stream(echo, n, window) for n in counts))
    return time.perf_counter()


def _main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--port", type=int, required=True)
    port: int = p.parse_args(argv).port
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(port))
    else:
        uvloop.run(serve(port))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
