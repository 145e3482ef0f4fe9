"""Coalescing concurrent ``Client.submit()`` calls from many threads into SubmitBatch round trips.

Threads have no event-loop tick to gather calls in, so the blocking client uses group commit
(leader/follower), the way databases share one fsync between committers: a caller that finds
no batch on its way sends its own job at once (a lone caller sees no difference), and callers
that arrive while a batch is in flight queue up. When that batch is answered, its sender hands
the turn to the first caller queued, which sends everything queued meanwhile as the next batch.
So the busier the client, the bigger its batches, with no background thread and no added delay
when it is idle. ``window`` seconds (0: none) make each sender wait for more callers first.

At most one batch is in flight per client. Every caller still gets its own
:class:`~dispatchd_client.Job` or its own error; a refused batch is split so that only the
culprit's caller fails (the rules live in ``_batching``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from dispatchd_client import _requests as rq
from dispatchd_client._batching import (
    MAX_BATCH_BYTES,
    MAX_BATCH_JOBS,
    ONE_BY_ONE,
    Metadata,
    alone_call,
    batch_call,
    culprit,
    miscounted,
    own_copy,
)
from dispatchd_client.errors import DispatchdError
from dispatchd_client.types import Job
from dispatchd_client.v1 import dispatcher_pb2 as pb

__all__ = ["ThreadCoalescer"]

#: Sends one unary call and parses its answer, raising DispatchdError (Client._call).
SendSubmit = Callable[[rq.Rpc[Job]], Job]
SendBatch = Callable[[rq.Rpc[list[Job]]], list[Job]]


@dataclass(slots=True, eq=False)
class _Caller:
    """One caller's job, its outcome once known, and the event its thread waits on."""

    spec: pb.JobSpec
    metadata: Metadata
    size: int
    #: Set when the outcome is known, or when this caller is handed the turn to send.
    ready: threading.Event = field(default_factory=threading.Event, repr=False)
    job: Job | None = None
    error: BaseException | None = None
    #: Handed the turn: this caller's thread sends the next batch.
    leads: bool = False
    #: Taken into a batch (no longer queued).
    taken: bool = False
    #: This caller held the turn and has handed it on.
    turn_passed: bool = False

    def outcome(self) -> Job:
        if self.error is not None:
            raise self.error
        if self.job is None:  # the sender broke off without settling it (a bug)
            raise RuntimeError("a coalesced submit was left unsettled")
        return self.job


