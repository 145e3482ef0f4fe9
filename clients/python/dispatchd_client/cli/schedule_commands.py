"""``dispatchctl schedules ...``: list, show, create, pause, resume, trigger, delete.

::

    dispatchctl schedules create nightly --queue reports --cron "30 2 * * *" \\
        --time-zone Europe/Berlin --payload build --overlap skip
    dispatchctl schedules create heartbeat --queue pings --every 60
    dispatchctl schedules list
    dispatchctl schedules pause nightly --note "migrating the report store"
    dispatchctl schedules trigger nightly
"""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from dispatchd_client.cli import render
from dispatchd_client.cli.commands import Api, _emit
from dispatchd_client.cli.requests import UsageError
from dispatchd_client.v1 import dispatcher_pb2 as pb

COLUMNS = ("ID", "QUEUE", "SPEC", "PAUSED", "NEXT FIRE", "LAST TICK", "OUTCOME", "SUBMITTED")
OVERLAPS = {
    "skip": pb.SCHEDULE_OVERLAP_POLICY_SKIP,
    "allow": pb.SCHEDULE_OVERLAP_POLICY_ALLOW,
    "buffer-one": pb.SCHEDULE_OVERLAP_POLICY_BUFFER_ONE,
}
CATCHUP = {"all": pb.SCHEDULE_CATCHUP_MODE_ALL, "latest": pb.SCHEDULE_CATCHUP_MODE_LATEST}


