"""Which role each RPC needs: the one table the auth interceptor reads.

Every method of DispatcherService is listed (a unit test compares the table with the proto, so
a new RPC cannot ship unclassified). Anything not listed needs ``admin``: deny by default.
"""

from __future__ import annotations

from dataclasses import dataclass

from dispatchd.engine.limits import SUBMITTER_HEADER
from dispatchd.security.tokens import Role

SERVICE = "dispatchd.v1.DispatcherService"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
# SUBMITTER_HEADER is stamped by the server on every job submitted while auth is on; the
# caller's value, if any, is overwritten, and any other spelling of it (any header starting
# with "dispatchd-" in any case) is refused by the engine's header check. It tells whose job
# it is (for ``own_jobs``) and who sent it (for people).
__all__ = ["OPEN_METHODS", "RULES", "SUBMITTER_HEADER", "Rule", "rule_for"]


@dataclass(frozen=True, slots=True)
class Rule:
    """What a caller needs for one method."""

    role: Role | None
    """The role needed (admin always suffices); None: any known token."""
    own_jobs: bool = False
    """A caller without admin may only touch jobs its own identity submitted."""
    stamps_submitter: bool = False
    """The method submits jobs: the server stamps SUBMITTER_HEADER on each."""


def _m(name: str) -> str:
    return f"/{SERVICE}/{name}"


_SUBMIT = Rule(Role.SUBMIT, stamps_submitter=True)
_OWN_JOB = Rule(Role.SUBMIT, own_jobs=True)
_WORK = Rule(Role.WORK)
_ADMIN = Rule(Role.ADMIN)
_ANY = Rule(None)
_SCHEDULE_OWNER = Rule(Role.ADMIN, stamps_submitter=True)

RULES: dict[str, Rule] = {
    _m("Submit"): _SUBMIT,
    _m("SubmitBatch"): _SUBMIT,
    _m("GetJob"): _OWN_JOB,
    _m("WaitJob"): _OWN_JOB,
    _m("CancelJob"): _OWN_JOB,
    _m("Work"): _WORK,
    # Slots are width held by work that runs outside dispatchd workers: a worker's business.
    _m("AcquireSlot"): _WORK,
    _m("RenewSlot"): _WORK,
    _m("ReleaseSlot"): _WORK,
    # Reading other people's jobs and queues, and changing anything shared, is an operator's.
    _m("ReprioritizeJob"): _ADMIN,
    _m("ListJobs"): _ADMIN,
    _m("GetQueue"): _ADMIN,
    _m("ListQueues"): _ADMIN,
    _m("UpdateQueue"): _ADMIN,
    _m("PauseQueue"): _ADMIN,
    _m("ResumeQueue"): _ADMIN,
    _m("Drain"): _ADMIN,
    _m("RetryJob"): _ADMIN,
    _m("PurgeJobs"): _ADMIN,
    # Schedules submit jobs on their own for as long as they live: making and changing them is
    # an operator's, and so is reading them (their templates hold payloads and headers, as
    # queues and jobs of others do). A schedule's jobs carry its owner as their submitter.
    _m("CreateSchedule"): _SCHEDULE_OWNER,
    _m("UpdateSchedule"): _SCHEDULE_OWNER,
    _m("GetSchedule"): _ADMIN,
    _m("ListSchedules"): _ADMIN,
    _m("DeleteSchedule"): _ADMIN,
    _m("PauseSchedule"): _ADMIN,
    _m("ResumeSchedule"): _ADMIN,
    _m("TriggerSchedule"): _ADMIN,
    _m("BackfillSchedule"): _ADMIN,
    _m("DeleteQueue"): _ADMIN,
    # Batches (docs/workflows.md) are a producer's: it opens one (its callbacks are jobs it
    # submits, stamped with it), fills it, closes and waits for it. Cancelling a whole batch
    # reaches jobs other submitters may have put in it: an operator's.
    _m("CreateBatch"): _SUBMIT,
    _m("GetBatch"): Rule(Role.SUBMIT),
    _m("WaitBatch"): Rule(Role.SUBMIT),
    _m("CloseBatch"): Rule(Role.SUBMIT),
    _m("CancelBatch"): _ADMIN,
    # Every job's events (ids, errors, workers) across queues: what an operator watches.
    _m("WatchEvents"): _ADMIN,
    # The schema is public anyway, but a stranger has no use for it.
    **{f"/{s}/ServerReflectionInfo": _ANY for s in REFLECTION_SERVICES},
}

#: Kubelet probes and load balancers carry no token.
OPEN_METHODS = frozenset({f"/{HEALTH_SERVICE}/Check", f"/{HEALTH_SERVICE}/Watch"})


def rule_for(method: str) -> Rule | None:
    """The rule of a method path (``/package.Service/Method``); None means open."""
    if method in OPEN_METHODS:
        return None
    return RULES.get(method, _ADMIN)
