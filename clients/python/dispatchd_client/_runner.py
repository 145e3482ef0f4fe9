"""Running one delivered job: hooks, then the handler, then the outcome the server expects.

Kept apart from the stream protocol (:mod:`dispatchd_client._session`) because nothing here
depends on gRPC: it is the user-code boundary. Its rules are what a handler author needs:

* async handlers run as tasks on the worker's loop; sync handlers run in the worker's thread
  pool (with the caller's contextvars), so they may block freely;
* the return value becomes the output (``str`` as UTF-8, ``None`` as empty bytes);
* an exception becomes a :class:`~dispatchd_client.JobError` named after its type, retryable
  unless it is a :class:`~dispatchd_client.PermanentError`;
* :class:`~dispatchd_client.Throttled` becomes a throttle signal (:class:`Throttle`): the job
  goes back and the server holds the queue or the job's fairness key;
* a job cancelled before or while its handler runs is answered with :data:`CANCELLED_ERROR`;
* hooks are conveniences, so a failing hook is logged and never fails the job or the worker.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dispatchd_client._tracing import RunSpans, record_outcome
from dispatchd_client.errors import PermanentError, RetryableError, Throttled
from dispatchd_client.types import JobError, ReceivedJob, Throttle

if TYPE_CHECKING:
    from dispatchd_client.metrics import WorkerMetrics

logger = logging.getLogger("dispatchd_client.worker")

#: What a handler may return.
Output = bytes | str | None
#: What a finished job reports: output bytes on success, an error otherwise (a throttle
#: signal is the JobError subclass Throttle).
Outcome = bytes | JobError
#: A job handler: ``def`` or ``async def``, taking the delivered job.
Handler = Callable[[ReceivedJob], Output | Awaitable[Output]]
StartStopHook = Callable[[], object]
BeforeJobHook = Callable[[ReceivedJob], object]
AfterJobHook = Callable[[ReceivedJob, Outcome], object]

#: The answer for a job the server cancelled. Not retryable: the server already decided the
#: job is over; the answer only frees the worker's slot on the server.
CANCELLED_ERROR = JobError(message="cancelled", retryable=False, code="Cancelled")


class _CancelledBeforeStart(Exception):
    """Raised in a pool thread when the job was cancelled while queued for a thread."""


@dataclass
class Hooks:
    """Callbacks registered on a :class:`~dispatchd_client.Worker`, in registration order."""

    on_start: list[StartStopHook] = field(default_factory=list)
    on_stop: list[StartStopHook] = field(default_factory=list)
    before_job: list[BeforeJobHook] = field(default_factory=list)
    after_job: list[AfterJobHook] = field(default_factory=list)


async def call_hooks(hooks: Sequence[Callable[..., object]], *args: object, what: str) -> None:
    """Call each hook on the loop (awaiting it if it is async); log and swallow failures."""
    for hook in hooks:
        try:
            result = hook(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("%s hook %s failed", what, getattr(hook, "__qualname__", hook))


def is_async_handler(fn: Callable[..., object]) -> bool:
    """True for ``async def`` functions and objects with an ``async def __call__``."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - looking for an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def to_output(value: object) -> bytes:
    """The bytes to report for a handler's return value."""
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"handler returned {type(value).__name__}; expected bytes, str or None")


#: The server keeps at most this much of an error message (and cuts the rest): cutting
#: here too keeps a huge exception text from making a result message the server refuses.
MAX_ERROR_MESSAGE_BYTES = 4096


def _capped(message: str) -> str:
    data = message.encode()
    if len(data) <= MAX_ERROR_MESSAGE_BYTES:
        return message
    kept = data[: MAX_ERROR_MESSAGE_BYTES - 40].decode(errors="ignore")
    return f"{kept} [cut: {len(data)} bytes in all]"


def error_from_exception(e: Exception) -> JobError:
    """The JobError for an exception a handler raised (its text cut to what the server
    keeps)."""
    return JobError(
        message=_capped(str(e)), retryable=not isinstance(e, PermanentError), code=type(e).__name__
    )


def outcome_label(outcome: Outcome | None) -> str:
    """The ``outcome`` label of dispatchd_worker_jobs_total (None: the run was cancelled)."""
    if outcome is None or outcome is CANCELLED_ERROR:
        return "cancelled"
    if not isinstance(outcome, JobError):
        return "succeeded"
    return "retryable" if outcome.retryable else "permanent"


def _call_sync(handler: Handler, job: ReceivedJob) -> object:
    """Body run in a pool thread; skips handlers whose job was cancelled while queued."""
    if job.is_cancelled:
        raise _CancelledBeforeStart
    return handler(job)


