/** The Worker against a real dispatchd subprocess: handlers, flow control, leases, cancel. */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  Client,
  InvalidArgumentError,
  JobState,
  PermanentError,
  type ReceivedJob,
  ThrottledError,
  Worker,
  defaultLogger,
} from "../src";
import { DispatchdProcess, eventually, gate } from "./server";

const TIMEOUT = { timeout: 30_000 };
const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

class QuotaExceeded extends Error {}

describe("Worker", () => {
  let server: DispatchdProcess;
  let client: Client;
  const running: Array<{ worker: Worker; done: Promise<void> }> = [];

  /** Start `worker` in the background and wait until the server welcomed it. */
  async function start(worker: Worker): Promise<void> {
    const done = worker.run({ handleSignals: false });
    running.push({ worker, done });
    await Promise.race([worker.waitConnected(10_000), done]);
  }

  before(async () => {
    server = await DispatchdProcess.start();
    client = new Client(server.target);
  });

  after(async () => {
    for (const { worker, done } of running) {
      worker.stop({ force: true });
      await done.catch(() => {});
    }
    client?.close();
    await server?.kill();
  });

  it("runs a handler per queue and reports outputs and errors", TIMEOUT, async () => {
    const seen: ReceivedJob[] = [];
    const warnings: string[] = [];
    const logger = { ...defaultLogger, warn: (m: string) => warnings.push(m) };
    const worker = new Worker(server.target, { workerId: "node-basic", concurrency: 4, logger })
      .handle("w.text", (job) => {
        seen.push(job);
        return `echo ${job.payload.toString()}`;
      })
      .handle("w.bytes", async () => Uint8Array.from([1, 2, 3]))
      .handle("w.none", () => undefined)
      .handle("w.fail", (job) => {
        throw job.payload.toString() === "permanent" ? new PermanentError("bad input") : new QuotaExceeded("try later");
      });
    assert.deepEqual(worker.queues, ["w.bytes", "w.fail", "w.none", "w.text"]);
    await start(worker);
    assert.equal(worker.workerId, "node-basic");

    const text = await client.submit("w.text", "hi", { headers: { traceparent: TRACEPARENT } });
    const bytes = await client.submit("w.bytes");
    const none = await client.submit("w.none");
    const transient = await client.submit("w.fail", "transient");
    const permanent = await client.submit("w.fail", "permanent");

    const doneText = await client.wait(text.id, 10_000);
    assert.equal(doneText.state, JobState.SUCCEEDED);
    assert.equal(doneText.result.toString(), "echo hi");
    assert.equal(doneText.workerId, "node-basic");
    assert.equal(seen[0]?.headers.traceparent, TRACEPARENT, "trace context reaches the handler");
    assert.equal(seen[0]?.attempt, 1);
    assert.ok(seen[0]?.leaseId);
    assert.deepEqual([...(await client.wait(bytes.id, 10_000)).result], [1, 2, 3]);
    assert.equal((await client.wait(none.id, 10_000)).result.length, 0);

    const failed = await client.wait(transient.id, 10_000);
    assert.equal(failed.state, JobState.FAILED);
    assert.deepEqual(failed.error, { message: "try later", retryable: true, code: "QuotaExceeded" });
    const dead = await client.wait(permanent.id, 10_000);
    assert.deepEqual(dead.error, { message: "bad input", retryable: false, code: "PermanentError" });
    assert.equal(warnings.length, 1, "a retryable failure is logged as a warning, a permanent one not");
    assert.match(warnings[0]!, /QuotaExceeded|try later/);
  });

  it("a handler throwing ThrottledError holds the whole queue for its delay", TIMEOUT, async () => {
    const started: number[] = [];
    const worker = new Worker(server.target, { concurrency: 1 }).handle("w.throttle", () => {
      started.push(Date.now());
      if (started.length === 1) {
        throw new ThrottledError(1_000, { reason: "provider said 429" });
      }
      return "done";
    });
    await client.updateQueue("w.throttle", { width: 10 }, { create: true });
    await start(worker);
    const first = await client.submit("w.throttle", "1");
    await eventually(async () => (await client.getQueue("w.throttle")).throttledUntil !== undefined, "the hold");
    const held = await client.getQueue("w.throttle");
    assert.equal(held.throttleReason, "provider said 429");
    const second = await client.submit("w.throttle", "2");
    const done = await client.wait(first.id, 10_000);
    assert.equal(done.state, JobState.SUCCEEDED);
    assert.deepEqual([done.attempt, done.throttleCount], [1, 1], "the throttled delivery is no attempt");
    assert.equal((await client.wait(second.id, 10_000)).state, JobState.SUCCEEDED);
    assert.equal(started.length, 3);
    assert.ok(started[1]! - started[0]! >= 900, "nothing of the queue ran during the hold");
  });

  it("sets an adaptive rate and reads the effective one", TIMEOUT, async () => {
    const q = await client.updateQueue(
      "w.adaptive",
      { rate: { perSecond: 40 }, adaptive: { floor: 5, decrease: 0.5, quietIntervalMs: 2_000 } },
      { create: true },
    );
    assert.deepEqual(q.adaptive, { floor: 5, decrease: 0.5, increase: 0, quietIntervalMs: 2_000 });
    assert.equal(q.effectiveRate, 40);
    const cleared = await client.updateQueue("w.adaptive", { adaptive: null });
    assert.equal(cleared.adaptive, undefined);
    const quotas = await client.updateQueue("w.adaptive", {
      windows: [
        { limit: 500, periodMs: 60_000 },
        { limit: 20_000, periodMs: 86_400_000 },
      ],
    });
    assert.deepEqual(
      quotas.windows.map((w) => [w.limit, w.periodMs, w.used]),
      [
        [500, 60_000, 0],
        [20_000, 86_400_000, 0],
      ],
    );
  });

  it("holds at most `concurrency` jobs and sends results of one turn in one message", TIMEOUT, async () => {
    const release = gate();
    let active = 0;
    let maxActive = 0;
    const worker = new Worker(server.target, { concurrency: 3 }).handle("w.flow", async () => {
      active += 1;
      maxActive = Math.max(maxActive, active);
      await release.promise;
      active -= 1;
      return "ok";
    });
    await start(worker);
    const jobs = await client.submitBatch(Array.from({ length: 5 }, () => ({ queue: "w.flow" })));
    await eventually(() => active === 3, "three jobs running");
    assert.equal((await client.getQueue("w.flow")).underwayCount, 3, "the server honours the credit");

    const before = { ...worker.stats };
    release.open();
    for (const job of jobs) {
      assert.equal((await client.wait(job.id, 10_000)).state, JobState.SUCCEEDED);
    }
    assert.equal(maxActive, 3);
    assert.equal(worker.stats.resultsSent - before.resultsSent, 5);
    // The three released together share one message; the last two run after them.
    assert.ok(worker.stats.resultMessages - before.resultMessages <= 3, JSON.stringify(worker.stats));
  });

  it("splits results that together exceed what one message may carry", TIMEOUT, async () => {
    const n = 30;
    const release = gate();
    let started = 0;
    const big = Buffer.alloc(1024 * 1024 - 1024, "r");
    const worker = new Worker(server.target, { concurrency: n }).handle("w.big", async () => {
      started += 1;
      await release.promise;
      return big;
    });
    await client.updateQueue("w.big", { width: n }, { create: true });
    await start(worker);
    const jobs = await client.submitBatch(Array.from({ length: n }, () => ({ queue: "w.big" })));
    await eventually(() => started === n, "every job running");
    release.open();
    for (const job of jobs) {
      const done = await client.wait(job.id, 20_000);
      assert.deepEqual([done.state, done.attempt, done.result.length], [JobState.SUCCEEDED, 1, big.length]);
    }
  });

  it("cuts a huge error text to what the server keeps", TIMEOUT, async () => {
    const worker = new Worker(server.target, { concurrency: 1 }).handle("w.huge", () => {
      throw new PermanentError("E".repeat(20 * 1024 * 1024));
    });
    await start(worker);
    const job = await client.submit("w.huge");
    const dead = await client.wait(job.id, 20_000);
    assert.equal(dead.attempt, 1);
    assert.ok(Buffer.byteLength(dead.error!.message) <= 4096);
    assert.match(dead.error!.message, /\[cut: 20971520 bytes in all\]$/);
  });

  it("heartbeats keep a lease alive past its duration", TIMEOUT, async () => {
    await client.updateQueue("w.lease", { leaseDurationMs: 1000 }, { create: true });
    const worker = new Worker(server.target, { concurrency: 1 }).handle("w.lease", async (job) => {
      // Run until the first lease is well past, then until the server shows a lease that
      // still runs: only heartbeats (every third of the lease, as welcomed) get us there.
      const firstLeaseEnd = job.leaseExpireTime?.getTime() ?? 0;
      assert.ok(firstLeaseEnd > 0);
      await eventually(async () => {
        const leaseEnd = (await client.get(job.id)).leaseExpireTime?.getTime() ?? 0;
        return Date.now() > firstLeaseEnd + 300 && leaseEnd > Date.now();
      }, "the lease to outlive its first deadline");
      return "survived";
    });
    await start(worker);
    const job = await client.submit("w.lease");
    const done = await client.wait(job.id, 20_000);
    assert.equal(done.state, JobState.SUCCEEDED);
    assert.equal(done.attempt, 1, "the lease never expired, so the job was never redelivered");
    assert.equal(worker.stats.rejections, 0);
    assert.ok(worker.stats.heartbeatsSent >= 3, JSON.stringify(worker.stats));
  });

  it("aborts a job's signal when the server cancels it, then answers", TIMEOUT, async () => {
    let reason: unknown;
    const started = gate();
    const worker = new Worker(server.target).handle("w.cancel", async (job) => {
      started.open();
      await new Promise<void>((resolve) => job.signal.addEventListener("abort", () => resolve(), { once: true }));
      reason = job.signal.reason;
      return "ignored: the job was cancelled";
    });
    await start(worker);
    const job = await client.submit("w.cancel");
    await started.promise;
    assert.equal((await client.cancel(job.id)).state, JobState.CANCELLED);
    await eventually(async () => (await client.getQueue("w.cancel")).underwayCount === 0, "the slot freed");
    assert.ok(reason instanceof DOMException);
    assert.equal(reason.name, "AbortError");
    const finished = await client.get(job.id);
    assert.equal(finished.state, JobState.CANCELLED);
  });

  it("fails a result that is too large for the server instead of sending it", TIMEOUT, async () => {
    const worker = new Worker(server.target).handle("w.big", () => Buffer.alloc(2 * 1024 * 1024));
    await start(worker);
    const job = await client.submit("w.big");
    const done = await client.wait(job.id, 10_000);
    assert.equal(done.state, JobState.FAILED);
    assert.equal(done.error?.code, "ResultTooLarge");
    assert.equal(done.error?.retryable, false);
  });

  it("rejects run() when the server refuses the worker", TIMEOUT, async () => {
    const worker = new Worker(server.target).handle("not a queue name", () => "x");
    await assert.rejects(worker.run({ handleSignals: false }), InvalidArgumentError);
    assert.equal(worker.connected, false);
  });

  it("finishes held jobs and stops on SIGTERM", TIMEOUT, async () => {
    const release = gate();
    const started = gate();
    const worker = new Worker(server.target).handle("w.sigterm", async () => {
      started.open();
      await release.promise;
      return "finished after SIGTERM";
    });
    const done = worker.run(); // handles signals, like a worker process would
    await worker.waitConnected(10_000);
    const job = await client.submit("w.sigterm");
    await started.promise;
    process.kill(process.pid, "SIGTERM");
    await eventually(() => worker.draining, "the worker to start draining");
    release.open();
    await done;
    const finished = await client.get(job.id);
    assert.equal(finished.state, JobState.SUCCEEDED);
    assert.equal(finished.result.toString(), "finished after SIGTERM");
    assert.equal(process.listenerCount("SIGTERM"), 0, "signal handlers are removed after the run");
  });
});
