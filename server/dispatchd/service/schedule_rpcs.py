"""The schedule RPCs: create, get, list, update (field mask), delete, pause, resume, trigger,
backfill. Each validates what only the wire form can get wrong, calls the backend, and
converts back; the firing itself is the backend's (docs/schedules.md)."""

from __future__ import annotations

from typing import Any

import grpc

from dispatchd import convert, schedule_convert
from dispatchd.backend import Backend
from dispatchd.engine.errors import InvalidArgument
from dispatchd.engine.limits import SUBMITTER_HEADER
from dispatchd.engine.schedules import ScheduleRecord
from dispatchd.service.errors import translating, translating_fields
from dispatchd_client.v1 import dispatcher_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]

SCHEDULE_MASK_PATHS = (
    "spec",
    "template",
    "policies",
    "policies.overlap",
    "policies.catchup_window",
    "policies.catchup_mode",
    "paused",
    "note",
)


def schedule_field(field: str) -> str:
    """Create and update name the schedule ``schedule``; the mask is beside it."""
    return field if field.startswith("update_mask") else f"schedule.{field}"


def _owned(rec: ScheduleRecord) -> ScheduleRecord:
    """With auth on, the server stamped the caller's identity on the template's headers
    (security/interceptor.py): it is the schedule's owner, and every job carries it."""
    rec.owner = rec.template.job.headers.get(SUBMITTER_HEADER, "")
    return rec


def _mask_changes(request: pb.UpdateScheduleRequest) -> dict[str, object]:
    msg = request.schedule
    paths = list(request.update_mask.paths)
    if not paths:
        paths = [p for p in ("spec", "template", "policies") if msg.HasField(p)]
        paths += [p for p in ("paused", "note") if getattr(msg, p)]
    unknown = sorted(set(paths) - set(SCHEDULE_MASK_PATHS))
    if unknown:
        raise InvalidArgument(
            f"update_mask names unknown fields {unknown}; settable: "
            f"{', '.join(SCHEDULE_MASK_PATHS)}",
            field="update_mask",
        )
    if not paths:
        raise InvalidArgument(
            "nothing to change: name the fields in update_mask", field="update_mask"
        )
    full = schedule_convert.definition_from_pb(msg)
    changes: dict[str, object] = {}
    if "spec" in paths:
        changes["spec"] = full.spec
    if "template" in paths:
        changes["template"] = full.template
        changes["owner"] = _owned(full).owner
    if "policies" in paths:
        changes["policy"] = full.policy
    for name in ("overlap", "catchup_window", "catchup_mode"):
        if f"policies.{name}" in paths:
            changes[f"policy.{name}"] = getattr(full.policy, name)
    if "paused" in paths:
        changes["paused"] = msg.paused
    if "note" in paths:
        changes["note"] = msg.note
    return changes


def _listed(rec: ScheduleRecord) -> pb.Schedule:
    return schedule_convert.schedule_to_pb(
        rec, next_fires=schedule_convert.NEXT_FIRES_LISTED, recent=3
    )


class ScheduleRpcs:
    """Mixed into the DispatcherService servicer."""

    _backend: Backend

    @translating_fields(schedule_field)
    async def CreateSchedule(
        self, request: pb.CreateScheduleRequest, context: Context
    ) -> pb.CreateScheduleResponse:
        rec = _owned(schedule_convert.definition_from_pb(request.schedule))
        rec = await self._backend.create_schedule(rec)
        return pb.CreateScheduleResponse(schedule=schedule_convert.schedule_to_pb(rec))

    @translating
    async def GetSchedule(
        self, request: pb.GetScheduleRequest, context: Context
    ) -> pb.GetScheduleResponse:
        rec = await self._backend.get_schedule(request.id)
        return pb.GetScheduleResponse(schedule=schedule_convert.schedule_to_pb(rec))

    @translating
    async def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: Context
    ) -> pb.ListSchedulesResponse:
        page, token = await self._backend.list_schedules(request.page_size, request.page_token)
        return pb.ListSchedulesResponse(schedules=[_listed(r) for r in page], next_page_token=token)

    @translating_fields(schedule_field)
    async def UpdateSchedule(
        self, request: pb.UpdateScheduleRequest, context: Context
    ) -> pb.UpdateScheduleResponse:
        changes = _mask_changes(request)
        rec = await self._backend.update_schedule(request.schedule.id, changes)
        return pb.UpdateScheduleResponse(schedule=schedule_convert.schedule_to_pb(rec))

    @translating
    async def DeleteSchedule(
        self, request: pb.DeleteScheduleRequest, context: Context
    ) -> pb.DeleteScheduleResponse:
        await self._backend.delete_schedule(request.id)
        return pb.DeleteScheduleResponse()

    @translating
    async def PauseSchedule(
        self, request: pb.PauseScheduleRequest, context: Context
    ) -> pb.PauseScheduleResponse:
        changes: dict[str, object] = {"paused": True, "note": request.note}
        rec = await self._backend.update_schedule(request.id, changes)
        return pb.PauseScheduleResponse(schedule=schedule_convert.schedule_to_pb(rec))

    @translating
    async def ResumeSchedule(
        self, request: pb.ResumeScheduleRequest, context: Context
    ) -> pb.ResumeScheduleResponse:
        changes: dict[str, object] = {"paused": False}
        if request.HasField("note"):
            changes["note"] = request.note
        rec = await self._backend.update_schedule(request.id, changes)
        return pb.ResumeScheduleResponse(schedule=schedule_convert.schedule_to_pb(rec))

    @translating
    async def TriggerSchedule(
        self, request: pb.TriggerScheduleRequest, context: Context
    ) -> pb.TriggerScheduleResponse:
        overlap = schedule_convert.overlap_of(request.overlap)
        firing = await self._backend.trigger_schedule(request.id, overlap)
        return pb.TriggerScheduleResponse(firing=schedule_convert.firing_to_pb(firing))

    @translating
    async def BackfillSchedule(
        self, request: pb.BackfillScheduleRequest, context: Context
    ) -> pb.BackfillScheduleResponse:
        for name in ("start_time", "end_time"):
            if not request.HasField(name):
                raise InvalidArgument(f"{name} is required: the range to backfill", field=name)
        overlap = schedule_convert.overlap_of(request.overlap)
        firings = await self._backend.backfill_schedule(
            request.id,
            convert.seconds(request.start_time),
            convert.seconds(request.end_time),
            overlap,
        )
        return pb.BackfillScheduleResponse(
            firings=[schedule_convert.firing_to_pb(f) for f in firings]
        )
