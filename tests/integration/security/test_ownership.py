"""A submitter touches only its own jobs; the server stamps who submitted each job."""

from __future__ import annotations

import pytest

from dispatchd.engine import NewJob
from dispatchd.security import SUBMITTER_HEADER
from dispatchd_client import (
    AsyncClient,
    NotFound,
    PermissionDenied,
    ReceivedJob,
    Unauthenticated,
    Worker,
)
from dispatchd_client import (
    NewJob as ClientJob,
)
from tests.integration.security.conftest import WRONG_TOKEN, StartServer, token


async def test_submitters_touch_only_their_own_jobs(start_server: StartServer) -> None:
    srv = await start_server(tls=False)
    target = f"127.0.0.1:{srv.port}"
    async with (
        AsyncClient(target, token=token("submit")) as mine,
        AsyncClient(target, token=token("other")) as theirs,
        AsyncClient(target, token=token("admin")) as admin,
    ):
        job = await mine.submit("q", b"x", headers={SUBMITTER_HEADER: "other"})  # forged
        assert (await mine.get(job.id)).headers[SUBMITTER_HEADER] == "submit"
        for call in (theirs.get(job.id), theirs.wait(job.id, 0), theirs.cancel(job.id)):
            with pytest.raises(PermissionDenied, match="was submitted by submit"):
                await call
        assert (await admin.get(job.id)).id == job.id
        assert (await mine.wait(job.id, 0)).id == job.id
        await mine.cancel(job.id)
        with pytest.raises(NotFound):  # an unknown id is not a refusal
            await theirs.get(job.id[:20] + "000000" + job.id[26:])  # well-formed, unknown
        batch = await theirs.submit_batch([ClientJob("q", b"1"), ClientJob("q", b"2")])
        for j in batch:
            assert (await admin.get(j.id)).headers[SUBMITTER_HEADER] == "other"
    assert srv.auth is not None
    assert sum(srv.auth.stats.permission_denied.values()) == 3


async def test_jobs_without_a_submitter_are_for_admins(start_server: StartServer) -> None:
    """Jobs from before auth was turned on (restored from a snapshot) have no stamp."""
    srv = await start_server(tls=False)
    ((job, _),) = await srv.backend.submit([NewJob(queue="q", payload=b"old")])
    target = f"127.0.0.1:{srv.port}"
    async with (
        AsyncClient(target, token=token("submit")) as submitter,
        AsyncClient(target, token=token("admin")) as admin,
    ):
        with pytest.raises(PermissionDenied, match="has no submitter"):
            await submitter.cancel(job.id)
        assert (await admin.cancel(job.id)).id == job.id


async def test_worker_with_a_bad_token_stops_with_the_reason(start_server: StartServer) -> None:
    srv = await start_server(tls=False)
    worker = Worker(f"127.0.0.1:{srv.port}", token=WRONG_TOKEN)

    @worker.handler("q")
    def never(job: ReceivedJob) -> None:
        raise AssertionError("no job may reach a worker without a valid token")

    with pytest.raises(Unauthenticated, match="unknown bearer token"):
        await worker.run_async()


async def test_a_schedule_is_owned_by_its_creator_and_its_jobs_say_so(
    start_server: StartServer,
) -> None:
    from dispatchd_client import ScheduleSpec

    srv = await start_server(tls=False)
    target = f"127.0.0.1:{srv.port}"
    async with (
        AsyncClient(target, token=token("admin")) as admin,
        AsyncClient(target, token=token("submit")) as submitter,
    ):
        made = await admin.create_schedule(
            "owned",
            ScheduleSpec.of(every=3600),
            ClientJob("q", b"x", headers={SUBMITTER_HEADER: "someone-else"}),  # forged
            paused=True,
        )
        assert made.owner == "admin"
        fired = await admin.trigger_schedule("owned")
        assert (await admin.get(fired.job_id)).headers[SUBMITTER_HEADER] == "admin"
        with pytest.raises(PermissionDenied):
            await submitter.create_schedule("mine", ScheduleSpec.of(every=60), ClientJob("q"))
        with pytest.raises(PermissionDenied):
            await submitter.get_schedule("owned")