class ThreadCoalescer:
    """Lets concurrent ``submit()`` calls of one Client take turns sending each other's jobs."""

    def __init__(self, send_one: SendSubmit, send_batch: SendBatch, window: float) -> None:
        if window < 0:
            raise ValueError("coalesce_window must be >= 0")
        self._send_one = send_one
        self._send_batch = send_batch
        self._window = window
        self._lock = threading.Lock()
        #: Notified when the queue fills up (ends a sender's window early) and when the turn
        #: is given up (close() waits for that).
        self._changed = threading.Condition(self._lock)
        self._queued: deque[_Caller] = deque()
        self._queued_bytes = 0
        #: Some caller holds the turn: it is sending, or has been handed the turn and will.
        self._turn_taken = False
        self._closed = False

    def submit(self, rpc: rq.Rpc[Job]) -> Job:
        """Send the job of a built Submit call, alone or with others; return its own outcome."""
        request = rpc.request
        assert isinstance(request, pb.SubmitRequest)
        me = _Caller(request.job, rpc.metadata, len(request.job.payload))
        with self._lock:
            if self._closed:
                raise RuntimeError("Client is closed")
            self._queued.append(me)
            self._queued_bytes += me.size
            me.leads = not self._turn_taken
            self._turn_taken = True
            if self._full_locked():
                self._changed.notify_all()
        # One handler around everything after enqueueing: an interrupt (KeyboardInterrupt) that
        # lands anywhere here, even between two statements, must neither leave this job queued
        # nor keep the turn, or every later submit() and close() would wait forever.
        try:
            if not me.leads:
                me.ready.wait()
                if not me.leads:
                    return me.outcome()
            self._lead(me)
        except BaseException:
            with self._lock:
                self._give_up_locked(me)
            raise
        return me.outcome()

    def begin_close(self) -> None:
        """Refuse new submits; batches not yet sent fail (the Client is closing its channel)."""
        with self._lock:
            self._closed = True
            self._changed.notify_all()

    def close(self) -> None:
        """Refuse new submits and wait until every queued or in-flight one is settled."""
        self.begin_close()
        with self._lock:
            while self._turn_taken:
                self._changed.wait()

    def _give_up_locked(self, me: _Caller) -> None:
        """``me``'s thread is leaving early: its job leaves the queue if it is still there, and
        a turn it holds goes on (once: ``_lead`` may have passed it already)."""
        if not me.taken:
            self._queued.remove(me)
            self._queued_bytes -= me.size
            me.taken = True
        if me.leads and not me.turn_passed:
            self._pass_turn_locked(me)

    def _lead(self, me: _Caller) -> None:
        """Send one batch (``me`` first, with whoever queued behind), then pass the turn on."""
        with self._lock:
            if self._window:
                deadline = time.monotonic() + self._window
                while (
                    not self._closed
                    and not self._full_locked()
                    and (left := deadline - time.monotonic()) > 0
                ):
                    self._changed.wait(left)
            batch = self._take_locked()
            closing = self._closed
        try:
            if closing:
                _fail(batch, _closed_before_sending())
            else:
                self._send(batch)
        except BaseException as e:  # KeyboardInterrupt, or a bug: never leave callers hanging
            _fail([c for c in batch if c.job is None and c.error is None], _interrupted(e))
            raise
        finally:
            with self._lock:
                self._pass_turn_locked(me)

    def _full_locked(self) -> bool:
        return len(self._queued) >= MAX_BATCH_JOBS or self._queued_bytes >= MAX_BATCH_BYTES

    def _take_locked(self) -> list[_Caller]:
        """The longest prefix of the queue that fits one batch (at least one job)."""
        batch: list[_Caller] = []
        size = 0
        while self._queued and len(batch) < MAX_BATCH_JOBS:
            head = self._queued[0]
            if batch and size + head.size > MAX_BATCH_BYTES:
                break
            self._queued.popleft()
            head.taken = True
            batch.append(head)
            size += head.size
        self._queued_bytes -= size
        return batch

    def _pass_turn_locked(self, me: _Caller) -> None:
        me.turn_passed = True
        if self._queued:
            head = self._queued[0]
            head.leads = True
            head.ready.set()
        else:
            self._turn_taken = False
            self._changed.notify_all()

    def _send(self, batch: list[_Caller]) -> None:
        """Settle every caller of ``batch``; raises only what interrupted this thread."""
        if not batch:
            return
        if len(batch) == 1:
            self._send_alone(batch[0])
            return
        try:
            jobs = self._send_batch(batch_call([c.spec for c in batch], batch[0].metadata))
        except DispatchdError as e:
            self._after_refusal(batch, e)
        else:
            if len(jobs) != len(batch):  # a broken server or proxy: nobody's job is known
                _fail(batch, miscounted(len(batch), len(jobs)))
                return
            for caller, job in zip(batch, jobs, strict=True):
                caller.job = job
                caller.ready.set()

    def _after_refusal(self, batch: list[_Caller], error: DispatchdError) -> None:
        index = culprit(error, len(batch))
        if index is None:
            _fail(batch, error)
        elif index == ONE_BY_ONE:
            for caller in batch:
                self._send_alone(caller)
        else:
            self._send(batch[:index])
            self._send_alone(batch[index])
            self._send(batch[index + 1 :])

    def _send_alone(self, caller: _Caller) -> None:
        try:
            caller.job = self._send_one(alone_call(caller.spec, caller.metadata))
        except DispatchdError as e:
            caller.error = e
        caller.ready.set()


def _interrupted(cause: BaseException) -> DispatchdError:
    """What the other callers of a batch get when the thread sending it is interrupted
    (KeyboardInterrupt, or a bug): the job may or may not have been admitted."""
    error = DispatchdError(
        grpc.StatusCode.CANCELLED,
        f"the thread sending this coalesced submit was interrupted ({type(cause).__name__}); "
        "the job may or may not have been admitted",
    )
    error.__cause__ = cause
    return error


def _closed_before_sending() -> DispatchdError:
    return DispatchdError(
        grpc.StatusCode.CANCELLED,
        "the Client was closed before this coalesced submit was sent; the job was not admitted",
    )


def _fail(batch: list[_Caller], error: DispatchdError) -> None:
    for caller in batch:
        caller.error = own_copy(error) if len(batch) > 1 else error
        caller.ready.set()
