"""Engine records <-> the flat strings the Lua scripts keep in Redis hashes.

The Redis backend hands the same JobRecord and QueueView types to the service layer as
the embedded engine does, so dispatchd.convert builds every response message."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dispatchd.engine import (
    AttemptRecord,
    JobFailure,
    JobRecord,
    JobState,
    LeaseRecord,
    NewJob,
    QueueSettings,
    WorkerRecord,
)
from dispatchd.engine.errors import InvalidArgument
from dispatchd.engine.flow_rules import BATCH_CANCELLED, PARENT_FAILED
from dispatchd.engine.model import QueueFigures, QueueView, dedup_name
from dispatchd.engine.paging import BAD_TOKEN, Cursor
from dispatchd.engine.policies import AdaptiveRate, KeyLimits, Rate, RateWindow, RetryPolicy
from dispatchd.engine.reasons import REQUEUED
from dispatchd.engine.targets import HttpTarget
from dispatchd.engine.throttling import DEFAULT_MAX_BOUNCES
from dispatchd.redis.errors import ScriptReplyError
from dispatchd.redis.scripts import JOB_FIELDS

Reply = bytes | None
JOB_ID_SEPARATOR = "@"
#: Job ids of this backend: `<ULID>@<queue name>` (see job_id()).
JOB_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}@[A-Za-z0-9._:-]{1,128}")
_F = {name: i for i, name in enumerate(JOB_FIELDS)}


def base(queue: str) -> str:
    """The hash tag every key of one queue shares: one Cluster slot per queue."""
    return "{dq:" + queue + "}"


def cfg_key(queue: str) -> str:
    return base(queue) + ":cfg"


def job_key(queue: str, job_id: str) -> str:
    return base(queue) + ":j:" + job_id


def job_id(ulid: str, queue: str) -> str:
    """Job ids carry their queue (`<ulid>@<queue>`), so any replica finds a job's keys
    without a global index that would live on another Cluster slot."""
    return ulid + JOB_ID_SEPARATOR + queue


def queue_of(job_id: str) -> str | None:
    """The queue a job id names, or None when the id is not one of ours."""
    ulid, sep, queue = job_id.partition(JOB_ID_SEPARATOR)
    return queue if sep and ulid and queue else None


def policy_text(p: RetryPolicy | None) -> str:
    if p is None:
        return ""
    return f"{p.max_attempts}|{p.min_backoff!r}|{p.max_backoff!r}|{p.multiplier!r}|{p.jitter!r}"


def policy_of(text: str) -> RetryPolicy | None:
    if not text:
        return None
    n, lo, hi, mult, jitter = text.split("|")
    return RetryPolicy(int(n), float(lo), float(hi), float(mult), float(jitter))


def _time(t: float | None) -> str:
    return "" if t is None else f"{t:.6f}"


def submit_args(spec: NewJob, job_id: str) -> list[str | bytes | int]:
    """The JOB_ARGS (18) values submit.lua reads per job (lua/includes/admit.lua)."""
    return [
        spec.queue,
        job_id,
        spec.payload,
        spec.priority,
        json.dumps(spec.headers, separators=(",", ":")) if spec.headers else "",
        spec.content_type,
        policy_text(spec.retry_policy),
        _time(spec.not_before),
        _time(spec.expire_at),
        spec.ordering_key,
        spec.idempotency_key,
        0,
        spec.fairness_key,
        spec.fairness_weight,
        dedup_name(spec.headers, spec.idempotency_key),
        spec.batch_id,
        ",".join(spec.parent_ids),
        int(spec.run_after_failed_parents),
    ]


def new_job_of_args(values: Sequence[bytes]) -> NewJob:
    """A batch callback's stored submit_args (lua/batch.lua) as the NewJob it came from."""
    s = [v.decode() if i != 2 else "" for i, v in enumerate(values)]
    return NewJob(
        queue=s[0],
        payload=values[2],
        priority=int(s[3] or 0),
        headers=json.loads(s[4]) if s[4] else {},
        content_type=s[5],
        retry_policy=policy_of(s[6]),
        ordering_key=s[9],
        fairness_key=s[12],
        fairness_weight=int(s[13] or 0),
    )


def _s(v: Reply) -> str:
    return v.decode() if v else ""


def _f(v: Reply) -> float | None:
    return float(v) if v else None