def _when(ts: Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return ts.ToDatetime(tzinfo=datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _spec_text(spec: pb.ScheduleSpec) -> str:
    parts = [f"cron {e!r}" for e in spec.cron_expressions]
    parts += [f"every {i.every.seconds}s+{i.offset.seconds}s" for i in spec.intervals]
    zone = f" ({spec.time_zone})" if spec.time_zone and spec.cron_expressions else ""
    return ", ".join(parts) + zone


def _outcome(f: pb.ScheduleFiring) -> str:
    return str(pb.FiringOutcome.Name(f.outcome).removeprefix("FIRING_OUTCOME_"))


def schedules_table(schedules: list[pb.Schedule]) -> str:
    rows = []
    for s in schedules:
        last = s.recent_firings[0] if s.recent_firings else None
        rows.append(
            (
                s.id,
                s.template.queue,
                _spec_text(s.spec),
                "yes" if s.paused else "no",
                _when(s.next_fire_times[0]) if s.next_fire_times else "-",
                _when(last.tick_time) if last else "-",
                _outcome(last) if last else "-",
                str(s.submitted_count),
            )
        )
    return render.table(COLUMNS, rows)


def schedule_details(s: pb.Schedule) -> str:
    policies = s.policies
    lines = [
        f"id:          {s.id}",
        f"spec:        {_spec_text(s.spec)}",
        f"queue:       {s.template.queue}  priority {s.template.priority}",
        "overlap:     "
        + pb.ScheduleOverlapPolicy.Name(policies.overlap).removeprefix("SCHEDULE_OVERLAP_POLICY_"),
        f"catch-up:    {policies.catchup_window.seconds}s, "
        + pb.ScheduleCatchupMode.Name(policies.catchup_mode).removeprefix("SCHEDULE_CATCHUP_MODE_"),
        f"paused:      {'yes' if s.paused else 'no'}" + (f" ({s.note})" if s.note else ""),
        f"owner:       {s.owner or '-'}",
        f"counts:      {s.submitted_count} submitted, {s.skipped_count} skipped, "
        f"{s.missed_count} missed, {s.refused_count} refused",
        "next fires:  " + (", ".join(_when(t) for t in s.next_fire_times) or "-"),
        "recent firings:",
    ]
    for f in s.recent_firings:
        cause = pb.FiringCause.Name(f.cause).removeprefix("FIRING_CAUSE_")
        extra = f"  {f.message}" if f.message else ""
        lines.append(f"  {_when(f.tick_time)}  {_outcome(f):<10} {cause:<9} {f.job_id}{extra}")
    return "\n".join(lines)


def _list(ns: argparse.Namespace, api: Api) -> None:
    found: list[pb.Schedule] = []
    token = ""
    while True:
        resp: pb.ListSchedulesResponse = api(
            "ListSchedules", pb.ListSchedulesRequest(page_size=500, page_token=token)
        )
        found += resp.schedules
        token = resp.next_page_token
        if not token:
            break
    whole = pb.ListSchedulesResponse(schedules=found)
    _emit(ns, whole, lambda: schedules_table(found))


def _shown(ns: argparse.Namespace, resp: Any) -> None:
    _emit(ns, resp, lambda: schedule_details(resp.schedule))


def _show(ns: argparse.Namespace, api: Api) -> None:
    _shown(ns, api("GetSchedule", pb.GetScheduleRequest(id=ns.id)))


def _create(ns: argparse.Namespace, api: Api) -> None:
    if not ns.cron and ns.every is None:
        raise UsageError("give --cron and/or --every: when the schedule fires")
    spec = pb.ScheduleSpec(cron_expressions=ns.cron, time_zone=ns.time_zone)
    if ns.every is not None:
        interval = spec.intervals.add()
        interval.every.FromSeconds(ns.every)
        interval.offset.FromSeconds(ns.offset)
    template = pb.JobSpec(queue=ns.queue, payload=ns.payload.encode(), priority=ns.priority)
    for item in ns.header:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--header {item!r}: use KEY=VALUE")
        template.headers[key] = value
    policies = pb.SchedulePolicies(overlap=OVERLAPS[ns.overlap], catchup_mode=CATCHUP[ns.catchup])
    policies.catchup_window.FromSeconds(ns.catchup_window)
    schedule = pb.Schedule(
        id=ns.id, spec=spec, template=template, policies=policies, paused=ns.paused, note=ns.note
    )
    _shown(ns, api("CreateSchedule", pb.CreateScheduleRequest(schedule=schedule)))


def _pause(ns: argparse.Namespace, api: Api) -> None:
    _shown(ns, api("PauseSchedule", pb.PauseScheduleRequest(id=ns.id, note=ns.note)))


def _resume(ns: argparse.Namespace, api: Api) -> None:
    request = pb.ResumeScheduleRequest(id=ns.id)
    if ns.note is not None:
        request.note = ns.note
    _shown(ns, api("ResumeSchedule", request))


def _trigger(ns: argparse.Namespace, api: Api) -> None:
    resp: pb.TriggerScheduleResponse = api("TriggerSchedule", pb.TriggerScheduleRequest(id=ns.id))
    f = resp.firing
    _emit(ns, resp, lambda: f"{_outcome(f)} {f.job_id} {f.message}".rstrip())


def _delete(ns: argparse.Namespace, api: Api) -> None:
    resp: pb.DeleteScheduleResponse = api("DeleteSchedule", pb.DeleteScheduleRequest(id=ns.id))
    _emit(ns, resp, lambda: f"deleted schedule {ns.id}")


def add_schedule_commands(
    sub: Any,  # argparse's private _SubParsersAction
    common: argparse.ArgumentParser,
) -> None:
    schedules = sub.add_parser("schedules", help="recurring schedules: list, show, change")
    actions = schedules.add_subparsers(dest="schedule_command", required=True, metavar="ACTION")

    def add(name: str, run: Any, help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(
            name, parents=[common], help=help, description=help
        )
        p.set_defaults(run=run)
        return p

    add("list", _list, "every schedule: next fire, last tick and its outcome")
    add("show", _show, "one schedule: next fire times and recent firings").add_argument("id")
    p = add("create", _create, "add a schedule (each tick submits one job)")
    p.add_argument("id")
    p.add_argument("--queue", required=True, help="the queue each job goes to")
    p.add_argument("--cron", action="append", default=[], help="cron expression (repeatable)")
    p.add_argument("--time-zone", default="", help="IANA zone of the cron expressions (UTC)")
    p.add_argument("--every", type=int, help="an interval in whole seconds")
    p.add_argument("--offset", type=int, default=0, help="the interval's offset in seconds")
    p.add_argument("--payload", default="", help="each job's payload, as text")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--header", action="append", default=[], help="KEY=VALUE (repeatable)")
    p.add_argument("--overlap", choices=sorted(OVERLAPS), default="skip")
    p.add_argument("--catchup", choices=sorted(CATCHUP), default="all")
    p.add_argument("--catchup-window", type=int, default=3600, help="seconds (default 3600)")
    p.add_argument("--paused", action="store_true", help="create it paused")
    p.add_argument("--note", default="")
    p = add("pause", _pause, "stop a schedule from firing")
    p.add_argument("id")
    p.add_argument("--note", default="", help="why, for the people who look")
    p = add("resume", _resume, "fire again from the next tick on")
    p.add_argument("id")
    p.add_argument("--note", help="replace the note")
    add("trigger", _trigger, "fire once now").add_argument("id")
    add("delete", _delete, "remove a schedule (its jobs stay)").add_argument("id")