class JobRunner:
    """Runs delivered jobs through hooks and their queue's handler."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        hooks: Hooks,
        executor: Executor,
        spans: RunSpans | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._handlers = handlers
        self._hooks = hooks
        self._executor = executor
        self._spans = spans or RunSpans(None)
        self._metrics = metrics
        # Looked up once rather than per job (inspect's checks cost a few us each).
        self._is_async = {queue: is_async_handler(fn) for queue, fn in handlers.items()}

    def cancels_as_task(self, queue: str) -> bool:
        """Whether a cancelled job of ``queue`` is stopped by cancelling its task.

        Only async handlers can be interrupted. A sync handler keeps its thread until it
        returns (it may poll ``job.is_cancelled``); its answer is sent then, so the server never
        hands this worker a new job while the thread is still busy with the old one.
        """
        return self._is_async.get(queue, True)

    async def execute(self, job: ReceivedJob, max_result_bytes: int = 0) -> Outcome:
        """Run ``job`` and return its outcome. Raises CancelledError if the task is cancelled.

        Hooks and handler run inside the job's ``run`` span when tracing is on."""
        metrics = self._metrics
        if metrics is None:
            return await self._traced(job, max_result_bytes)
        start = metrics.started(job.queue)
        outcome: Outcome | None = None
        try:
            outcome = await self._traced(job, max_result_bytes)
        finally:  # a cancelled task (a stop) counts as cancelled
            metrics.finished(job.queue, start, outcome_label(outcome))
        return outcome

    async def _traced(self, job: ReceivedJob, max_result_bytes: int) -> Outcome:
        span = self._spans.start(job)
        if span is None:
            return await self._run(job, max_result_bytes)
        with span as current:
            outcome = await self._run(job, max_result_bytes)
            record_outcome(current, outcome)
        return outcome

    async def _run(self, job: ReceivedJob, max_result_bytes: int) -> Outcome:
        if self._hooks.before_job:
            await call_hooks(self._hooks.before_job, job, what="before_job")
        outcome = await self._invoke(job, max_result_bytes)
        if self._hooks.after_job:
            await self.after_job(job, outcome)
        return outcome

    async def after_job(self, job: ReceivedJob, outcome: Outcome) -> None:
        await call_hooks(self._hooks.after_job, job, outcome, what="after_job")

    async def _invoke(self, job: ReceivedJob, max_result_bytes: int) -> Outcome:
        handler = self._handlers.get(job.queue)
        if handler is None:
            # The server only delivers queues named in hello, so this is a server bug; let
            # another worker (or a fixed server) try again.
            return JobError(f"no handler for queue {job.queue!r}", retryable=True, code="NoHandler")
        if job.is_cancelled:
            return CANCELLED_ERROR
        try:
            value = await self._call(handler, job, self._is_async.get(job.queue, False))
            output = to_output(value)
        except _CancelledBeforeStart:
            return CANCELLED_ERROR
        except Throttled as e:
            if job.is_cancelled:
                return CANCELLED_ERROR
            logger.info("job %s (queue %s) throttled: %s", job.id, job.queue, e)
            return Throttle(message=e.reason, retry_after=e.retry_after, scope=e.scope)
        except Exception as e:
            if job.is_cancelled:
                return CANCELLED_ERROR
            error = error_from_exception(e)
            if isinstance(e, RetryableError):  # expected: the handler knows why
                logger.warning("job %s (queue %s) failed, to retry: %s", job.id, job.queue, e)
            elif error.retryable:  # a surprise: where it came from matters
                logger.warning("job %s (queue %s) failed", job.id, job.queue, exc_info=True)
            else:  # a deliberate PermanentError: the handler already knows why
                logger.info("job %s (queue %s) failed permanently: %s", job.id, job.queue, e)
            return error
        if job.is_cancelled:
            return CANCELLED_ERROR
        if 0 < max_result_bytes < len(output):
            # The server would reject the result and the job would sit until its lease ran
            # out; fail it now with a reason a person can act on.
            return JobError(
                f"result is {len(output)} bytes; the server accepts at most {max_result_bytes}",
                retryable=False,
                code="ResultTooLarge",
            )
        return output

    async def _call(self, handler: Handler, job: ReceivedJob, is_async: bool) -> object:
        if is_async:
            result: object = handler(job)
        else:
            loop = asyncio.get_running_loop()
            ctx = contextvars.copy_context()
            result = await loop.run_in_executor(self._executor, ctx.run, _call_sync, handler, job)
        if inspect.isawaitable(result):
            result = await result
        return result