def _attempts(raw: str) -> tuple[AttemptRecord, ...]:
    """attempts.lua's add_attempt items: 10 values (8 in jobs older than HTTP status and
    latency)."""
    if not raw:
        return ()
    out = []
    for item in json.loads("[" + raw[1:] + "]"):
        n, worker, start, end, failed, msg, retryable, code = item[:8]
        status, latency = (item[8], item[9]) if len(item) >= 10 else (0, "")
        error = JobFailure(msg, bool(retryable), code) if failed else None
        seconds = float(latency) if latency != "" else None
        out.append(
            AttemptRecord(int(n), worker, float(start), float(end), error, int(status), seconds)
        )
    return tuple(out)


@dataclass(slots=True)
class StoredJob:
    """A job as Redis holds it: the engine's record plus its current lease, if any."""

    record: JobRecord
    lease_id: str
    lease_deadline: float | None
    cancelled: bool


#: The holder of a lease read from Redis: some worker, on this replica or another.
ELSEWHERE = WorkerRecord(
    key=0, worker_id="", queues=(), max_in_flight=0, labels={}, connect_time=0.0
)


def lease_of(job: StoredJob, worker: WorkerRecord) -> LeaseRecord:
    """The job's current lease as the engine's record (also set as the job's ``lease``,
    which is where responses read lease_expire_time from)."""
    lease = LeaseRecord(
        job.lease_id, job.record, worker, job.lease_deadline or 0.0, 0, job.cancelled
    )
    job.record.lease = lease
    return lease


def view_of(job: StoredJob) -> JobRecord:
    """The job as every backend hands it to the service layer."""
    if job.record.state is JobState.UNDERWAY and job.lease_deadline is not None:
        lease_of(job, ELSEWHERE)
    return job.record


def job_of(values: Sequence[Reply], payload: bytes = b"") -> StoredJob:
    """Decodes one job reply (JOB_FIELDS order)."""
    if len(values) < len(JOB_FIELDS) or values[_F["id"]] is None:
        raise ScriptReplyError(f"job reply of {len(values)} values; expected {len(JOB_FIELDS)}")

    def v(name: str) -> Reply:
        return values[_F[name]]

    error = None
    if v("er") is not None and v("er") != b"":
        error = JobFailure(_s(v("em")), v("er") == b"1", _s(v("ec")))
    hd = _s(v("hd"))
    record = JobRecord(
        id=_s(v("id")),
        queue=_s(v("q")),
        payload=payload,
        priority=int(v("pr") or 0),
        headers=json.loads(hd) if hd else {},
        content_type=_s(v("ct")),
        seq=int(v("seq") or 0),
        submit_time=float(v("sub") or 0),
        state=JobState(int(v("st") or 1)),
        attempt=int(v("att") or 0),
        dispatch_time=_f(v("dt")),
        first_dispatch_time=_f(v("fdt")),
        finish_time=_f(v("ft")),
        result=v("res") or b"",
        error=error,
        worker_id=_s(v("wk")),
        not_before=_f(v("nb")),
        expire_at=_f(v("ex")),
        ordering_key=_s(v("ok")),
        fairness_key=_s(v("fk")),
        idempotency_key=_s(v("ik")),
        retry_policy=policy_of(_s(v("rp"))),
        attempts=_attempts(_s(v("ats"))),
        budget_start=int(v("bs") or 0),
        throttle_count=int(v("thc") or 0),
        batch_id=_s(v("bt")),
        parent_ids=tuple(_s(v("par")).split(",")) if v("par") else (),
        run_after_failed_parents=v("rfp") == b"1",
        progress=_progress(v("pgp"), v("pgm"), v("pgt")),
        progress_dropped=int(v("pgd") or 0),
        cancel_reason=cancel_reason_of(_s(v("cr"))),
    )
    return StoredJob(record, _s(v("ls")), _f(v("dl")), v("cx") == b"1")


def cancel_reason_of(code: str) -> str:
    """flows.lua's code for why the server cancelled a job, in engine/flow_rules.py's words."""
    kind, _, rest = code.partition(",")
    if kind == "p":
        state, _, parent = rest.partition(",")
        return PARENT_FAILED.format(parent=parent, state=JobState(int(state)).name)
    if kind == "b":
        return BATCH_CANCELLED.format(batch=rest)
    return code


def _progress(percent: Reply, message: Reply, at: Reply) -> tuple[int | None, str, float] | None:
    if not at:
        return None
    return (int(percent) if percent else None, _s(message), float(at))


