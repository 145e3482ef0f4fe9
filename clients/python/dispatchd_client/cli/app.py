"""dispatchctl's command line: options, subcommands, connection, and exit codes.

Exit codes: 0 done; 1 the server answered with an error (its status and message are printed
to stderr) or could not be reached; 2 the command line is wrong; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc

from dispatchd_client._channel import TLS, ChannelSpec
from dispatchd_client.cli import commands as cmd
from dispatchd_client.cli.requests import UsageError
from dispatchd_client.cli.schedule_commands import add_schedule_commands
from dispatchd_client.errors import status_code_of

DEFAULT_TARGET = "127.0.0.1:50051"
#: Defaults of the common options, applied after parsing: set on the parser, they would land on
#: the option objects that the subcommands share and override a value given before the command.
DEFAULTS = {"output": "table", "timeout": 30.0, "tls": False}
#: Connection options and the environment variables that give their defaults.
ENV = {
    "target": "DISPATCHCTL_TARGET",
    "token": "DISPATCHCTL_TOKEN",
    "token_file": "DISPATCHCTL_TOKEN_FILE",
    "ca": "DISPATCHCTL_CA",
    "cert": "DISPATCHCTL_CERT",
    "key": "DISPATCHCTL_KEY",
    "server_name": "DISPATCHCTL_SERVER_NAME",
}


def _common_options() -> argparse.ArgumentParser:
    """Options accepted before or after the subcommand (defaults are filled in later)."""
    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    g = p.add_argument_group("connection (defaults from DISPATCHCTL_<OPTION>)")
    g.add_argument("--target", help=f"server host:port (default {DEFAULT_TARGET})")
    g.add_argument("--token", help="bearer token (prefer --token-file: argv is visible to ps)")
    g.add_argument("--token-file", help="file holding the bearer token")
    g.add_argument("--tls", action="store_true", help="use TLS with the system CA roots")
    g.add_argument("--ca", help="PEM CA bundle that signed the server (implies --tls)")
    g.add_argument("--cert", help="PEM client certificate for mTLS (implies --tls)")
    g.add_argument("--key", help="PEM key of --cert")
    g.add_argument("--server-name", help="name to check the server certificate against")
    g.add_argument("--timeout", type=float, help="seconds per call (default 30)")
    p.add_argument("-o", "--output", choices=("table", "json"), help="table (default) or json")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="dispatchctl",
        description="Operate a dispatchd server: queues, jobs, schedules, drain.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, run: cmd.Command, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(run=run)
        return p

    add("queues", cmd.queues, "list queues: pending, underway, width, rate, paused")
    queue = sub.add_parser("queue", help="show or change one queue").add_subparsers(
        dest="queue_command", required=True, metavar="ACTION"
    )
    show = queue.add_parser("show", parents=[common], help="one queue's settings and counts")
    show.add_argument("name")
    show.set_defaults(run=cmd.queue_show)
    qset = queue.add_parser("set", parents=[common], help="change settings live")
    qset.add_argument("name")
    qset.add_argument("--width", type=int, help="most jobs underway at once (0: dispatch none)")
    qset.add_argument("--rate", type=float, help="dispatches per second (0: unlimited)")
    qset.add_argument("--burst", type=int, help="rate tokens saved up (needs --rate)")
    qset.add_argument("--lease", type=float, help="lease seconds of new deliveries")
    qset.add_argument(
        "--max-throttle-bounces",
        type=int,
        help="throttle signals one job may answer with before one counts as a failed attempt",
    )
    qset.add_argument(
        "--adaptive",
        metavar="floor=F[,decrease=D][,increase=I][,quiet=S]|off",
        help="adapt the rate to throttle signals (AIMD): x D per signal (0.5), not below F "
        "per second, +I per second (5%% of the rate) after each S seconds (1) without one",
    )
    qset.add_argument(
        "--windows",
        metavar="LIMIT/PERIOD[,...]|off",
        help="quotas, all enforced: e.g. 10/1s,500/1m,20000/1d (periods in s, m, h or d)",
    )
    qset.add_argument("--create", action="store_true", help="create the queue if missing")
    qset.set_defaults(run=cmd.queue_set)
    qdel = queue.add_parser(
        "delete",
        parents=[common],
        help="delete an empty queue with its settings and finished jobs",
        description="delete an empty queue with its settings and finished jobs (refused while "
        "it has waiting or underway jobs, slots or connected workers)",
    )
    qdel.add_argument("name")
    qdel.set_defaults(run=cmd.queue_delete)
    add("pause", cmd.pause, "stop new dispatches (underway jobs run on)").add_argument("name")
    p = add("resume", cmd.resume, "lift a pause, optionally with a new width")
    p.add_argument("name")
    p.add_argument("--width", type=int, help="set the width while resuming")
    p = add("jobs", cmd.jobs, "list the jobs of a queue (pending ones in dispatch order)")
    p.add_argument("name")
    p.add_argument("--state", default="all", help="pending, underway, succeeded, ... or all")
    p.add_argument("--limit", type=int, default=100, help="most jobs to show (default 100)")
    add("job", cmd.job, "one job in detail").add_argument("id")
    add("cancel", cmd.cancel, "cancel a job").add_argument("id")
    p = add("reprioritize", cmd.reprioritize, "change the priority of an unfinished job")
    p.add_argument("id")
    p.add_argument("priority", type=int)
    add("retry", cmd.retry, "put a failed or dead job back to pending").add_argument("id")
    p = add("purge", cmd.purge, "forget finished jobs of a queue")
    p.add_argument("name")
    p.add_argument("--state", default="all", help="one finished state, or all (default)")
    p = add("drain", cmd.drain, "stop intake, finish underway jobs, snapshot, exit")
    p.add_argument("--grace", type=float, help="seconds for underway jobs (default: server's)")
    p = add("submit", cmd.submit, "submit one job")
    p.add_argument("name")
    payload = p.add_mutually_exclusive_group(required=True)
    payload.add_argument("--payload-file", help="file with the payload ('-': stdin)")
    payload.add_argument("--payload", help="the payload as text")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--content-type", default="")
    p.add_argument("--header", action="append", default=[], help="KEY=VALUE (repeatable)")
    p = add(
        "watch", cmd.watch, "a live, refreshing view of the queues, or (--events) the event stream"
    )
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    p.add_argument(
        "--events",
        action="store_true",
        help="stream job lifecycle events (WatchEvents) instead of redrawing the queue table",
    )
    p.add_argument("--queue", action="append", default=[], help="--events: this queue only")
    p.add_argument("--job", action="append", default=[], help="--events: this job only")
    p.add_argument("--batch", action="append", default=[], help="--events: this batch only")
    p.add_argument(
        "--kind", action="append", default=[], help="--events: this kind only (e.g. succeeded)"
    )
    p.add_argument("--from", dest="resume", default="", help="--events: a resume token")
    frames = p.add_mutually_exclusive_group()
    frames.add_argument("--count", type=int, help="stop after this many refreshes")
    frames.add_argument("--once", action="store_true", help="draw once and exit")
    add_schedule_commands(sub, common)
    return parser


def _channel_spec(ns: argparse.Namespace, env: Mapping[str, str]) -> ChannelSpec:
    opts = {name: getattr(ns, name, None) or env.get(var) or None for name, var in ENV.items()}
    token = opts["token"]
    if opts["token_file"]:
        try:
            token = Path(opts["token_file"]).read_text().strip()
        except OSError as e:
            raise UsageError(f"cannot read --token-file {opts['token_file']}: {e}") from None
    tls: TLS | None = None
    if ns.tls or opts["ca"] or opts["cert"] or opts["key"] or opts["server_name"]:
        try:
            tls = TLS.from_files(
                opts["ca"], opts["cert"], opts["key"], server_name=opts["server_name"]
            )
        except (OSError, ValueError) as e:
            raise UsageError(f"TLS options: {e}") from None
    try:
        return ChannelSpec.of(opts["target"] or DEFAULT_TARGET, tls=tls, token=token)
    except ValueError as e:
        raise UsageError(str(e)) from None


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    ns = build_parser().parse_args(argv)
    for name, value in DEFAULTS.items():
        if not hasattr(ns, name):
            setattr(ns, name, value)
    try:
        spec = _channel_spec(ns, env)
        ns.target = spec.target
        with spec.sync_channel() as channel:
            ns.run(ns, cmd.Api(channel, ns.timeout if ns.timeout > 0 else None))
    except UsageError as e:
        print(f"dispatchctl: {e}", file=sys.stderr)
        return 2
    except grpc.RpcError as e:
        print(f"dispatchctl: {status_code_of(e).name}: {cmd.details_of(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
