/** Workflows from Node against a real dispatchd (docs/workflows.md): progress reported by a
 * handler, a batch filled and closed with its on_complete callback, a dependency. */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Client, JobState, type ReceivedJob, type WatchItem, Worker } from "../src";
import { JobEventKind } from "../src/gen/dispatchd/v1/dispatcher";
import { DispatchdProcess, eventually } from "./server";

const TIMEOUT = { timeout: 30_000 };

describe("workflows", () => {
  let server: DispatchdProcess;
  let client: Client;
  let worker: Worker;
  let done: Promise<void>;
  const seen: string[] = [];
  let release: () => void = () => {};
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });

  before(async () => {
    server = await DispatchdProcess.start();
    client = new Client(server.target);
    worker = new Worker(server.target, { workerId: "node-flows", concurrency: 4 }).handle(
      "nflow",
      async (job: ReceivedJob) => {
        seen.push(job.payload.toString());
        if (job.payload.toString() === "slow") {
          job.reportProgress(40, "forty");
          await held;
        }
        return `out:${job.payload.toString()}`;
      },
    );
    done = worker.run({ handleSignals: false });
    await worker.waitConnected(10_000);
  });

  after(async () => {
    worker.stop({ force: true });
    await done.catch(() => {});
    client?.close();
    await server?.kill();
  });

  it("stores a handler's progress report", TIMEOUT, async () => {
    const slow = await client.submit("nflow", "slow");
    await eventually(async () => (await client.get(slow.id)).progress?.message === "forty", "progress stored");
    const job = await client.get(slow.id);
    assert.equal(job.progress?.percent, 40);
    release();
    assert.equal((await client.wait(slow.id, 10_000)).state, JobState.SUCCEEDED);
  });

  it("runs a batch with a dependency and fires on_complete once", TIMEOUT, async () => {
    const closed = await client.batch(
      "nflow",
      { description: "node", onComplete: { queue: "nflow", payload: "callback" } },
      async (b) => {
        const first = await b.submit("a");
        await b.submit("b", { parentIds: [first.id] });
      },
    );
    assert.equal(closed.closed, true);
    const finished = await client.waitBatch("nflow", closed.batchId, 10_000);
    assert.equal(finished.complete, true);
    assert.equal(finished.counts.succeeded, 2);
    const callback = await client.wait(finished.onCompleteJobId, 10_000);
    assert.equal(callback.headers["dispatchd-batch-id"], closed.batchId);
    assert.ok(seen.indexOf("a") < seen.indexOf("b"));
    assert.equal(seen.filter((p) => p === "callback").length, 1);
  });
});

describe("watch", () => {
  it("follows a job's events and resumes from a token", TIMEOUT, async () => {
    const server = await DispatchdProcess.start();
    const client = new Client(server.target);
    const abort = new AbortController();
    try {
      const events = client.watch({ queues: ["nwatch"] }, abort.signal);
      const first = events.next();
      // The watch starts with its first read: marker jobs until it has one (in order).
      let got: IteratorResult<WatchItem> | undefined;
      for (let i = 0; i < 100 && got === undefined; i++) {
        await client.submit("nwatch", "marker");
        got = await Promise.race([first, new Promise<undefined>((r) => setTimeout(() => r(undefined), 100))]);
      }
      assert.ok(got !== undefined && !got.done && got.value.$case === "event");
      const token = got.value.value.resumeToken;
      const job = await client.submit("nwatch", "x");
      await client.cancel(job.id);
      const kinds: number[] = [];
      for await (const item of client.watch(
        { queues: ["nwatch"], resumeToken: token, jobIds: [job.id] },
        abort.signal,
      )) {
        if (item.$case === "event") {
          kinds.push(item.value.kind);
        }
        if (kinds.length === 2) {
          break;
        }
      }
      assert.deepEqual(kinds, [JobEventKind.JOB_EVENT_KIND_SUBMITTED, JobEventKind.JOB_EVENT_KIND_CANCELLED]);
    } finally {
      abort.abort();
      client.close();
      await server.kill();
    }
  });
});