def rate_text(rate: Rate | None) -> str:
    return "" if rate is None else f"{rate.per_second!r}|{rate.burst}"


def adaptive_text(a: AdaptiveRate | None) -> str:
    """cfg field ad (includes/adaptive.lua); '' is none."""
    return "" if a is None else f"{a.floor!r}|{a.decrease!r}|{a.increase!r}|{a.quiet!r}"


def windows_text(windows: tuple[RateWindow, ...]) -> str:
    """cfg field win (includes/windows.lua): "limit|period,..." in period order; '' none."""
    return ",".join(f"{w.limit}|{w.period!r}" for w in windows)


def windows_of(text: str) -> tuple[RateWindow, ...]:
    if not text:
        return ()
    pairs = (part.split("|") for part in text.split(","))
    return tuple(RateWindow(int(limit), float(period)) for limit, period in pairs)


def usage_of(items: Sequence[Reply]) -> tuple[tuple[float, float, int], ...]:
    """view.lua's "period|window start|count" items."""
    out = []
    for item in items:
        period, start, n = _s(item).split("|")
        out.append((float(period), float(start), int(n)))
    return tuple(out)


def adaptive_of(text: str) -> AdaptiveRate | None:
    if not text:
        return None
    floor, decrease, increase, quiet = (float(x) for x in text.split("|"))
    return AdaptiveRate(floor, decrease, increase, quiet)


def target_text(target: HttpTarget | None) -> str:
    """A queue's http_target as its cfg hash keeps it (field ht; '' is none): JSON, the
    signing secret included, as the embedded journal keeps it."""
    if target is None:
        return ""
    fields = {
        "url": target.url,
        "method": target.method,
        "headers": [list(pair) for pair in target.headers],
        "timeout": target.timeout,
        "success_codes": list(target.success_codes),
        "signing_secret": target.signing_secret,
        "keep_response_body": target.keep_response_body,
    }
    return json.dumps(fields, separators=(",", ":"))


