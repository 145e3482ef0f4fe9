"""`dispatchd` / `python -m dispatchd`: parse config, serve, drain on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from opentelemetry.sdk.trace import TracerProvider

from dispatchd.config import Config, ConfigError, load
from dispatchd.observability import TracingConfigError, logs, provider_from_env
from dispatchd.runtime import DispatchdServer, StartError
from dispatchd.store import transfer
from dispatchd.store.snapshot import SnapshotError

log = logging.getLogger("dispatchd")

#: Exit statuses beyond 0 (clean) and 1/2 (could not start, bad configuration).
EXIT_DRAIN_FAILED = 3
EXIT_FORCED = 4


async def serve(config: Config, tracer_provider: TracerProvider | None = None) -> int:
    try:
        server = DispatchdServer(config, tracer_provider=tracer_provider)
        await server.start()
    except (StartError, SnapshotError) as e:
        log.error("%s", e)
        return 1
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            server.request_drain()
            return
        # A second signal while draining: the operator will not wait. The journal (when
        # on) holds every acknowledged change, as after a crash.
        log.error("second stop signal: exiting without finishing the drain")
        logging.shutdown()
        os._exit(EXIT_FORCED)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await server.stopped.wait()
    if server.drain_failure is not None:
        log.error(
            "exiting with status %d: the drain failed (%s)", EXIT_DRAIN_FAILED, server.drain_failure
        )
        return EXIT_DRAIN_FAILED
    return 0


def _run(config: Config, tracer_provider: TracerProvider | None) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(config, tracer_provider))
    return uvloop.run(serve(config, tracer_provider))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("export", "import"):
        return transfer.main(args)
    try:
        config = load(args)
    except ConfigError as e:
        print(f"dispatchd: {e}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format)
    try:
        provider = provider_from_env(os.environ)
    except TracingConfigError as e:
        log.error("%s", e)
        return 2
    if provider is not None:
        log.info("tracing on: spans are exported as OTEL_* configures")
    try:
        return _run(config, provider)
    finally:
        if provider is not None:
            provider.shutdown()  # flushes the spans still batched


if __name__ == "__main__":
    sys.exit(main())
