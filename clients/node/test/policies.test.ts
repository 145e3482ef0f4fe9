/** Dispatch policies through the Node client: retries, delays, TTL, idempotency, queue settings, slots. */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  Client,
  FailedPreconditionError,
  JobState,
  NotFoundError,
  PermanentError,
  ResourceExhaustedError,
  type RetryPolicy,
  Worker,
} from "../src";
import { DispatchdProcess, eventually } from "./server";

const TIMEOUT = { timeout: 30_000 };
const FAST_RETRY: RetryPolicy = { maxAttempts: 3, minBackoffMs: 10, maxBackoffMs: 50 };

describe("Policies", () => {
  let server: DispatchdProcess;
  let client: Client;
  const workers: Array<{ worker: Worker; done: Promise<void> }> = [];

  async function serve(worker: Worker): Promise<void> {
    const done = worker.run({ handleSignals: false });
    workers.push({ worker, done });
    await Promise.race([worker.waitConnected(10_000), done]);
  }

  before(async () => {
    server = await DispatchdProcess.start();
    client = new Client(server.target);
  });

  after(async () => {
    for (const { worker, done } of workers) {
      worker.stop({ force: true });
      await done.catch(() => {});
    }
    client?.close();
    await server?.kill();
  });

  it("retries a failing job under its policy, ends it DEAD, and retryJob revives it", TIMEOUT, async () => {
    let healthy = false;
    const quiet = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
    await serve(
      new Worker(server.target, { concurrency: 1, logger: quiet }).handle("p.retry", (job) => {
        if (job.payload.toString() === "bad") {
          throw new PermanentError("bad payload");
        }
        if (!healthy) {
          throw new Error(`attempt ${job.attempt} failed`);
        }
        return "recovered";
      }),
    );
    const job = await client.submit("p.retry", "x", { retryPolicy: FAST_RETRY });
    assert.equal(job.retryPolicy?.maxAttempts, 3);
    const dead = await client.wait(job.id, 10_000);
    assert.equal(dead.state, JobState.DEAD);
    assert.equal(dead.attempt, 3);
    assert.deepEqual(
      dead.attempts.map((a) => [a.number, a.error?.message]),
      [
        [1, "attempt 1 failed"],
        [2, "attempt 2 failed"],
        [3, "attempt 3 failed"],
      ],
    );

    const refused = await client.submit("p.retry", "bad", { retryPolicy: FAST_RETRY });
    assert.equal((await client.wait(refused.id, 10_000)).attempt, 1, "a PermanentError is not retried");

    await assert.rejects(
      client.retryJob((await client.submit("p.retry", "z", { delayMs: 60_000 })).id),
      FailedPreconditionError,
    );
    healthy = true;
    await client.retryJob(job.id);
    const revived = await client.wait(job.id, 10_000);
    assert.equal(revived.state, JobState.SUCCEEDED);
    assert.equal(revived.result.toString(), "recovered");
  });

  it("schedules delayed jobs and expires those that could not run in time", TIMEOUT, async () => {
    const later = await client.submit("p.later", "x", { delayMs: 60_000 });
    assert.equal(later.state, JobState.SCHEDULED);
    assert.ok(later.notBefore && later.notBefore.getTime() > Date.now());
    assert.equal((await client.getQueue("p.later")).scheduledCount, 1);

    await client.updateQueue("p.ttl", { width: 0 }, { create: true });
    const doomed = await client.submit("p.ttl", "x", { ttlMs: 200 });
    assert.ok(doomed.expireTime instanceof Date);
    assert.equal((await client.wait(doomed.id, 10_000)).state, JobState.EXPIRED);
    await assert.rejects(client.submit("p.later", "x", { delayMs: 1, notBefore: new Date() }), TypeError);
  });

  it("returns the first job for a repeated idempotency key", TIMEOUT, async () => {
    const first = await client.submit("p.idem", "1", { idempotencyKey: "order-7" });
    const again = await client.submit("p.idem", "2", { idempotencyKey: "order-7" });
    assert.deepEqual([first.duplicate, again.duplicate], [false, true]);
    assert.equal(again.id, first.id);
    const batch = await client.submitBatch([
      { queue: "p.idem", idempotencyKey: "order-8" },
      { queue: "p.idem", idempotencyKey: "order-8" },
    ]);
    assert.deepEqual(
      batch.map((j) => j.duplicate),
      [false, true],
    );
    assert.equal((await client.getQueue("p.idem")).pendingCount, 2);
  });

  it("sets and clears queue policies live", TIMEOUT, async () => {
    const set = await client.updateQueue(
      "p.settings",
      {
        rate: { perSecond: 20, burst: 2 },
        retryPolicy: FAST_RETRY,
        keyLimits: { maxInFlightPerKey: 1 },
        maxPending: 2,
        dedupWindowMs: 60_000,
      },
      { create: true },
    );
    assert.deepEqual(set.rate, { perSecond: 20, burst: 2 });
    assert.equal(set.retryPolicy?.maxAttempts, 3);
    assert.equal(set.retryPolicy?.minBackoffMs, 10);
    assert.equal(set.keyLimits?.maxInFlightPerKey, 1);
    assert.equal(set.maxPending, 2);
    assert.equal(set.dedupWindowMs, 60_000);

    await client.submitBatch([{ queue: "p.settings" }, { queue: "p.settings" }]);
    await assert.rejects(client.submit("p.settings"), ResourceExhaustedError);

    const cleared = await client.updateQueue("p.settings", { rate: null, retryPolicy: null, keyLimits: null });
    assert.equal(cleared.rate, undefined);
    assert.equal(cleared.retryPolicy, undefined);
    assert.equal(cleared.keyLimits, undefined);
    assert.equal(cleared.maxPending, 2, "settings not named stay");
  });

  it("purges finished jobs", TIMEOUT, async () => {
    await serve(new Worker(server.target).handle("p.purge", () => "ok"));
    const jobs = await client.submitBatch([{ queue: "p.purge" }, { queue: "p.purge" }]);
    for (const job of jobs) {
      await client.wait(job.id, 10_000);
    }
    assert.equal(await client.purgeJobs("p.purge", JobState.SUCCEEDED), 2);
    await assert.rejects(client.get(jobs[0]!.id), NotFoundError);
  });

  it("deletes an empty queue and refuses one with work, saying what it has", TIMEOUT, async () => {
    await client.updateQueue("p.delete", { width: 0 }, { create: true });
    const job = await client.submit("p.delete");
    await assert.rejects(client.deleteQueue("p.delete"), (e: unknown) => {
      assert.ok(e instanceof FailedPreconditionError);
      assert.equal(e.reason, "QUEUE_NOT_EMPTY");
      assert.match(e.details, /1 pending job/);
      return true;
    });
    await client.cancel(job.id);
    assert.equal(await client.deleteQueue("p.delete"), 1, "the cancelled job goes with it");
    await assert.rejects(client.getQueue("p.delete"), NotFoundError);
  });

  it("holds a slot of the width outside workers until released", TIMEOUT, async () => {
    await client.updateQueue("p.slot", { width: 1 }, { create: true });
    const slot = await client.acquireSlot("p.slot", { holder: "cron:nightly", ttlMs: 30_000 });
    assert.equal(slot.holder, "cron:nightly");
    assert.equal((await client.getQueue("p.slot")).slotCount, 1);
    await serve(new Worker(server.target).handle("p.slot", () => "ran"));
    const job = await client.submit("p.slot");
    assert.equal((await client.wait(job.id, 100)).state, JobState.PENDING, "the slot holds the only unit of width");

    const renewed = await client.renewSlot(slot.slotId);
    assert.ok(renewed.expireTime && slot.expireTime && renewed.expireTime >= slot.expireTime);
    await client.releaseSlot(slot.slotId);
    assert.equal((await client.wait(job.id, 10_000)).state, JobState.SUCCEEDED);
    await eventually(async () => (await client.getQueue("p.slot")).slotCount === 0, "the slot to be gone");
    await assert.rejects(client.renewSlot(slot.slotId), NotFoundError);
  });
});
