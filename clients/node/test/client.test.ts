/** The Client against a real dispatchd subprocess. */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  Client,
  DispatchdError,
  FailedPreconditionError,
  InvalidArgumentError,
  JobState,
  NotFoundError,
  UnavailableError,
  isFinished,
  status,
} from "../src";
import { DispatchdProcess } from "./server";

const TIMEOUT = { timeout: 30_000 };
const TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

describe("Client", () => {
  let server: DispatchdProcess;
  let client: Client;

  before(async () => {
    server = await DispatchdProcess.start();
    client = new Client(server.target);
  });

  after(async () => {
    client?.close();
    await server?.kill();
  });

  it("submits, gets and waits, keeping headers and text payloads", TIMEOUT, async () => {
    const job = await client.submit("c.basic", "hello", { priority: 4, headers: { traceparent: TRACEPARENT } });
    assert.match(job.id, /^[0-9A-HJKMNP-TV-Z]{26}$/);
    assert.equal(job.state, JobState.PENDING);
    assert.equal(job.duplicate, false);
    assert.ok(job.submitTime instanceof Date);

    const got = await client.get(job.id);
    assert.equal(got.payload.toString(), "hello");
    assert.equal(got.contentType, "text/plain; charset=utf-8");
    assert.equal(got.priority, 4);
    assert.deepEqual(got.headers, { traceparent: TRACEPARENT });
    assert.equal(got.attempt, 0);
    assert.equal(got.dispatchTime, undefined);

    const waited = await client.wait(job.id, 50);
    assert.equal(waited.state, JobState.PENDING, "a wait that times out returns the job as it is");
    assert.equal(isFinished(waited.state), false);
  });

  it("sends bytes as they are and submits batches in order", TIMEOUT, async () => {
    const bytes = Uint8Array.from([0, 255, 7]);
    const jobs = await client.submitBatch([
      { queue: "c.batch", payload: bytes, contentType: "application/octet-stream" },
      { queue: "c.batch", payload: "two", priority: 9 },
      { queue: "c.batch" },
    ]);
    assert.equal(jobs.length, 3);
    assert.deepEqual(
      jobs.map((j) => j.duplicate),
      [false, false, false],
    );
    const first = await client.get(jobs[0]!.id);
    assert.deepEqual([...first.payload], [0, 255, 7]);
    assert.equal(first.contentType, "application/octet-stream");
    const third = await client.get(jobs[2]!.id);
    assert.equal(third.payload.length, 0);
    assert.equal(third.contentType, "", "an empty payload is bytes, not text");
  });

  it("lists jobs lazily across pages, in dispatch order", TIMEOUT, async () => {
    const priorities = [1, 5, 3, 5, 0];
    const submitted = [];
    for (const priority of priorities) {
      submitted.push(await client.submit("c.list", "", { priority }));
    }
    const listed = [];
    for await (const job of client.listJobs("c.list", { pageSize: 2 })) {
      listed.push(job.id);
    }
    const expected = submitted
      .map((job, i) => ({ id: job.id, priority: priorities[i]!, i }))
      .sort((a, b) => b.priority - a.priority || a.i - b.i)
      .map((j) => j.id);
    assert.deepEqual(listed, expected);

    const pending = [];
    for await (const job of client.listJobs("c.list", { state: JobState.SUCCEEDED })) {
      pending.push(job);
    }
    assert.deepEqual(pending, []);
  });

  it("cancels and reprioritizes, and maps statuses to typed errors", TIMEOUT, async () => {
    const job = await client.submit("c.errors", "x");
    assert.equal((await client.reprioritize(job.id, 7)).priority, 7);
    const cancelled = await client.cancel(job.id);
    assert.equal(cancelled.state, JobState.CANCELLED);
    assert.ok(isFinished(cancelled.state));

    await assert.rejects(client.reprioritize(job.id, 1), (e: unknown) => {
      assert.ok(e instanceof FailedPreconditionError);
      assert.equal(e.code, status.FAILED_PRECONDITION);
      assert.equal(e.codeName, "FAILED_PRECONDITION");
      return true;
    });
    await assert.rejects(client.get("01ARZ3NDEKTSV4RRFFQ69G5FAV"), (e: unknown) => {
      assert.ok(e instanceof NotFoundError);
      assert.ok(e instanceof DispatchdError);
      assert.equal(e.code, status.NOT_FOUND);
      assert.ok(e.details.length > 0, "the server says what was not found");
      assert.equal(e.name, "NotFoundError");
      return true;
    });
    await assert.rejects(client.submit("no spaces allowed", "x"), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError);
      assert.match(e.details, /queue/);
      return true;
    });
  });

  it("reads and changes queue settings live", TIMEOUT, async () => {
    await assert.rejects(client.updateQueue("c.q", { width: 2 }), NotFoundError);
    await assert.rejects(client.updateQueue("c.q", {}), TypeError);

    const created = await client.updateQueue("c.q", { width: 2, leaseDurationMs: 1500 }, { create: true });
    assert.equal(created.width, 2);
    assert.equal(created.leaseDurationMs, 1500);
    assert.equal(created.paused, false);

    assert.equal((await client.pause("c.q")).paused, true);
    const resumed = await client.resume("c.q", 5);
    assert.equal(resumed.paused, false);
    assert.equal(resumed.width, 5);

    await client.submit("c.q", "x");
    const queue = await client.getQueue("c.q");
    assert.equal(queue.pendingCount, 1);
    assert.equal(queue.leaseDurationMs, 1500, "untouched settings stay");
    const names = (await client.listQueues()).map((q) => q.name);
    assert.ok(names.includes("c.q"));
    assert.deepEqual(names, [...names].sort());
  });

  it("cancels a call through its AbortSignal", TIMEOUT, async () => {
    const job = await client.submit("c.abort", "x");
    const controller = new AbortController();
    const waiting = client.wait(job.id, 60_000, { signal: controller.signal });
    controller.abort();
    await assert.rejects(waiting, (e: unknown) => {
      assert.ok(e instanceof DispatchdError);
      assert.equal(e.code, status.CANCELLED);
      return true;
    });
  });
});

describe("Client without a server", () => {
  it("rejects with UnavailableError after retrying reads", TIMEOUT, async () => {
    const gone = await DispatchdProcess.start();
    const target = gone.target;
    await gone.kill();
    const client = new Client(target, { retryUnavailable: 2 });
    try {
      await assert.rejects(client.get("01ARZ3NDEKTSV4RRFFQ69G5FAV"), UnavailableError);
      await assert.rejects(client.submit("q", "x"), UnavailableError);
    } finally {
      client.close();
    }
  });
});