def target_of(text: str) -> HttpTarget | None:
    if not text:
        return None
    try:
        d = json.loads(text)
        return HttpTarget(
            url=str(d["url"]),
            method=str(d["method"]),
            headers=tuple((str(k), str(v)) for k, v in d["headers"]),
            timeout=float(d["timeout"]),
            success_codes=tuple(int(c) for c in d["success_codes"]),
            signing_secret=str(d["signing_secret"]),
            keep_response_body=bool(d.get("keep_response_body", False)),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ScriptReplyError(f"a stored http_target does not decode ({e})") from None


def queue_of_view(name: str, reply: Sequence[Reply | int]) -> QueueView:
    """Decodes view.lua's reply."""
    width, paused, lease, rps, burst, rp, maxp, dedup = (
        x if isinstance(x, bytes) else None for x in reply[:8]
    )
    pending, underway, scheduled, workers = (int(x or 0) for x in reply[8:12])
    kcap, krps, kburst = (x if isinstance(x, bytes) else b"" for x in reply[12:15])
    # mtb, the throttle hold, adaptive, the effective rate, the quota windows and counts,
    # the per-key quota windows
    extra = [*reply[17:26], *[b""] * (26 - max(17, len(reply)))]
    key_limits = None
    if kcap:
        key_rate = Rate(float(krps), int(kburst or 1)) if krps else None
        key_limits = KeyLimits(int(kcap), key_rate, windows_of(_s(extra[8])))  # type: ignore[arg-type]
    settings = QueueSettings(
        width=int(width or 0),
        paused=paused == b"1",
        lease_seconds=float(lease or 30),
        rate=Rate(float(rps), int(burst or 1)) if rps else None,
        retry_policy=policy_of(_s(rp)),
        key_limits=key_limits,
        max_pending=int(maxp or 0),
        dedup_window=float(dedup or 86_400),
        http_target=target_of(_s(reply[16])) if len(reply) > 16 else None,  # type: ignore[arg-type]
        max_throttle_bounces=int(extra[0] or DEFAULT_MAX_BOUNCES),
        adaptive=adaptive_of(_s(extra[4])),  # type: ignore[arg-type]
        windows=windows_of(_s(extra[6])),  # type: ignore[arg-type]
    )
    slots = int(reply[15]) if len(reply) > 15 else 0  # type: ignore[arg-type]
    # A throttle signal's hold (includes/throttle.lua): its end ('' when none) and reason,
    # and how many fairness keys are held.
    held, reason, keys, _, effective, _, counts, _ = extra[1:]
    return QueueView(
        name,
        settings,
        pending,
        underway,
        workers,
        scheduled,
        slots,
        throttled_until=float(held) if held else None,
        throttle_reason=_s(reason),  # type: ignore[arg-type]
        throttled_key_count=int(keys or 0),
        effective_rate=float(effective or 0),
        window_usage=usage_of(counts) if isinstance(counts, list) else (),
    )


@dataclass(frozen=True, slots=True)
class Tally:
    """What a script did to jobs that its reply does not show (includes/tally.lua): jobs
    finished by (queue, state), such as jobs that expired while they waited or lost
    attempts that ended their job, and jobs a lost attempt sent to retry, by queue."""

    finished: Mapping[tuple[str, JobState], int] = field(default_factory=dict)
    retried: Mapping[str, int] = field(default_factory=dict)
    requeued: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """Lost attempts given back without a retry policy, by (queue, engine requeue reason)."""

    def expired(self, queue: str) -> int:
        return self.finished.get((queue, JobState.EXPIRED), 0)


def tally_of(reply: Sequence[bytes | int]) -> Tally:
    """Decodes a tally: {queue, outcome (a state's number or 'retried'), count, ...}."""
    finished: dict[tuple[str, JobState], int] = {}
    retried: dict[str, int] = {}
    requeued: dict[tuple[str, str], int] = {}
    for i in range(0, len(reply), 3):
        queue, outcome, n = _s(reply[i]), _s(reply[i + 1]), int(reply[i + 2])  # type: ignore[arg-type]
        if outcome == "retried":
            retried[queue] = retried.get(queue, 0) + n
        elif outcome.startswith("rq:"):
            why = REQUEUED.get(outcome[3:], outcome[3:])
            requeued[queue, why] = requeued.get((queue, why), 0) + n
        else:
            key = (queue, JobState(int(outcome)))
            finished[key] = finished.get(key, 0) + n
    return Tally(finished, retried, requeued)


# ---- ListJobs cursors <-> list.lua's index positions ------------------------------
#
# A Cursor holds the key of the last job of a page in the engine's token format: pending
# (-priority, seq), scheduled (due in microseconds, seq), underway (lease seq, 0), finished
# (finish time in microseconds, finish seq). Times are kept to the microsecond (fmt() in
# core.lua), so the score a cursor names is exactly the score the index holds.

_TIMED = frozenset({JobState.SCHEDULED, *(s for s in JobState if s.finished)})
_LARGEST = 2**53  # beyond this a double score no longer holds every integer


def page_start(state: JobState, cursor: Cursor | None) -> tuple[str, str]:
    """Where list.lua resumes in ``state``'s index: after the job with this score and
    seq ('': the score alone), or ('', '') from the first job."""
    if cursor is None or cursor.phase != state:
        return "", ""
    if not (abs(cursor.k1) < _LARGEST and 0 <= cursor.k2 < _LARGEST):
        raise InvalidArgument(BAD_TOKEN)
    if state is JobState.UNDERWAY:
        return str(cursor.k1), ""
    score = repr(cursor.k1 / 1e6) if state in _TIMED else str(cursor.k1)
    return score, str(cursor.k2)


def cursor_of(state: JobState, score: bytes, member: bytes) -> Cursor:
    """The cursor of a job list.lua returned (its state, index score and member)."""
    if state is JobState.UNDERWAY:
        return Cursor(int(state), int(float(score)), 0)
    k1 = round(float(score) * 1e6) if state in _TIMED else int(float(score))
    return Cursor(int(state), k1, int(member[:16], 16))


def figures_of(view: QueueView, reply: Sequence[Reply | int]) -> QueueFigures:
    """figures.lua's reply for a queue whose view is ``view``."""
    head = _s(reply[0])  # type: ignore[arg-type]
    return QueueFigures(
        view=view,
        head_ready=float(head) if head else None,
        blocked=int(reply[1]),  # type: ignore[arg-type]
        dead=int(reply[2]),  # type: ignore[arg-type]
        failed=int(reply[3]),  # type: ignore[arg-type]
        rate_limited=bool(int(reply[4])),  # type: ignore[arg-type]
        key_held=int(reply[5]),  # type: ignore[arg-type]
    )
