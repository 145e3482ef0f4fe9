"""How the blocking client's coalescer hands the turn between threads, driven by plain sender
functions: which callers travel together, and what happens when the sending thread is
interrupted mid-batch (which a real server cannot be made to do on cue).

The end-to-end behaviour against the real server is in tests/integration/test_sync_coalescing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import pytest

from dispatchd_client import DispatchdError, Job
from dispatchd_client import _requests as rq
from dispatchd_client._thread_coalescer import ThreadCoalescer
from dispatchd_client.v1 import dispatcher_pb2 as pb

from ..polling import until

WAIT = 10.0


class Interrupted(BaseException):
    """Stands in for KeyboardInterrupt in the sending thread."""


class Sender:
    """Answers calls like a server would, recording the payloads each call carried; a call can
    be held until released, so others queue up behind it meanwhile."""

    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []
        self.hold_next = threading.Event()
        self.holding = threading.Event()
        self.release = threading.Event()
        self.interrupt_batches = False

    def _record(self, payloads: list[bytes]) -> None:
        self.calls.append(payloads)
        if self.hold_next.is_set():
            self.hold_next.clear()
            self.holding.set()
            assert self.release.wait(WAIT)

    def one(self, call: rq.Rpc[Job]) -> Job:
        assert isinstance(call.request, pb.SubmitRequest)
        self._record([call.request.job.payload])
        return Job.from_proto(pb.Job(id=call.request.job.payload.decode()))

    def batch(self, call: rq.Rpc[list[Job]]) -> list[Job]:
        assert isinstance(call.request, pb.SubmitBatchRequest)
        self._record([j.payload for j in call.request.jobs])
        if self.interrupt_batches:
            raise Interrupted
        return [Job.from_proto(pb.Job(id=j.payload.decode())) for j in call.request.jobs]


def _submit(coalescer: ThreadCoalescer, name: str) -> Callable[[], Job]:
    call = rq.submit("q", name.encode(), priority=0, headers=None, content_type="")
    return lambda: coalescer.submit(call)


def _until(check: Callable[[], bool]) -> None:
    until(check, WAIT, interval=0.001)


def _queued(coalescer: ThreadCoalescer) -> int:
    return len(coalescer._queued)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(8) as pool:
        yield pool


def _start_held(
    pool: ThreadPoolExecutor, sender: Sender, coalescer: ThreadCoalescer, behind: list[str]
) -> tuple[Future[Job], list[Future[Job]]]:
    """``a`` is sent alone and held; ``behind`` queue up meanwhile."""
    sender.hold_next.set()
    first = pool.submit(_submit(coalescer, "a"))
    assert sender.holding.wait(WAIT)
    queued = [pool.submit(_submit(coalescer, name)) for name in behind]
    _until(lambda: _queued(coalescer) == len(behind))
    return first, queued


def test_callers_queued_behind_a_call_in_flight_share_the_next_batch(
    pool: ThreadPoolExecutor,
) -> None:
    sender = Sender()
    coalescer = ThreadCoalescer(sender.one, sender.batch, window=0)
    first, queued = _start_held(pool, sender, coalescer, ["b", "c", "d"])
    sender.release.set()
    assert first.result(WAIT).id == "a"
    assert [f.result(WAIT).id for f in queued] == ["b", "c", "d"]
    assert sender.calls[0] == [b"a"]
    assert sorted(sender.calls[1]) == [b"b", b"c", b"d"]
    assert len(sender.calls) == 2
    coalescer.close()


def test_an_interrupted_sender_fails_its_batch_mates_and_passes_the_turn(
    pool: ThreadPoolExecutor,
) -> None:
    sender = Sender()
    coalescer = ThreadCoalescer(sender.one, sender.batch, window=0)
    sender.interrupt_batches = True
    first, queued = _start_held(pool, sender, coalescer, ["b", "c"])
    sender.release.set()
    assert first.result(WAIT).id == "a"
    outcomes = [f.exception(WAIT) for f in queued]
    # The thread that sent the batch sees its own interruption; the other caller a CANCELLED
    # error that says the job may have been admitted.
    assert sum(isinstance(o, Interrupted) for o in outcomes) == 1
    (other,) = [o for o in outcomes if isinstance(o, DispatchdError)]
    assert other.code == grpc.StatusCode.CANCELLED
    assert "may or may not have been admitted" in other.details
    assert isinstance(other.__cause__, Interrupted)
    # The turn was passed on: the next caller is not stuck behind the broken batch.
    assert pool.submit(_submit(coalescer, "e")).result(WAIT).id == "e"
    coalescer.close()


def test_close_fails_queued_callers_unsent_then_refuses(pool: ThreadPoolExecutor) -> None:
    sender = Sender()
    coalescer = ThreadCoalescer(sender.one, sender.batch, window=0)
    first, queued = _start_held(pool, sender, coalescer, ["b", "c"])
    coalescer.begin_close()  # what Client.close() does before closing its channel
    closed = pool.submit(coalescer.close)
    sender.release.set()
    closed.result(WAIT)
    # the call in flight is answered; the queued ones are never sent, and say so
    assert sender.calls == [[b"a"]]
    assert first.result(WAIT).id == "a"
    for f in queued:
        error = f.exception(WAIT)
        assert isinstance(error, DispatchdError)
        assert error.code == grpc.StatusCode.CANCELLED
        assert "was not admitted" in error.details
    with pytest.raises(RuntimeError, match="closed"):
        _submit(coalescer, "late")()


def test_a_caller_interrupted_in_the_queue_leaves_it_and_nobody_waits_for_it(
    pool: ThreadPoolExecutor,
) -> None:
    sender = Sender()
    coalescer = ThreadCoalescer(sender.one, sender.batch, window=0)
    sender.hold_next.set()
    first = pool.submit(_submit(coalescer, "a"))
    assert sender.holding.wait(WAIT)
    main = threading.get_ident()

    def interrupt_main_when_queued() -> None:
        _until(lambda: _queued(coalescer) == 1)
        signal.pthread_kill(main, signal.SIGINT)  # a real Ctrl-C, delivered to this thread

    interrupter = pool.submit(interrupt_main_when_queued)
    with pytest.raises(KeyboardInterrupt):
        _submit(coalescer, "b")()
    interrupter.result(WAIT)
    assert _queued(coalescer) == 0
    sender.release.set()
    assert first.result(WAIT).id == "a"
    assert pool.submit(_submit(coalescer, "c")).result(WAIT).id == "c"
    coalescer.close()  # returns: no turn is left held
    assert sender.calls == [[b"a"], [b"c"]]


def test_a_negative_window_is_refused() -> None:
    sender = Sender()
    with pytest.raises(ValueError, match="coalesce_window"):
        ThreadCoalescer(sender.one, sender.batch, window=-1)
