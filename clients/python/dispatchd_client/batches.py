"""Batches as context managers (docs/workflows.md), the shape Sidekiq batch users expect:

    async with client.batch(queue="emails", on_complete=NewJob("emails", b"report")) as b:
        for address in addresses:
            await b.submit(address)
    done = await b.wait()

Entering creates the batch (with its callbacks), ``submit`` adds jobs to it, and leaving
closes it: from then on the server submits the callbacks, exactly once, when every job of
the batch is final. If the block raises, the batch is left open (no callback fires until
someone closes it); cancel it with ``client.cancel_batch`` if its jobs should not run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Unpack

from dispatchd_client.policies import JobOptions
from dispatchd_client.types import Batch, Job, JobSpecLike, NewJob
from dispatchd_client.v1 import dispatcher_pb2 as pb

if TYPE_CHECKING:
    from dispatchd_client.aio import AsyncClient
    from dispatchd_client.sync import Client

__all__ = ["AsyncBatch", "SyncBatch"]


def in_batch(spec: JobSpecLike, queue: str, batch_id: str) -> JobSpecLike:
    """``spec`` as a job of the batch (which lives in one queue)."""
    if isinstance(spec, pb.JobSpec):
        out = pb.JobSpec()
        out.CopyFrom(spec)
        out.queue = out.queue or queue
        out.batch_id = batch_id
        return out
    return dataclasses.replace(spec, options={**spec.options, "batch_id": batch_id})


class _BatchBase:
    def __init__(
        self,
        queue: str,
        batch_id: str,
        description: str,
        on_success: JobSpecLike | None,
        on_complete: JobSpecLike | None,
    ) -> None:
        self.queue = queue
        self._asked_id = batch_id
        self._description = description
        self._on_success = on_success
        self._on_complete = on_complete
        self.batch: Batch | None = None
        """The batch as the last call returned it (None before entering)."""

    @property
    def batch_id(self) -> str:
        if self.batch is None:
            raise RuntimeError("the batch exists once the with block is entered")
        return self.batch.batch_id


class AsyncBatch(_BatchBase):
    def __init__(self, client: AsyncClient, queue: str, **kwargs: object) -> None:
        super().__init__(queue, **kwargs)  # type: ignore[arg-type]
        self._client = client

    async def __aenter__(self) -> AsyncBatch:
        self.batch = await self._client.create_batch(
            self.queue,
            batch_id=self._asked_id,
            description=self._description,
            on_success=self._on_success,
            on_complete=self._on_complete,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.batch = await self._client.close_batch(self.queue, self.batch_id)

    async def submit(
        self,
        payload: bytes | str = b"",
        *,
        priority: int = 0,
        headers: Mapping[str, str] | None = None,
        content_type: str = "",
        **options: Unpack[JobOptions],
    ) -> Job:
        """One job of the batch (of the batch's queue)."""
        options["batch_id"] = self.batch_id
        return await self._client.submit(
            self.queue,
            payload,
            priority=priority,
            headers=headers,
            content_type=content_type,
            **options,
        )

    async def submit_batch(self, specs: Iterable[JobSpecLike]) -> list[Job]:
        """Many jobs of the batch at once (all or none)."""
        return await self._client.submit_batch(
            [in_batch(s, self.queue, self.batch_id) for s in specs]
        )

    async def wait(self, timeout: float | None = None) -> Batch:  # noqa: ASYNC109 (the server waits)
        """Until every job of the batch is final (or ``timeout`` s); the batch as it is then."""
        self.batch = await self._client.wait_batch(self.queue, self.batch_id, timeout)
        return self.batch


class SyncBatch(_BatchBase):
    def __init__(self, client: Client, queue: str, **kwargs: object) -> None:
        super().__init__(queue, **kwargs)  # type: ignore[arg-type]
        self._client = client

    def __enter__(self) -> SyncBatch:
        self.batch = self._client.create_batch(
            self.queue,
            batch_id=self._asked_id,
            description=self._description,
            on_success=self._on_success,
            on_complete=self._on_complete,
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.batch = self._client.close_batch(self.queue, self.batch_id)

    def submit(
        self,
        payload: bytes | str = b"",
        *,
        priority: int = 0,
        headers: Mapping[str, str] | None = None,
        content_type: str = "",
        **options: Unpack[JobOptions],
    ) -> Job:
        options["batch_id"] = self.batch_id
        return self._client.submit(
            self.queue,
            payload,
            priority=priority,
            headers=headers,
            content_type=content_type,
            **options,
        )

    def submit_batch(self, specs: Iterable[JobSpecLike]) -> list[Job]:
        return self._client.submit_batch([in_batch(s, self.queue, self.batch_id) for s in specs])

    def wait(self, timeout: float | None = None) -> Batch:
        self.batch = self._client.wait_batch(self.queue, self.batch_id, timeout)
        return self.batch


_ = NewJob  # re-exported in the module docstring's example
