"""The Python client and worker against a fault-injecting fake DispatcherService.

The fake is a *sync* servicer served by pytest-grpc's module-scoped ``grpc_server`` fixture (a
real grpc server on a local port). Unary methods fail with scripted status codes before
answering; ``Work`` streams follow per-test scripts that run in a server thread. Nothing here
sleeps to wait for state: tests wait on events the fake sets, with timeouts.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from dispatchd_client import (
    AsyncClient,
    Client,
    InvalidArgument,
    Job,
    JobError,
    JobState,
    NewJob,
    NotFound,
    PermanentError,
    ReceivedJob,
    Unavailable,
    Worker,
)
from dispatchd_client.v1 import dispatcher_pb2 as pb
from dispatchd_client.v1 import dispatcher_pb2_grpc as pb_grpc

#: Read by pytest-grpc: every open Work stream holds a server thread.
grpc_max_workers = 16

WAIT = 10.0  # upper bound for anything a test waits on; never a fixed sleep

Script = Callable[["WorkStream"], Iterator[pb.WorkResponse]]


class WorkStream:
    """The server side of one Work stream as a script sees it; records every request."""

    def __init__(self, requests: Iterator[pb.WorkRequest], context: grpc.ServicerContext) -> None:
        self._requests = requests
        self.context = context
        self.received: list[pb.WorkRequest] = []

    def next(self) -> pb.WorkRequest:
        request = next(self._requests)
        self.received.append(request)
        return request

    def read_until(self, done: Callable[[], bool]) -> None:
        while not done():
            self.next()

    def read_to_end(self) -> None:
        for request in self._requests:
            self.received.append(request)

    def kinds(self) -> list[str]:
        return [str(r.WhichOneof("kind")) for r in self.received]

    def results(self) -> dict[str, pb.JobResult]:
        return {
            r.job_id: r for m in self.received if m.HasField("results") for r in m.results.results
        }

    def result_messages(self) -> list[pb.WorkResults]:
        return [m.results for m in self.received if m.HasField("results")]


class FaultyDispatcher(pb_grpc.DispatcherServiceServicer):
    """Answers plausibly, after failing each method with the codes queued in ``faults``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.faults: dict[str, list[tuple[grpc.StatusCode, str]]] = {}
            self.calls: Counter[str] = Counter()
            self.requests: dict[str, list[Message]] = {}
            self.time_remaining: list[float] = []
            self.deadlines: dict[str, list[float | None]] = {}
            self.scripts: list[Script] = []
            self.streams: list[WorkStream] = []

    def fail(self, method: str, code: grpc.StatusCode, details: str = "", times: int = 1) -> None:
        with self._lock:
            self.faults.setdefault(method, []).extend([(code, details)] * times)

    def _enter(self, method: str, request: Message, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls[method] += 1
            self.requests.setdefault(method, []).append(request)
            self.deadlines.setdefault(method, []).append(context.time_remaining())
            fault = self.faults[method].pop(0) if self.faults.get(method) else None
        if fault is not None:
            context.abort(*fault)

    def Submit(self, request: pb.SubmitRequest, context: grpc.ServicerContext) -> pb.SubmitResponse:
        self._enter("Submit", request, context)
        spec = request.job
        return pb.SubmitResponse(
            job=pb.Job(
                id="job-1",
                queue=spec.queue,
                payload=spec.payload,
                priority=spec.priority,
                headers=spec.headers,
                content_type=spec.content_type,
                state=pb.JOB_STATE_PENDING,
                submit_time=Timestamp(seconds=1_893_456_000),  # 2030-01-01
            )
        )

    def SubmitBatch(
        self, request: pb.SubmitBatchRequest, context: grpc.ServicerContext
    ) -> pb.SubmitBatchResponse:
        self._enter("SubmitBatch", request, context)
        return pb.SubmitBatchResponse(
            jobs=[
                pb.Job(id=f"job-{i}", queue=s.queue, payload=s.payload)
                for i, s in enumerate(request.jobs)
            ]
        )

    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.GetJobResponse:
        self._enter("GetJob", request, context)
        return pb.GetJobResponse(
            job=pb.Job(id=request.job_id, queue="q", state=pb.JOB_STATE_SUCCEEDED, result=b"ok")
        )

    def WaitJob(
        self, request: pb.WaitJobRequest, context: grpc.ServicerContext
    ) -> pb.WaitJobResponse:
        self.time_remaining.append(context.time_remaining())
        self._enter("WaitJob", request, context)
        return pb.WaitJobResponse(job=pb.Job(id=request.job_id, state=pb.JOB_STATE_UNDERWAY))

    def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.ServicerContext
    ) -> pb.ListJobsResponse:
        """Five jobs, paged; the page token is the next offset."""
        self._enter("ListJobs", request, context)
        start = int(request.page_token or "0")
        end = min(start + request.page_size, 5)
        jobs = [pb.Job(id=f"job-{i}", queue=request.queue) for i in range(start, end)]
        return pb.ListJobsResponse(jobs=jobs, next_page_token=str(end) if end < 5 else "")

    def UpdateQueue(
        self, request: pb.UpdateQueueRequest, context: grpc.ServicerContext
    ) -> pb.UpdateQueueResponse:
        self._enter("UpdateQueue", request, context)
        return pb.UpdateQueueResponse(queue=request.queue)

    def Work(
        self, request_iterator: Iterator[pb.WorkRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.WorkResponse]:
        stream = WorkStream(request_iterator, context)
        with self._lock:
            self.streams.append(stream)
            script = self.scripts.pop(0) if self.scripts else None
        if script is None:
            context.abort(grpc.StatusCode.INTERNAL, "the test scripted no more streams")
        yield from script(stream)


@pytest.fixture(scope="module")
def grpc_addr() -> str:
    # pytest-grpc's own fixture leaves its probe socket open (a ResourceWarning, which this
    # project's filterwarnings=error turns into a failure); pick the port and close it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def grpc_add_to_server() -> Callable[[Any, grpc.Server], None]:
    return pb_grpc.add_DispatcherServiceServicer_to_server


@pytest.fixture(scope="module")
def grpc_servicer() -> FaultyDispatcher:
    return FaultyDispatcher()


@pytest.fixture(scope="module")
def grpc_stub_cls() -> type[Any]:
    return pb_grpc.DispatcherServiceStub


@pytest.fixture
def fake(grpc_servicer: FaultyDispatcher, grpc_server: grpc.Server) -> FaultyDispatcher:
    """The running fake, with no faults or records left over from other tests."""
    grpc_servicer.reset()
    return grpc_servicer


@pytest.fixture
def client(grpc_addr: str, fake: FaultyDispatcher) -> Iterator[Client]:
    with Client(grpc_addr, timeout=WAIT) as c:
        yield c


# Sync client ------------------------------------------------------------------------------


def test_get_retries_unavailable_then_succeeds(client: Client, fake: FaultyDispatcher) -> None:
    fake.fail("GetJob", grpc.StatusCode.UNAVAILABLE, "restarting", times=2)
    job = client.get("job-7")
    assert job.id == "job-7"
    assert job.state is JobState.SUCCEEDED
    assert job.result == b"ok"
    assert fake.calls["GetJob"] == 3


def test_get_gives_up_after_retry_budget(grpc_addr: str, fake: FaultyDispatcher) -> None:
    fake.fail("GetJob", grpc.StatusCode.UNAVAILABLE, "down", times=10)
    with Client(grpc_addr, timeout=WAIT, retry_unavailable=2) as c, pytest.raises(Unavailable):
        c.get("job-7")
    assert fake.calls["GetJob"] == 3


def test_submit_is_not_retried(client: Client, fake: FaultyDispatcher) -> None:
    fake.fail("Submit", grpc.StatusCode.UNAVAILABLE, "draining")
    with pytest.raises(Unavailable) as info:
        client.submit("q", b"x")
    assert info.value.details == "draining"
    assert isinstance(info.value.__cause__, grpc.RpcError)
    assert fake.calls["Submit"] == 1


def test_not_found_keeps_details(client: Client, fake: FaultyDispatcher) -> None:
    fake.fail("GetJob", grpc.StatusCode.NOT_FOUND, "job job-9 not found")
    with pytest.raises(NotFound) as info:
        client.get("job-9")
    assert info.value.code is grpc.StatusCode.NOT_FOUND
    assert info.value.details == "job job-9 not found"
    assert str(info.value) == "NOT_FOUND: job job-9 not found"
    assert fake.calls["GetJob"] == 1  # only UNAVAILABLE is retried


def test_invalid_argument_maps(client: Client, fake: FaultyDispatcher) -> None:
    fake.fail("Submit", grpc.StatusCode.INVALID_ARGUMENT, "bad queue name")
    with pytest.raises(InvalidArgument, match="bad queue name"):
        client.submit("no spaces allowed", b"")


def test_submit_sends_text_payload_and_parses_job(client: Client, fake: FaultyDispatcher) -> None:
    job = client.submit("q", "héllo", priority=5, headers={"traceparent": "00-1"})
    sent = fake.requests["Submit"][0]
    assert isinstance(sent, pb.SubmitRequest)
    assert sent.job.payload == "héllo".encode()
    assert sent.job.content_type == "text/plain; charset=utf-8"
    assert job.priority == 5
    assert job.headers == {"traceparent": "00-1"}
    assert job.submit_time == datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    assert job.dispatch_time is None


def test_list_jobs_follows_page_tokens(client: Client, fake: FaultyDispatcher) -> None:
    fake.fail("ListJobs", grpc.StatusCode.UNAVAILABLE, times=1)  # a retried page
    ids = [j.id for j in client.list_jobs("q", JobState.PENDING, page_size=2)]
    assert ids == [f"job-{i}" for i in range(5)]
    pages = [r for r in fake.requests["ListJobs"] if isinstance(r, pb.ListJobsRequest)]
    assert [r.page_token for r in pages] == ["", "", "2", "4"]
    assert {r.state for r in pages} == {pb.JOB_STATE_PENDING}


def test_update_queue_sends_only_given_fields(client: Client, fake: FaultyDispatcher) -> None:
    queue = client.update_queue("q", width=3, lease_duration=2.5, create=True)
    sent = fake.requests["UpdateQueue"][0]
    assert isinstance(sent, pb.UpdateQueueRequest)
    assert list(sent.update_mask.paths) == ["width", "lease_duration"]
    assert sent.allow_missing
    assert (queue.name, queue.width, queue.lease_duration) == ("q", 3, 2.5)


def test_submit_batch(client: Client, fake: FaultyDispatcher) -> None:
    jobs = client.submit_batch([NewJob("a", b"1"), NewJob("b", "2")])
    assert [(j.id, j.queue, j.payload) for j in jobs] == [
        ("job-0", "a", b"1"),
        ("job-1", "b", b"2"),
    ]


def test_every_call_takes_its_own_timeout(grpc_addr: str, fake: FaultyDispatcher) -> None:
    with Client(grpc_addr, timeout=60.0) as c:
        c.get("job-1")
        c.get("job-1", timeout=2.0)
        c.update_queue("q", width=1, timeout=3.0)
        c.submit_batch([NewJob("a", b"1")], timeout=4.0)
        c.submit("q", b"x", timeout=5.0)  # alone: a Submit, not a coalesced SubmitBatch
        assert [j.id for j in c.list_jobs("q", page_size=5, timeout=6.0)]
        with pytest.raises(ValueError, match="timeout must be > 0"):
            c.get("job-1", timeout=0)
    assert 55.0 < (fake.deadlines["GetJob"][0] or 0) <= 60.5  # the client's default
    _within(fake, ("GetJob", 2.0), ("UpdateQueue", 3.0), ("SubmitBatch", 4.0), ("Submit", 5.0))
    assert all(0 < (r or 99) <= 6.5 for r in fake.deadlines["ListJobs"])


def _within(fake: FaultyDispatcher, *limits: tuple[str, float]) -> None:
    """Each method's last call had a deadline of (nearly) its limit; gRPC rounds a deadline
    up on the wire, so the server may see a little more."""
    for method, limit in limits:
        remaining = fake.deadlines[method][-1]
        assert limit - 2.0 < (remaining or 99) <= limit + 0.5, (method, remaining)


async def test_every_async_call_takes_its_own_timeout(
    grpc_addr: str, fake: FaultyDispatcher
) -> None:
    async with AsyncClient(grpc_addr, timeout=60.0) as client:
        await client.get("job-1", timeout=2.0)
        await client.submit("q", b"x", timeout=3.0)
        await client.update_queue("q", width=1, timeout=4.0)
        assert [j.id async for j in client.list_jobs("q", page_size=5, timeout=5.0)]
    _within(fake, ("GetJob", 2.0), ("Submit", 3.0), ("UpdateQueue", 4.0))
    assert all(0 < (r or 99) <= 5.5 for r in fake.deadlines["ListJobs"])


# Async client -----------------------------------------------------------------------------


async def test_async_get_retries_and_submit_does_not(
    grpc_addr: str, fake: FaultyDispatcher
) -> None:
    fake.fail("GetJob", grpc.StatusCode.UNAVAILABLE, times=2)
    fake.fail("Submit", grpc.StatusCode.UNAVAILABLE, "draining")
    async with AsyncClient(grpc_addr, timeout=WAIT) as client:
        assert (await client.get("job-1")).id == "job-1"
        with pytest.raises(Unavailable, match="draining"):
            await client.submit("q", b"x")
    assert fake.calls["GetJob"] == 3
    assert fake.calls["Submit"] == 1


async def test_async_errors_map(grpc_addr: str, fake: FaultyDispatcher) -> None:
    fake.fail("GetJob", grpc.StatusCode.NOT_FOUND, "gone")
    async with AsyncClient(grpc_addr, timeout=WAIT) as client:
        with pytest.raises(NotFound) as info:
            await client.get("job-1")
    assert info.value.details == "gone"


async def test_async_wait_sets_timeout_and_deadline(grpc_addr: str, fake: FaultyDispatcher) -> None:
    async with AsyncClient(grpc_addr, timeout=1.0) as client:
        job = await client.wait("job-3", timeout=2.0)
    assert job.state is JobState.UNDERWAY
    sent = fake.requests["WaitJob"][0]
    assert isinstance(sent, pb.WaitJobRequest)
    assert sent.timeout.ToTimedelta() == datetime.timedelta(seconds=2)
    # The call deadline is the wait plus a 5 s margin, not the client's 1 s default.
    assert 5.0 < fake.time_remaining[0] < 7.5


async def test_async_list_jobs_pages(grpc_addr: str, fake: FaultyDispatcher) -> None:
    async with AsyncClient(grpc_addr, timeout=WAIT) as client:
        ids = [j.id async for j in client.list_jobs("q", page_size=3)]
    assert ids == [f"job-{i}" for i in range(5)]


async def test_async_client_with_shared_channel(grpc_addr: str, fake: FaultyDispatcher) -> None:
    async with grpc.aio.insecure_channel(grpc_addr) as channel:
        client = AsyncClient(channel=channel, timeout=WAIT)
        assert (await client.get("job-2")).id == "job-2"
        await client.close()  # leaves the caller's channel open
        assert (await AsyncClient(channel=channel).get("job-3")).id == "job-3"


# Worker -----------------------------------------------------------------------------------


def welcome(worker_id: str = "w-1", heartbeat: float = 60.0) -> pb.WorkResponse:
    return pb.WorkResponse(
        welcome=pb.WorkerWelcome(
            worker_id=worker_id,
            heartbeat_interval=Duration(seconds=int(heartbeat), nanos=int(heartbeat % 1 * 1e9)),
            max_result_bytes=1 << 20,
        )
    )


def deliver(*jobs: tuple[str, str, bytes]) -> pb.WorkResponse:
    """Deliveries of (job id, queue, payload); the lease id is ``lease-<job id>``."""
    return pb.WorkResponse(
        deliveries=pb.JobDeliveries(
            deliveries=[
                pb.Delivery(job=pb.Job(id=i, queue=q, payload=p, attempt=1), lease_id=f"lease-{i}")
                for i, q, p in jobs
            ]
        )
    )


DRAIN = pb.WorkResponse(drain=pb.DrainNotice())


async def run_to_end(worker: Worker) -> None:
    await asyncio.wait_for(worker.run_async(), WAIT)


async def test_worker_reconnects_and_coalesces_results(
    grpc_addr: str, fake: FaultyDispatcher
) -> None:
    hang_started = threading.Event()
    abandoned: list[str] = []

    def unavailable(stream: WorkStream) -> Iterator[pb.WorkResponse]:
        stream.next()
        stream.context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        yield from ()

    def ends_while_holding_a_job(stream: WorkStream) -> Iterator[pb.WorkResponse]:
        stream.next()
        yield welcome()
        yield deliver(("lost", "fast", b"hang"))
        assert hang_started.wait(WAIT)
        # returning ends the stream without a drain: the worker must reconnect

    def serves_three(stream: WorkStream) -> Iterator[pb.WorkResponse]:
        stream.next()
        yield welcome("w-42")
        yield deliver(("a", "fast", b"x"), ("b", "fast", b"y"), ("c", "fast", b"z"))
        stream.read_until(lambda: len(stream.results()) == 3)
        yield DRAIN
        stream.read_to_end()

    fake.scripts = [unavailable, ends_while_holding_a_job, serves_three]
    worker = Worker(grpc_addr, worker_id="me", concurrency=4, labels={"host": "test"})

    @worker.handler("fast")
    async def fast(job: ReceivedJob) -> bytes:
        if job.payload == b"hang":
            hang_started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                abandoned.append(job.id)
                raise
        return job.payload.upper()

    await run_to_end(worker)

    assert len(fake.streams) == 3
    hello = fake.streams[0].received[0].hello
    assert (hello.worker_id, list(hello.queues), hello.max_in_flight) == ("me", ["fast"], 4)
    assert dict(hello.labels) == {"host": "test"}
    assert abandoned == ["lost"]
    assert fake.streams[1].results() == {}
    last = fake.streams[2]
    # The three results finished in the same loop tick, so they travel in one message.
    assert len(last.result_messages()) == 1
    assert {k: (r.lease_id, r.output) for k, r in last.results().items()} == {
        "a": ("lease-a", b"X"),
        "b": ("lease-b", b"Y"),
        "c": ("lease-c", b"Z"),
    }
    assert last.kinds()[-1] == "credit"
    assert last.received[-1].credit.max_in_flight == 0
    assert worker.worker_id == "w-42"


async def test_worker_outcomes_cancellation_heartbeats_and_hooks(
    grpc_addr: str, fake: FaultyDispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[str] = []
    outcomes: dict[str, bytes | JobError] = {}

    def script(stream: WorkStream) -> Iterator[pb.WorkResponse]:
        stream.next()
        yield welcome(heartbeat=0.05)
        yield deliver(
            ("ok", "async", b"hi"),
            ("perm", "sync", b"permanent"),
            ("err", "sync", b"oops"),
            ("block", "async", b"block"),
        )
        stream.read_until(
            lambda: (
                {"ok", "perm", "err"} <= stream.results().keys() and "heartbeat" in stream.kinds()
            )
        )
        yield pb.WorkResponse(cancellations=pb.JobCancellations(job_ids=["block", "unknown"]))
        stream.read_until(lambda: "block" in stream.results())
        yield pb.WorkResponse(
            rejections=pb.ResultRejections(
                rejections=[pb.ResultRejection(job_id="ok", lease_id="lease-ok", reason="stale")]
            )
        )
        yield DRAIN
        stream.read_to_end()

    fake.scripts = [script]
    worker = Worker(grpc_addr, concurrency=2)

    @worker.handler("async")
    async def on_async(job: ReceivedJob) -> str:
        if job.payload == b"block":
            await asyncio.Event().wait()
        return job.payload.decode() + "!"

    @worker.handler("sync")
    def on_sync(job: ReceivedJob) -> None:
        if job.payload == b"permanent":
            raise PermanentError("cannot parse")
        raise ValueError("flaky")

    @worker.on_start
    def started() -> None:
        events.append("start")

    @worker.on_stop
    async def stopped() -> None:
        events.append("stop")

    @worker.before_job
    def broken_hook(job: ReceivedJob) -> None:
        raise RuntimeError("hook bug")

    @worker.after_job
    async def record(job: ReceivedJob, outcome: bytes | JobError) -> None:
        outcomes[job.id] = outcome

    await run_to_end(worker)

    results = fake.streams[0].results()
    assert results["ok"].output == b"hi!"
    assert results["perm"].error == pb.JobError(
        message="cannot parse", retryable=False, code="PermanentError"
    )
    assert results["err"].error == pb.JobError(message="flaky", retryable=True, code="ValueError")
    assert results["block"].error == pb.JobError(
        message="cancelled", retryable=False, code="Cancelled"
    )
    assert outcomes == {
        "ok": b"hi!",
        "perm": JobError("cannot parse", False, "PermanentError"),
        "err": JobError("flaky", True, "ValueError"),
        "block": JobError("cancelled", False, "Cancelled"),
    }
    assert events == ["start", "stop"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("before_job hook" in m for m in messages)
    assert any("rejected the result of job ok" in m and "stale" in m for m in messages)


async def test_worker_stop_finishes_held_jobs_first(grpc_addr: str, fake: FaultyDispatcher) -> None:
    credit_zero = threading.Event()
    started = asyncio.Event()
    release = asyncio.Event()

    def script(stream: WorkStream) -> Iterator[pb.WorkResponse]:
        stream.next()
        yield welcome()
        yield deliver(("slow", "q", b""))
        stream.read_until(lambda: stream.kinds()[-1] == "credit")
        credit_zero.set()
        stream.read_to_end()

    fake.scripts = [script]
    worker = Worker(grpc_addr)

    @worker.handler("q")
    async def slow(job: ReceivedJob) -> bytes:
        started.set()
        await release.wait()
        return b"done"

    run = asyncio.create_task(worker.run_async())
    await worker.wait_connected(WAIT)
    assert worker.connected
    await asyncio.wait_for(started.wait(), WAIT)
    await worker.stop()
    assert await asyncio.to_thread(credit_zero.wait, WAIT)
    assert not run.done()  # still finishing the held job
    release.set()
    await asyncio.wait_for(run, WAIT)

    stream = fake.streams[0]
    assert stream.kinds() == ["hello", "credit", "results"]
    assert stream.received[1].credit.max_in_flight == 0
    assert stream.results()["slow"].output == b"done"
    assert not worker.connected


async def test_worker_raises_non_retryable_stream_errors(
    grpc_addr: str, fake: FaultyDispatcher
) -> None:
    def refuse(stream: WorkStream) -> Iterator[pb.WorkResponse]:
        stream.next()
        stream.context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad queue name")
        yield from ()

    fake.scripts = [refuse]
    worker = Worker(grpc_addr)
    stops: list[bool] = []
    worker.handler("bad name")(lambda job: None)
    worker.on_stop(lambda: stops.append(True))

    waiter = asyncio.create_task(worker.wait_connected(WAIT))
    with pytest.raises(InvalidArgument, match="bad queue name"):
        await run_to_end(worker)
    with pytest.raises(RuntimeError, match="stopped before connecting"):
        await waiter
    assert stops == [True]
    assert len(fake.streams) == 1


async def test_job_value_passes_through(grpc_addr: str, fake: FaultyDispatcher) -> None:
    seen: list[Job] = []

    def script(stream: WorkStream) -> Iterator[pb.WorkResponse]:
        stream.next()
        yield welcome()
        yield deliver(("j", "q", b"\x00payload"))
        stream.read_until(lambda: "j" in stream.results())
        yield DRAIN
        stream.read_to_end()

    fake.scripts = [script]
    worker = Worker(grpc_addr)

    @worker.handler("q")
    def handle(job: ReceivedJob) -> bytes:
        seen.append(job.as_job())
        assert job.lease_id == "lease-j"
        assert not job.is_cancelled
        return job.payload[::-1]

    await run_to_end(worker)
    assert fake.streams[0].results()["j"].output == b"daolyap\x00"
    assert seen[0].attempt == 1
    assert seen[0].payload == b"\x00payload"


def settings(heartbeat: float) -> pb.WorkResponse:
    return pb.WorkResponse(
        settings=pb.WorkerSettings(
            heartbeat_interval=Duration(seconds=int(heartbeat), nanos=int(heartbeat % 1 * 1e9))
        )
    )


async def test_worker_follows_new_settings_at_once(grpc_addr: str, fake: FaultyDispatcher) -> None:
    """The welcome asks for a beat a minute; WorkerSettings then asks for one every 50 ms
    (a queue's lease was cut): the pending beat is rescheduled, not left a minute out."""
    release = threading.Event()

    def script(stream: WorkStream) -> Iterator[pb.WorkResponse]:
        stream.next()
        yield welcome(heartbeat=60.0)
        yield deliver(("held", "q", b""))
        yield settings(0.05)
        stream.read_until(lambda: stream.kinds().count("heartbeat") >= 3)
        release.set()
        stream.read_until(lambda: "held" in stream.results())
        yield DRAIN
        stream.read_to_end()

    fake.scripts = [script]
    worker = Worker(grpc_addr, concurrency=1)

    @worker.handler("q")
    def hold(job: ReceivedJob) -> str:
        assert release.wait(WAIT)
        return "done"

    await run_to_end(worker)
    assert fake.streams[0].results()["held"].output == b"done"
