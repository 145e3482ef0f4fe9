/** The Worker's opt-in prom-client metrics against a real dispatchd subprocess. */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as prom from "prom-client";
import { Client, PermanentError, RetryableError, Worker, WorkerMetrics } from "../src";
import { DispatchdProcess, eventually } from "./server";

const TIMEOUT = { timeout: 30_000 };

async function sample(registry: prom.Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (metric === undefined) {
    return 0;
  }
  const { values } = await metric.get();
  const found = values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l));
  return found?.value ?? 0;
}

async function count(registry: prom.Registry, name: string, labels: Record<string, string>): Promise<number> {
  const { values } = await (registry.getSingleMetric(name) as prom.Histogram).get();
  const found = values.find(
    (v) => v.metricName === `${name}_count` && Object.entries(labels).every(([k, l]) => v.labels[k] === l),
  );
  return found?.value ?? 0;
}

describe("WorkerMetrics", () => {
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

  it("counts outcomes, handler time and connection under the documented names", TIMEOUT, async () => {
    const registry = new prom.Registry();
    const metrics = new WorkerMetrics(prom, registry);
    const warnings: string[] = [];
    const logger = { ...silent, warn: (m: string) => warnings.push(m) };
    const worker = new Worker(server.target, { workerId: "node-metrics", metrics, logger }).handle("nm", (job) => {
      const what = job.payload.toString();
      if (what === "bad") {
        throw new PermanentError("bad input");
      }
      if (what === "flaky") {
        throw new Error("unexpected");
      }
      if (what === "busy") {
        throw new RetryableError("the database is busy");
      }
      return "ok";
    });
    const done = worker.run({ handleSignals: false });
    try {
      await worker.waitConnected(10_000);
      assert.equal(await sample(registry, "dispatchd_worker_connected"), 1);
      for (const payload of ["ok", "ok", "bad", "flaky", "busy"]) {
        await client.submit("nm", payload);
      }
      await eventually(
        async () => (await count(registry, "dispatchd_worker_job_seconds", { queue: "nm" })) === 5,
        "five jobs to run",
      );
      const jobs = (outcome: string) => sample(registry, "dispatchd_worker_jobs_total", { queue: "nm", outcome });
      assert.equal(await jobs("succeeded"), 2);
      assert.equal(await jobs("permanent"), 1);
      assert.equal(await jobs("retryable"), 2);
      assert.equal(await sample(registry, "dispatchd_worker_jobs_running", { queue: "nm" }), 0);
      assert.equal(await sample(registry, "dispatchd_worker_reconnects_total"), 0);
      assert.match(await registry.metrics(), /# TYPE dispatchd_worker_job_seconds histogram/);
    } finally {
      worker.stop();
      await done;
    }
    assert.equal(await sample(registry, "dispatchd_worker_connected"), 0);
    // An expected retryable failure is one line; a surprise keeps its stack.
    const busy = warnings.filter((w) => w.includes("busy"));
    assert.deepEqual(busy.length, 1);
    assert.doesNotMatch(busy[0] ?? "", /\n\s+at /);
    const unexpected = warnings.filter((w) => w.includes("unexpected"));
    assert.match(unexpected[0] ?? "", /\n\s+at /);
  });
});

const silent = { debug() {}, info() {}, warn() {}, error() {} };
