"""The parts of the Work stream protocol that do not depend on the backend behind it:
reading the hello, reading results, the welcome and the connect/disconnect log lines.
Both the embedded stream (sessions.py) and the Redis one (redis/stream.py) use them, so
workers see the same protocol whichever backend serves them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import grpc

from dispatchd import convert
from dispatchd.backend import ProgressReport
from dispatchd.engine import Outcome, Rejection
from dispatchd.engine.errors import FailedPrecondition, InvalidArgument, Reason
from dispatchd.engine.flows import check_progress
from dispatchd.engine.limits import capped_failure
from dispatchd.engine.throttling import throttle_of
from dispatchd.service.errors import abort_with, refusal_status
from dispatchd_client.v1 import dispatcher_pb2 as pb

log = logging.getLogger("dispatchd.sessions")
Context = grpc.aio.ServicerContext[pb.WorkRequest, pb.WorkResponse]


class StreamWorker(Protocol):
    """What the log lines need of a connected worker, on either backend."""

    @property
    def worker_id(self) -> str: ...
    @property
    def queues(self) -> tuple[str, ...]: ...
    @property
    def max_in_flight(self) -> int: ...


async def read_hello(
    requests: AsyncIterator[pb.WorkRequest],
    context: Context,
    seen: Callable[[pb.WorkRequest], None] | None = None,
) -> pb.WorkerHello | None:
    """The stream's first message, which must be hello; None if the worker closed
    before sending any. ``seen`` is told of the first message before it is checked."""
    try:
        first = await anext(requests)
    except StopAsyncIteration:
        return None
    if seen is not None:
        seen(first)
    if first.WhichOneof("kind") != "hello":
        await abort_with(
            context,
            refusal_status(
                grpc.StatusCode.FAILED_PRECONDITION,
                "the first WorkRequest must be hello (worker id, queues, max_in_flight)",
                Reason.HELLO_REQUIRED,
            ),
        )
    return first.hello


def hello_repeated() -> FailedPrecondition:
    return FailedPrecondition("hello was already sent", reason=Reason.HELLO_REPEATED)


def empty_request() -> InvalidArgument:
    return InvalidArgument("empty WorkRequest: set one kind", field="kind")


def welcome(worker_id: str, heartbeat_interval: float, max_result_bytes: int) -> pb.WorkResponse:
    return pb.WorkResponse(
        welcome=pb.WorkerWelcome(
            worker_id=worker_id,
            heartbeat_interval=convert.duration(heartbeat_interval),
            max_result_bytes=max_result_bytes,
        )
    )


def outcome(result: pb.JobResult) -> Outcome:
    """A worker's result as the engine takes it: the output, or the failure (its message
    and code cut to their caps: see engine.limits.capped_failure)."""
    kind = result.WhichOneof("outcome")
    if kind == "error":
        e = result.error
        return capped_failure(e.message, e.retryable, e.code)
    if kind == "throttled":
        t = result.throttled
        return throttle_of(convert.duration_seconds(t.retry_after), t.scope, t.reason)
    return result.output


def progress_reports(msg: pb.WorkerProgress) -> list[ProgressReport]:
    """A WorkerProgress as the backend takes it, each report checked (engine/flows.py):
    a percent out of 0-100 or a message over its cap ends the stream (INVALID_ARGUMENT)."""
    out = []
    for i, r in enumerate(msg.reports):
        percent = r.percent if r.HasField("percent") else None
        try:
            check_progress(percent, r.message)
        except InvalidArgument as e:
            raise e.under(f"reports[{i}]") from None
        out.append(ProgressReport(r.job_id, r.lease_id, percent, r.message))
    return out


def unknown_leases(lease_ids: list[str]) -> list[Rejection]:
    """Rejections for heartbeats naming leases the worker does not hold."""
    reason = "heartbeat for a lease this worker does not hold"
    return [Rejection("", lid, reason) for lid in lease_ids]


def log_connected(worker: StreamWorker) -> None:
    log.info(
        "worker %s connected for %s with %d credits",
        worker.worker_id,
        ",".join(worker.queues),
        worker.max_in_flight,
        extra={"worker_id": worker.worker_id, "queues": list(worker.queues)},
    )


def log_disconnected(worker: StreamWorker, reason: str, held: int) -> None:
    log.info(
        "worker %s disconnected (%s); %d held jobs are pending again",
        worker.worker_id,
        reason,
        held,
        extra={"worker_id": worker.worker_id, "reason": reason, "held": held},
    )
