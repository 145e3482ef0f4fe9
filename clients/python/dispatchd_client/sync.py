"""The blocking client, for scripts, web request handlers and anything without an event loop.

It mirrors :class:`~dispatchd_client.AsyncClient` method for method; requests, retry policy and
response parsing come from the same :mod:`dispatchd_client._requests` definitions, so the two
behave identically apart from blocking. A ``Client`` is safe to share between threads, as the
underlying ``grpc.Channel`` is.

Concurrent ``submit()`` calls from many threads are coalesced: calls made while another batch
is in flight share the next SubmitBatch round trip, and each still gets its own job or error
(see ``_thread_coalescer``).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import TypeVar, Unpack

import grpc

from dispatchd_client import _requests as rq
from dispatchd_client._channel import TLS, ChannelSpec
from dispatchd_client._thread_coalescer import ThreadCoalescer
from dispatchd_client.batches import SyncBatch
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

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """Blocking client for the DispatcherService unary calls.

    ``timeout`` is the default per-call deadline in seconds (None: no deadline); every method
    takes its own ``timeout=`` too (None: this default), as the Node client's ``timeoutMs``.
    For ``wait`` and ``acquire_slot`` it is how long they wait, and their deadline follows it.
    A ``submit`` with its own timeout goes alone, not coalesced. ``retry_unavailable`` is how
    many times an idempotent read is retried on UNAVAILABLE (each try gets the full timeout).
    ``token`` is a bearer token for a server with auth on; ``tls`` turns on TLS (``True``: the
    system's CA roots; a :class:`~dispatchd_client.TLS` for a private CA or mTLS). Pass
    ``channel`` instead to use a configured ``grpc.Channel``; the client then leaves closing it
    to the caller.

    ``coalesce`` (on by default) lets ``submit()`` calls from concurrent threads share
    SubmitBatch round trips: a call made while no batch is in flight goes out at once; calls
    made while one is in flight queue up and travel together in the next, up to 1,000 jobs per
    batch. ``coalesce_window`` (seconds, default 0) makes each batch wait that long for more
    calls first. Each caller gets its own Job or its own error; a bad job never fails its
    neighbours, though it costs its batch-mates a resend. ``coalesce=False`` sends one Submit
    per call.
    """

    def __init__(
        self,
        target: str = rq.DEFAULT_TARGET,
        *,
        channel: grpc.Channel | None = None,
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
        self._owns_channel = channel is None
        self._channel = (
            channel
            if channel is not None
            else ChannelSpec.of(target, tls=tls, token=token).sync_channel()
        )
        self._stub = rq.new_stub(self._channel)
        self._timeout = timeout
        self._retries = retry_unavailable
        self._coalescer = (
            ThreadCoalescer(self._call, self._call, coalesce_window) if coalesce else None
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel if this client opened it, then wait until every coalesced submit
        is settled: one in flight fails with CANCELLED (as any call in flight on a closed
        channel does), queued ones fail unsent. Safe to call twice."""
        if self._coalescer is not None:
            self._coalescer.begin_close()
        if self._owns_channel:
            self._channel.close()
        if self._coalescer is not None:
            self._coalescer.close()

    def _call(self, rpc: rq.Rpc[T], timeout: float | None = None) -> T:
        """Send ``rpc``, retrying per its policy, and parse the answer. ``timeout``: this
        call's deadline in seconds (None: the client's default; each retry gets it anew)."""
        rpc = rq.with_timeout(rpc, timeout)
        method = getattr(self._stub, rpc.method)
        attempt = 0
        while True:
            try:
                response = method(
                    rpc.request, timeout=rpc.deadline(self._timeout), metadata=rpc.metadata
                )
            except grpc.RpcError as e:
                if not rpc.should_retry(e, attempt, self._retries):
                    raise from_rpc_error(e) from e
                time.sleep(rq.backoff_delay(attempt, base=rq.RETRY_BASE_DELAY))
                attempt += 1
            else:
                return rpc.parse(response)

    def submit(
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
            return self._call(rpc, timeout)
        return self._coalescer.submit(rpc)

    def submit_batch(
        self, specs: Iterable[JobSpecLike], *, timeout: float | None = None
    ) -> list[Job]:
        """Add many jobs atomically (all or none), returned in request order. Not retried."""
        return self._call(rq.submit_batch(specs), timeout)

    def get(self, job_id: str, *, timeout: float | None = None) -> Job:
        """The job in any state (finished jobs are kept for the server's retention period)."""
        return self._call(rq.get_job(job_id), timeout)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Wait until the job finishes or ``timeout`` seconds pass, and return it as it is then
        (check ``job.state.finished``). None waits as long as the server allows (one hour).
        A server that cannot answer meanwhile (restarting, draining) is asked again, with
        backoff, until ``timeout`` has passed."""
        attempts = rq.WaitAttempts.of(job_id, timeout)
        tries = 0
        while True:
            try:
                return self._call(attempts.rpc())
            except Unavailable:
                delay = attempts.retry_delay(tries)
                if delay is None:
                    raise
                time.sleep(delay)
                tries += 1

    def cancel(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Remove a pending job, or mark an underway job cancelled and tell its worker."""
        return self._call(rq.cancel_job(job_id), timeout)

    def reprioritize(self, job_id: str, priority: int, *, timeout: float | None = None) -> Job:
        """Change the priority of a job that has not finished."""
        return self._call(rq.reprioritize_job(job_id, priority), timeout)

    def list_jobs(
        self,
        queue: str,
        state: JobState | None = None,
        page_size: int = 100,
        *,
        timeout: float | None = None,
    ) -> Iterator[Job]:
        """Every job of ``queue`` (in ``state``, if given), fetching pages lazily."""
        token = ""
        while True:
            jobs, token = self._call(rq.list_jobs_page(queue, state, page_size, token), timeout)
            yield from jobs
            if not token:
                return

    def get_queue(self, name: str, *, timeout: float | None = None) -> Queue:
        """One queue's settings and counts."""
        return self._call(rq.get_queue(name), timeout)

    def list_queues(self, *, timeout: float | None = None) -> list[Queue]:
        """Every known queue, sorted by name."""
        return self._call(rq.list_queues(), timeout)

    def update_queue(
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
        return self._call(
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

    def pause(self, name: str, *, timeout: float | None = None) -> Queue:
        """Stop new dispatches from ``name``; underway jobs run on."""
        return self._call(rq.pause_queue(name), timeout)

    def resume(self, name: str, width: int | None = None, *, timeout: float | None = None) -> Queue:
        """Lift a pause, optionally setting a new width at the same time."""
        return self._call(rq.resume_queue(name, width), timeout)

    def drain(self, grace: float | None = None, *, timeout: float | None = None) -> tuple[int, int]:
        """Ask the server to stop intake, let underway jobs finish (for ``grace`` seconds, or
        its configured default), snapshot and exit. Returns (pending, underway) counts."""
        return self._call(rq.drain(grace), timeout)

    def retry_job(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Put a DEAD or FAILED job back to pending with a fresh retry budget."""
        return self._call(rq.retry_job(job_id), timeout)

    def purge_jobs(
        self, queue: str, state: JobState | None = None, *, timeout: float | None = None
    ) -> int:
        """Forget finished jobs of ``queue`` (of one finished state, or all); returns how many."""
        return self._call(rq.purge_jobs(queue, state), timeout)

    def delete_queue(self, name: str, *, timeout: float | None = None) -> int:
        """Delete an empty queue with its settings and finished jobs; returns how many finished
        jobs went with it. FailedPrecondition (reason QUEUE_NOT_EMPTY) while it has waiting or
        underway jobs, held or requested slots, or connected workers."""
        return self._call(rq.delete_queue(name), timeout)

    def acquire_slot(
        self,
        queue: str,
        *,
        holder: str = "",
        ttl: float = 30.0,
        priority: int = 0,
        timeout: float | None = None,
    ) -> Slot:
        """Wait until ``queue``'s width and rate allow, then hold one slot of its width for
        work done outside dispatchd workers; renew it within ``ttl`` seconds and release it.
        ``timeout`` bounds the wait (default: the client's timeout); DeadlineExceeded then."""
        return self._call(rq.acquire_slot(queue, holder, ttl, priority, timeout))

    def renew_slot(
        self, slot_id: str, ttl: float | None = None, *, timeout: float | None = None
    ) -> Slot:
        """Extend a held slot (keepalive) by ``ttl`` seconds (default: its acquire ttl)."""
        return self._call(rq.renew_slot(slot_id, ttl), timeout)

    def release_slot(self, slot_id: str, *, timeout: float | None = None) -> None:
        """Free a held slot."""
        self._call(rq.release_slot(slot_id), timeout)

    # ---- schedules (docs/schedules.md) -------------------------------------------------

    def create_schedule(
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
        return self._call(rq.create_schedule(msg), timeout)

    def get_schedule(self, schedule_id: str, *, timeout: float | None = None) -> Schedule:
        """One schedule, with its next ten fire times and ten latest firings."""
        return self._call(rq.get_schedule(schedule_id), timeout)

    def list_schedules(
        self, page_size: int = 100, *, timeout: float | None = None
    ) -> Iterator[Schedule]:
        """Every schedule by id (three next fire times and firings each), page by page."""
        token = ""
        while True:
            page, token = self._call(rq.list_schedules_page(page_size, token), timeout)
            yield from page
            if not token:
                return

    def update_schedule(
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
        return self._call(rq.update_schedule(request), timeout)

    def delete_schedule(self, schedule_id: str, *, timeout: float | None = None) -> None:
        """Remove a schedule; the jobs it submitted stay."""
        self._call(rq.delete_schedule(schedule_id), timeout)

    def pause_schedule(
        self, schedule_id: str, note: str = "", *, timeout: float | None = None
    ) -> Schedule:
        """Stop its ticks from firing, saying why in ``note``."""
        return self._call(rq.pause_schedule(schedule_id, note), timeout)

    def resume_schedule(
        self, schedule_id: str, note: str | None = None, *, timeout: float | None = None
    ) -> Schedule:
        """Fire again from the next tick on (the pause's ticks do not catch up)."""
        return self._call(rq.resume_schedule(schedule_id, note), timeout)

    def trigger_schedule(
        self, schedule_id: str, overlap: Overlap | None = None, *, timeout: float | None = None
    ) -> ScheduleFiring:
        """Fire once now, outside the spec (``overlap`` overrides the schedule's)."""
        return self._call(rq.trigger_schedule(schedule_id, overlap), timeout)

    def backfill_schedule(
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
        return self._call(rq.backfill_schedule(request), timeout)

    # ---- batches (docs/workflows.md) --------------------------------------------------

    def batch(
        self,
        queue: str,
        *,
        batch_id: str = "",
        description: str = "",
        on_success: JobSpecLike | None = None,
        on_complete: JobSpecLike | None = None,
    ) -> SyncBatch:
        """A batch as a ``with`` block: created on entry, closed on a clean exit (see
        :mod:`dispatchd_client.batches`). ``batch_id`` empty: the server makes one."""
        return SyncBatch(
            self,
            queue,
            batch_id=batch_id,
            description=description,
            on_success=on_success,
            on_complete=on_complete,
        )

    def create_batch(
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
        return self._call(rpc, timeout)

    def get_batch(self, queue: str, batch_id: str, *, timeout: float | None = None) -> Batch:
        return self._call(rq.get_batch(queue, batch_id), timeout)

    def wait_batch(self, queue: str, batch_id: str, timeout: float | None = None) -> Batch:
        """Until every job of the batch is final or ``timeout`` s pass (None: up to an hour)."""
        return self._call(rq.wait_batch(queue, batch_id, timeout))

    def close_batch(self, queue: str, batch_id: str, *, timeout: float | None = None) -> Batch:
        return self._call(rq.close_batch(queue, batch_id), timeout)

    def cancel_batch(self, queue: str, batch_id: str, *, timeout: float | None = None) -> Batch:
        """Closes the batch and cancels its unfinished jobs."""
        return self._call(rq.cancel_batch(queue, batch_id), timeout)

    # ---- events (docs/workflows.md) ---------------------------------------------------

    def watch(
        self,
        *,
        queues: Iterable[str] = (),
        job_ids: Iterable[str] = (),
        batch_ids: Iterable[str] = (),
        kinds: Iterable[EventKind] = (),
        resume_token: str = "",
        reconnect: bool = True,
    ) -> Iterator[JobEvent | EventsMissed]:
        """Lifecycle events as they happen (from now, or after ``resume_token``), filtered.
        A broken stream is reopened from the last token seen (``reconnect``), with backoff."""
        filters = (tuple(queues), tuple(job_ids), tuple(batch_ids), tuple(kinds))
        token, tries = resume_token, 0
        while True:
            request = watch_request(*filters, token)
            call = getattr(self._stub, "WatchEvents")(request)  # noqa: B009
            try:
                for resp in call:
                    tries = 0
                    item = item_of(resp)
                    token = item.resume_token if isinstance(item, JobEvent) else token
                    yield item
            except grpc.RpcError as e:
                error = from_rpc_error(e)
                if not (reconnect and isinstance(error, Unavailable)):
                    raise error from e
            finally:
                call.cancel()
            if not reconnect:
                return
            time.sleep(rq.backoff_delay(tries, base=rq.RETRY_BASE_DELAY))
            tries += 1
