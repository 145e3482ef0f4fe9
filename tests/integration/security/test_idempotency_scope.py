"""With tokens on, an idempotency key belongs to the submitter that used it: a repeated
key answers with the caller's own earlier job, never with another tenant's."""

from __future__ import annotations

import asyncio

from dispatchd.security import SUBMITTER_HEADER
from dispatchd_client import AsyncClient, JobOptions, JobState, ReceivedJob, Worker
from dispatchd_client import NewJob as ClientJob
from tests.integration.security.conftest import StartServer, token


async def test_the_same_key_from_two_submitters_makes_two_jobs(
    start_server: StartServer,
) -> None:
    srv = await start_server(tls=False)
    target = f"127.0.0.1:{srv.port}"
    async with (
        AsyncClient(target, token=token("submit")) as mine,
        AsyncClient(target, token=token("other")) as theirs,
    ):
        secret = {"x-api-key": "tenant-b-secret"}
        theirs_first = await theirs.submit("q", b"b", idempotency_key="k-1", headers=secret)
        mine_first = await mine.submit("q", b"a", idempotency_key="k-1")
        assert mine_first.id != theirs_first.id
        assert not mine_first.duplicate
        assert "x-api-key" not in mine_first.headers
        assert mine_first.headers[SUBMITTER_HEADER] == "submit"
        # Each one's repeat answers with its own job.
        again = await mine.submit("q", b"a", idempotency_key="k-1")
        assert (again.id, again.duplicate) == (mine_first.id, True)
        again = await theirs.submit("q", b"b", idempotency_key="k-1")
        assert (again.id, again.duplicate) == (theirs_first.id, True)
        # The same inside a batch.
        batch = await mine.submit_batch(
            [
                ClientJob("q", b"c", options=JobOptions(idempotency_key="k-2")),
                ClientJob("q", b"a", options=JobOptions(idempotency_key="k-1")),
            ]
        )
        assert batch[1].id == mine_first.id
        batch_b = await theirs.submit_batch(
            [ClientJob("q", b"d", options=JobOptions(idempotency_key="k-2"))]
        )
        assert batch_b[0].id != batch[0].id
        assert not batch_b[0].duplicate


async def test_a_squatted_key_does_not_swallow_the_victims_job(
    start_server: StartServer,
) -> None:
    """A tenant that submits a guessable key first (and lets its job finish) does not make
    the victim's submit return the squatter's job: the victim's work runs."""
    srv = await start_server(tls=False)
    target = f"127.0.0.1:{srv.port}"
    worker = Worker(target, token=token("work"), concurrency=2)

    @worker.handler("orders")
    def run(job: ReceivedJob) -> bytes:
        return b"done:" + job.payload

    async with (
        AsyncClient(target, token=token("submit")) as victim,
        AsyncClient(target, token=token("other")) as squatter,
        AsyncClient(target, token=token("admin")) as admin,
    ):
        squat = await squatter.submit("orders", b"squat", idempotency_key="order-42")
        task = asyncio.create_task(worker.run_async())
        try:
            assert (await squatter.wait(squat.id, 10)).state is JobState.SUCCEEDED
            real = await victim.submit("orders", b"real", idempotency_key="order-42")
            assert real.id != squat.id
            assert not real.duplicate
            done = await victim.wait(real.id, 10)
            assert (done.state, done.result) == (JobState.SUCCEEDED, b"done:real")
        finally:
            await worker.stop()
            await asyncio.wait_for(task, 10)
        # The admin sees both jobs, each with its own submitter.
        assert (await admin.get(squat.id)).headers[SUBMITTER_HEADER] == "other"
        assert (await admin.get(real.id)).headers[SUBMITTER_HEADER] == "submit"
