"""Backend.fleet_counts(): what the workers of every live server process ran so far, the
overview chart's source. The same on every backend for this process's own workers; on a
shared backend, a replica sees what another replica's workers ran, and a replica that
stopped drops out (its counts are never subtracted: web/trends.py FleetChart)."""

from __future__ import annotations

from dispatchd.backend import JobCounts, ReplicaCounts, WorkerSpec, WorkResult
from dispatchd.engine import RetryPolicy
from tests.conformance.harness import Driver, RecordingOutbox

ONE_TRY = RetryPolicy(max_attempts=1, min_backoff=1.0, max_backoff=1.0)
TWO_TRIES = RetryPolicy(max_attempts=2, min_backoff=1.0, max_backoff=1.0, jitter=0.0)


async def mine(driver: Driver) -> JobCounts:
    counts = await driver.backend.fleet_counts()
    assert counts, "this process's own entry is always there"
    return counts[0].counts


async def test_this_process_counts_attempts_successes_and_jobs_failed_for_good(
    driver: Driver,
) -> None:
    assert await mine(driver) == JobCounts(0, 0, 0)
    await driver.update(width=10)
    await driver.update("once", width=10, retry_policy=ONE_TRY)
    await driver.update("twice", width=10, retry_policy=TWO_TRIES)
    w = await driver.connect(["q", "once", "twice"], credits=10)
    await driver.add_n(2)
    await driver.add("once")
    await driver.add("twice")
    for lease in w.take():
        if lease.job.queue == "q":
            await w.ok(lease)
        else:
            await w.fail(lease)
    assert await mine(driver) == JobCounts(4, 2, 1)  # the retry is not failed for good yet
    await driver.advance(2.0)  # its backoff ends: the second attempt goes out, and fails
    (retry,) = w.take()
    await w.fail(retry)
    assert await mine(driver) == JobCounts(5, 2, 2)


async def test_a_replica_sees_what_another_replicas_workers_ran(driver: Driver) -> None:
    if not driver.backend.capabilities.shared:
        return  # one process holds the queues: its own entry is the fleet
    await driver.update(width=10)
    other = await driver.peer()
    outbox = RecordingOutbox()
    record = await other.connect(WorkerSpec("elsewhere", ["q"], 10), outbox)
    await driver.add_n(3)
    await other.settle()
    assert len(outbox.delivered) == 3
    results = [WorkResult(ls.job.id, ls.lease_id, b"ok") for ls in outbox.delivered]
    assert await other.results(record, results) == []
    await other.settle()  # publishes its counts, as its timer does every second
    counts = await driver.backend.fleet_counts()
    assert len(counts) == 2
    assert counts[0].counts == JobCounts(0, 0, 0)
    assert [c.counts for c in counts[1:]] == [JobCounts(3, 3, 0)]
    assert counts[1].replica != counts[0].replica
    await other.disconnect(record)
    await other.close()  # it withdraws: the fleet no longer counts it
    driver.peers.remove(other)
    assert await driver.backend.fleet_counts() == [ReplicaCounts(counts[0].replica, JobCounts())]
