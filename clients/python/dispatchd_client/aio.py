"""The asyncio client for producers and operators.

Use it as ``async with AsyncClient(target) as client: job = await client.submit(...)``. Calls
raise :class:`~dispatchd_client.DispatchdError` subclasses instead of ``grpc.RpcError``, and
idempotent reads ride out short UNAVAILABLE blips (a server restart, a proxy reconnect) with a
few jittered retries. Submissions are never retried automatically: a retry after an ambiguous
failure could enqueue the same work twice, and only the caller knows whether that is harmless.

Concurrent ``submit()`` calls are coalesced: those made in the same event-loop tick share one
SubmitBatch round trip, and each still gets its own job or error (see ``_coalescer``).
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import TypeVar, Unpack

import grpc

from dispatchd_client import _requests as rq
from dispatchd_client._channel import TLS, ChannelSpec
from dispatchd_client._coalescer import Coalescer
from dispatchd_client.batches import AsyncBatch
from dispatchd_client.errors import Unavailable, from_rpc_error
from dispatchd_client.events import EventKind, EventsMissed, JobEvent, item_of, watch_request
from dispatchd_client.policies import JobOptions, QueueChanges, Slot
from dispatchd_client.schedules import (
    CatchupMode,
    Overlap,
    Schedule,
    ScheduleFiring,
    ScheduleSpec,
    backfill_request,
    schedule_proto,
    update_request,
)
from dispatchd_client.types import Batch, Job, JobSpecLike, JobState, NewJob, Queue
from dispatchd_client.v1 import dispatcher_pb2 as pb

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncClient:
    """Asyncio client for the DispatcherService unary calls.

    ``timeout`` is the default per-call deadline in seconds (None: no deadline); every method
    takes its own ``timeout=`` too (None: this default), as the Node client's ``timeoutMs``.
    For ``wait`` and ``acquire_slot`` it is how long they wait, and their deadline follows it.
    A ``submit`` with its own timeout goes alone, not coalesced. ``retry_unavailable`` is how
    many times an idempotent read is retried on UNAVAILABLE (each try gets the full timeout).

    ``token`` is a bearer token for a server with auth on; ``tls`` turns on TLS (``True``: the
    system's CA roots; a :class:`~dispatchd_client.TLS` for a private CA or mTLS). Pass
    ``channel`` instead to share a configured ``grpc.aio`` channel; the client then leaves
    closing it to the caller. Without one, the client opens its channel to ``target`` on first
    use -- lazily, because a ``grpc.aio`` channel belongs to the event loop
    that is running when it is created, and the client may be constructed before any loop runs.

    ``coalesce`` (on by default) lets concurrent ``submit()`` calls share SubmitBatch round
    trips: calls made in the same event-loop tick, or within ``coalesce_window`` seconds of the
    first (0: the same tick only), travel together, up to 1,000 jobs per batch. Each caller gets
    its own Job or its own error; a bad job never fails its neighbours, though it costs its
    batch-mates a resend. ``coalesce=False`` sends one Submit per call.
    """

    def __init__(
        self,
        target: str = rq.DEFAULT_TARGET,
        *,
        channel: grpc.aio.Channel | None = None,
        token: str | None = None,
        tls: TLS | bool | None = None,
        timeout: float | None = 30.0,
        retry_unavailable: int = 3,
        coalesce: bool = True,
        coalesce_window: float = 0.0,
    ) -> None:
        if retry_unavailable < 0:
            raise ValueError("retry_unavailable must be >= 0")
        if coalesce_window < 0:
            raise ValueError("coalesce_window must be >= 0")
        if channel is not None and (token or tls):
            raise ValueError("pass token and tls, or a channel configured with them; not both")
        self._spec = ChannelSpec.of(target, tls=tls, token=token)
        self._channel = channel
        self._owns_channel = channel is None
        self._stub: object | None = rq.new_stub(channel) if channel is not None else None
        self._timeout = timeout
        self._retries = retry_unavailable
        self._closed = False
        self._coalescer: Coalescer | None = (
            Coalescer(self._call, self._call, coalesce_window) if coalesce else None
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Settle coalesced submits still queued or in flight, then close the channel if this
        client opened it. Safe to call twice."""
        if self._coalescer is not None and not self._closed:
            await self._coalescer.close()
        self._closed = True
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None and self._owns_channel:
            await channel.close(grace=None)

    def _get_stub(self) -> object:
        if self._closed:
            raise RuntimeError("AsyncClient is closed")
        if self._stub is None:
            self._channel = self._spec.aio_channel()
            self._stub = rq.new_stub(self._channel)
        return self._stub

    async def _call(self, rpc: rq.Rpc[T], timeout: float | None = None) -> T:
        """Send ``rpc``, retrying per its policy, and parse the answer. ``timeout``: this
        call's deadline in seconds (None: the client's default; each retry gets it anew)."""
        rpc = rq.with_timeout(rpc, timeout)
        method = getattr(self._get_stub(), rpc.method)
        attempt = 0
        while True:
            try:
                response = await method(
                    rpc.request, timeout=rpc.deadline(self._timeout), metadata=rpc.metadata
                )
            except grpc.RpcError as e:
                if not rpc.should_retry(e, attempt, self._retries):
                    raise from_rpc_error(e) from e
                await asyncio.sleep(rq.backoff_delay(attempt, base=rq.RETRY_BASE_DELAY))
                attempt += 1
            else:
                return rpc.parse(response)

    async def submit(
        self,
        queue: str,
        payload: bytes | str = b"",
        *,
        priority: int = 0,
        headers: Mapping[str, str] | None = None,
        content_type: str = "",
        timeout: float | None = None,
        **options: Unpack[JobOptions],
    ) -> Job:
        """Add one job. A ``str`` payload is sent as UTF-8 with content type
        ``text/plain; charset=utf-8`` unless ``content_type`` says otherwise. Not retried.

        ``options``: delay / not_before, ttl / expire_at, ordering_key, fairness_key,
        fairness_weight, idempotency_key (a repeat returns the first job with
        ``duplicate=True``), retry_policy. See :class:`~dispatchd_client.JobOptions`."""
        rpc = rq.submit(
            queue,
            payload,
            priority=priority,
            headers=headers,
            content_type=content_type,
            options=options,
        )
        if self._coalescer is None or timeout is not None:  # a deadline of its own: alone
            return await self._call(rpc, timeout)
        if self._closed:
            raise RuntimeError("AsyncClient is closed")
        return await self._coalescer.submit(rpc)

    async def submit_batch(
        self, specs: Iterable[JobSpecLike], *, timeout: float | None = None
    ) -> list[Job]:
        """Add many jobs atomically (all or none), returned in request order. Not retried."""
        return await self._call(rq.submit_batch(specs), timeout)

    async def get(self, job_id: str, *, timeout: float | None = None) -> Job:
        """The job in any state (finished jobs are kept for the server's retention period)."""
        return await self._call(rq.get_job(job_id), timeout)

    # The timeout is sent to the server (WaitJobRequest.timeout), so asyncio.timeout() cannot
    # replace it: the server must know to answer in time.
    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Wait until the job finishes or ``timeout`` seconds pass, and return it as it is then
        (check ``job.state.finished``). None waits as long as the server allows (one hour).
        A server that cannot answer meanwhile (restarting, draining) is asked again, with
        backoff, until ``timeout`` has passed."""
        attempts = rq.WaitAttempts.of(job_id, timeout)
        tries = 0
        while True:
            try:
                return await self._call(attempts.rpc())
            except Unavailable:
                delay = attempts.retry_delay(tries)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                tries += 1

    async def cancel(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Remove a pending job, or mark an underway job cancelled and tell its worker."""
        return await self._call(rq.cancel_job(job_id), timeout)

    async def reprioritize(
        self, job_id: str, priority: int, *, timeout: float | None = None
    ) -> Job:
        """Change the priority of a job that has not finished."""
        return await self._call(rq.reprioritize_job(job_id, priority), timeout)

    async def list_jobs(
        self,
        queue: str,
        state: JobState | None = None,
        page_size: int = 100,
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[Job]:
        """Every job of ``queue`` (in ``state``, if given), fetching pages lazily."""
        token = ""
        while True:
            jobs, token = await self._call(
                rq.list_jobs_page(queue, state, page_size, token), timeout
            )
            for job in jobs:
                yield job
            if not token:
                return

    async def get_queue(self, name: str, *, timeout: float | None = None) -> Queue:
        """One queue's settings and counts."""
        return await self._call(rq.get_queue(name), timeout)

    async def list_queues(self, *, timeout: float | None = None) -> list[Queue]:
        """Every known queue, sorted by name."""
        return await self._call(rq.list_queues(), timeout)

    async def update_queue(
        self,
        name: str,
        *,
        width: int | None = None,
        paused: bool | None = None,
        lease_duration: float | None = None,
        create: bool = False,
        timeout: float | None = None,
        **changes: Unpack[QueueChanges],
    ) -> Queue:
        """Change the given settings live (others are left alone); ``create`` makes the queue
        if it does not exist instead of raising NotFound. ``changes``: rate, retry_policy,
        key_limits, http_target (None clears each), max_pending, dedup_window."""
        return await self._call(
            rq.update_queue(
                name,
                width=width,
                paused=paused,
                lease_duration=lease_duration,
                create=create,
                changes=changes,
            ),
            timeout,
        )

    async def pause(self, name: str, *, timeout: float | None = None) -> Queue:
        """Stop new dispatches from ``name``; underway jobs run on."""
        return await self._call(rq.pause_queue(name), timeout)

    async def resume(
        self, name: str, width: int | None = None, *, timeout: float | None = None
    ) -> Queue:
        """Lift a pause, optionally setting a new width at the same time."""
        return await self._call(rq.resume_queue(name, width), timeout)

    async def drain(
        self, grace: float | None = None, *, timeout: float | None = None
    ) -> tuple[int, int]:
        """Ask the server to stop intake, let underway jobs finish (for ``grace`` seconds, or
        its configured default), snapshot and exit. Returns (pending, underway) counts."""
        return await self._call(rq.drain(grace), timeout)

    async def retry_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Put a DEAD or FAILED job back to pending with a fresh retry budget."""
        return await self._call(rq.retry_job(job_id), timeout)

    async def purge_jobs(
        self, queue: str, state: JobState | None = None, *, timeout: float | None = None
    ) -> int:
        """Forget finished jobs of ``queue`` (of one finished state, or all); returns how many."""
        return await self._call(rq.purge_jobs(queue, state), timeout)

    async def delete_queue(self, name: str, *, timeout: float | None = None) -> int:
        """Delete an empty queue with its settings and finished jobs; returns how many finished
        jobs went with it. FailedPrecondition (reason QUEUE_NOT_EMPTY) while it has waiting or
        underway jobs, held or requested slots, or connected workers."""
        return await self._call(rq.delete_queue(name), timeout)

    async def acquire_slot(
        self,
        queue: str,
        *,
        holder: str = "",
        ttl: float = 30.0,
        priority: int = 0,
        timeout: float | None = None,  # the call deadline, sent to the server
    ) -> Slot:
        """Wait until ``queue``'s width and rate allow, then hold one slot of its width for
        work done outside dispatchd workers; renew it within ``ttl`` seconds and release it.
        ``timeout`` bounds the wait (default: the client's timeout); DeadlineExceeded then."""
        return await self._call(rq.acquire_slot(queue, holder, ttl, priority, timeout))

    async def renew_slot(
        self, slot_id: str, ttl: float | None = None, *, timeout: float | None = None
    ) -> Slot:
        """Extend a held slot (keepalive) by ``ttl`` seconds (default: its acquire ttl)."""
        return await self._call(rq.renew_slot(slot_id, ttl), timeout)

    async def release_slot(self, slot_id: str, *, timeout: float | None = None) -> None:
        """Free a held slot."""
        await self._call(rq.release_slot(slot_id), timeout)

    # ---- schedules (docs/schedules.md) -------------------------------------------------

    async def create_schedule(
        self,
        schedule_id: str,
        spec: ScheduleSpec,
        template: NewJob | pb.JobSpec,
        *,
        overlap: Overlap = Overlap.SKIP,
        catchup_window: float = 3600.0,
        catchup_mode: CatchupMode = CatchupMode.ALL,
        paused: bool = False,
        note: str = "",
        timeout: float | None = None,
    ) -> Schedule:
        """Add a schedule: each tick of ``spec`` submits one job made from ``template`` (its
        options may hold ttl, counted from each firing, but no delay or idempotency key).
        AlreadyExists when the id is taken."""
        msg = schedule_proto(
            schedule_id,
            spec,
            template,
            overlap=overlap,
            catchup_window=catchup_window,
            catchup_mode=catchup_mode,
            paused=paused,
            note=note,
        )
        return await self._call(rq.create_schedule(msg), timeout)

    async def get_schedule(self, schedule_id: str, *, timeout: float | None = None) -> Schedule:
        """One schedule, with its next ten fire times and ten latest firings."""
        return await self._call(rq.get_schedule(schedule_id), timeout)

    async def list_schedules(
        self, page_size: int = 100, *, timeout: float | None = None
    ) -> AsyncIterator[Schedule]:
        """Every schedule by id (three next fire times and firings each), page by page."""
        token = ""
        while True:
            page, token = await self._call(rq.list_schedules_page(page_size, token), timeout)
            for schedule in page:
                yield schedule
            if not token:
                return

    async def update_schedule(
        self,
        schedule_id: str,
        *,
        spec: ScheduleSpec | None = None,
        template: NewJob | pb.JobSpec | None = None,
        overlap: Overlap | None = None,
        catchup_window: float | None = None,
        catchup_mode: CatchupMode | None = None,
        paused: bool | None = None,
        note: str | None = None,
        timeout: float | None = None,
    ) -> Schedule:
        """Change what is given, nothing else. A new spec goes on from now."""
        request = update_request(
            schedule_id,
            spec=spec,
            template=template,
            overlap=overlap,
            catchup_window=catchup_window,
            catchup_mode=catchup_mode,
            paused=paused,
            note=note,
        )
        return await self._call(rq.update_schedule(request), timeout)

    async def delete_schedule(self, schedule_id: str, *, timeout: float | None = None) -> None:
        """Remove a schedule; the jobs it submitted stay."""
        await self._call(rq.delete_schedule(schedule_id), timeout)

    async def pause_schedule(
        self, schedule_id: str, note: str = "", *, timeout: float | None = None
    ) -> Schedule:
        """Stop its ticks from firing, saying why in ``note``."""
        return await self._call(rq.pause_schedule(schedule_id, note), timeout)

    async def resume_schedule(
        self, schedule_id: str, note: str | None = None, *, timeout: float | None = None
    ) -> Schedule:
        """Fire again from the next tick on (the pause's ticks do not catch up)."""
        return await self._call(rq.resume_schedule(schedule_id, note), timeout)

    async def trigger_schedule(
        self, schedule_id: str, overlap: Overlap | None = None, *, timeout: float | None = None
    ) -> ScheduleFiring:
        """Fire once now, outside the spec (``overlap`` overrides the schedule's)."""
        return await self._call(rq.trigger_schedule(schedule_id, overlap), timeout)

    async def backfill_schedule(
        self,
        schedule_id: str,
        start: datetime.datetime,
        end: datetime.datetime,
        overlap: Overlap | None = None,
        *,
        timeout: float | None = None,
    ) -> list[ScheduleFiring]:
        """Fire the spec's ticks of start..end (the past, both inclusive) now, oldest first;
        a tick that has its job already gets no second one."""
        request = backfill_request(schedule_id, start, end, overlap)
        return await self._call(rq.backfill_schedule(request), timeout)

    # ---- batches (docs/workflows.md) --------------------------------------------------

    def batch(
        self,
        queue: str,
        *,
        batch_id: str = "",
        description: str = "",
        on_success: JobSpecLike | None = None,
        on_complete: JobSpecLike | None = None,
    ) -> AsyncBatch:
        """A batch as an ``async with`` block: created on entry, closed on a clean exit (see
        :mod:`dispatchd_client.batches`). ``batch_id`` empty: the server makes one."""
        return AsyncBatch(
            self,
            queue,
            batch_id=batch_id,
            description=description,
            on_success=on_success,
            on_complete=on_complete,
        )

    async def create_batch(
        self,
        queue: str,
        *,
        batch_id: str = "",
        description: str = "",
        on_success: JobSpecLike | None = None,
        on_complete: JobSpecLike | None = None,
        timeout: float | None = None,
    ) -> Batch:
        """Opens a batch of ``queue``; its callbacks are jobs of that queue the server submits
        once, after the batch is closed and every job of it is final."""
        rpc = rq.create_batch(queue, batch_id, description, on_success, on_complete)
        return await self._call(rpc, timeout)

    async def get_batch(self, queue: str, batch_id: str, *, timeout: float | None = None) -> Batch:
        return await self._call(rq.get_batch(queue, batch_id), timeout)

    async def wait_batch(self, queue: str, batch_id: str, timeout: float | None = None) -> Batch:
        """Until every job of the batch is final or ``timeout`` s pass (None: up to an hour)."""
        return await self._call(rq.wait_batch(queue, batch_id, timeout))

    async def close_batch(
        self, queue: str, batch_id: str, *, timeout: float | None = None
    ) -> Batch:
        return await self._call(rq.close_batch(queue, batch_id), timeout)

    async def cancel_batch(
        self, queue: str, batch_id: str, *, timeout: float | None = None
    ) -> Batch:
        """Closes the batch and cancels its unfinished jobs."""
        return await self._call(rq.cancel_batch(queue, batch_id), timeout)

    # ---- events (docs/workflows.md) ---------------------------------------------------

    async def watch(
        self,
        *,
        queues: Iterable[str] = (),
        job_ids: Iterable[str] = (),
        batch_ids: Iterable[str] = (),
        kinds: Iterable[EventKind] = (),
        resume_token: str = "",
        reconnect: bool = True,
    ) -> AsyncIterator[JobEvent | EventsMissed]:
        """Lifecycle events as they happen (from now, or after ``resume_token``), filtered.
        A broken stream is reopened from the last token seen (``reconnect``), with backoff."""
        filters = (tuple(queues), tuple(job_ids), tuple(batch_ids), tuple(kinds))
        token, tries = resume_token, 0
        while True:
            request = watch_request(*filters, token)
            call = getattr(self._get_stub(), "WatchEvents")(request)  # noqa: B009
            try:
                async for resp in call:
                    tries = 0
                    item = item_of(resp)
                    token = item.resume_token if isinstance(item, JobEvent) else token
                    yield item
            except grpc.RpcError as e:
                error = from_rpc_error(e)
                if not (reconnect and isinstance(error, Unavailable)):
                    raise error from e
            if not reconnect:
                return
            await asyncio.sleep(rq.backoff_delay(tries, base=rq.RETRY_BASE_DELAY))
            tries += 1
