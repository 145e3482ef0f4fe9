/** The Worker's hooks (the Python Worker's on_start, on_stop, before_job, after_job) against a real dispatchd. */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Client, JobState, type Outcome, PermanentError, Worker, defaultLogger } from "../src";
import { DispatchdProcess, eventually } from "./server";

const TIMEOUT = { timeout: 30_000 };

describe("Worker hooks", () => {
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

  it("run around the run and around each job, in order, and a failing hook fails nothing", TIMEOUT, async () => {
    const events: string[] = [];
    const outcomes = new Map<string, Outcome>();
    const warnings: string[] = [];
    const logger = { ...defaultLogger, warn: (m: string) => warnings.push(m) };
    const worker = new Worker(server.target, { concurrency: 2, logger })
      .handle("h.q", (job) => {
        events.push(`handle ${job.payload.toString()}`);
        if (job.payload.toString() === "bad") {
          throw new PermanentError("no good");
        }
        return "ok";
      })
      .onStart(() => {
        events.push("start");
      })
      .onStart(async function broken() {
        throw new Error("hook bug");
      })
      .beforeJob((job) => {
        events.push(`before ${job.payload.toString()}`);
      })
      .afterJob(async (job, outcome) => {
        events.push(`after ${job.payload.toString()}`);
        outcomes.set(job.payload.toString(), outcome);
      })
      .onStop(() => {
        events.push("stop");
      });
    const done = worker.run({ handleSignals: false });
    await worker.waitConnected(10_000);
    assert.deepEqual(events, ["start"]);

    const good = await client.submit("h.q", "good");
    assert.equal((await client.wait(good.id, 10_000)).state, JobState.SUCCEEDED);
    const bad = await client.submit("h.q", "bad");
    assert.equal((await client.wait(bad.id, 10_000)).state, JobState.FAILED);
    await eventually(() => outcomes.size === 2, "both afterJob hooks");

    worker.stop();
    await done;
    assert.deepEqual(events, [
      "start",
      "before good",
      "handle good",
      "after good",
      "before bad",
      "handle bad",
      "after bad",
      "stop",
    ]);
    assert.deepEqual(outcomes.get("good"), { output: Buffer.from("ok") });
    assert.deepEqual(outcomes.get("bad"), { error: { message: "no good", retryable: false, code: "PermanentError" } });
    assert.ok(
      warnings.some((w) => w.includes("onStart hook broken failed") && w.includes("hook bug")),
      warnings.join("\n"),
    );
  });

  it("runs onStop when the run ends with a refusal", TIMEOUT, async () => {
    const events: string[] = [];
    const worker = new Worker(server.target)
      .handle("not a queue name!", () => "x")
      .onStart(() => {
        events.push("start");
      })
      .onStop(() => {
        events.push("stop");
      });
    await assert.rejects(worker.run({ handleSignals: false }));
    assert.deepEqual(events, ["start", "stop"]);
  });
});
