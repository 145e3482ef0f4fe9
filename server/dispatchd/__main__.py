"""`dispatchd` / `python -m dispatchd`: parse config, serve, drain on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from dispatchd.config import Config, ConfigError, load
from dispatchd.runtime import DispatchdServer, StartError
from dispatchd.store import transfer
from dispatchd.store.snapshot import SnapshotError

log = logging.getLogger("dispatchd")


async def serve(config: Config) -> int:
    server = DispatchdServer(config)
    try:
        await server.start()
    except (StartError, SnapshotError) as e:
        log.error("%s", e)
        return 1
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.start_drain, None)
    await server.stopped.wait()
    return 0


def _run(config: Config) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(config))
    return uvloop.run(serve(config))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("export", "import"):
        return transfer.main(args)
    try:
        config = load(args)
    except ConfigError as e:
        print(f"dispatchd: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return _run(config)


if __name__ == "__main__":
    sys.exit(main())
