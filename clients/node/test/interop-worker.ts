/**
 * A Node worker for the Python interoperability test (tests/e2e/test_node_interop.py).
 *
 *   node dist/test/interop-worker.js TARGET QUEUE CONCURRENCY HOLD_MS
 *
 * Each job's result is JSON saying who ran it, when (wall-clock seconds, sub-millisecond, the
 * clock Python's time.time() reads) and which traceparent it saw, so the test can check from
 * Python that the two workers together never exceeded the queue's width. Prints "ready" once
 * welcomed; stops gracefully on SIGTERM and exits 0.
 */

import { performance } from "node:perf_hooks";
import { setTimeout as delay } from "node:timers/promises";
import { Worker } from "../src";

function now(): number {
  return (performance.timeOrigin + performance.now()) / 1000;
}

async function main(): Promise<void> {
  const [target, queue, concurrency, holdMs] = process.argv.slice(2);
  if (!target || !queue || !concurrency || !holdMs) {
    throw new Error("usage: interop-worker.js TARGET QUEUE CONCURRENCY HOLD_MS");
  }
  const log = (message: string): void => void process.stderr.write(`${message}\n`);
  const worker = new Worker(target, {
    workerId: "node-interop",
    concurrency: Number(concurrency),
    logger: { debug: () => {}, info: log, warn: log, error: log },
  });
  worker.handle(queue, async (job) => {
    const start = now();
    await delay(Number(holdMs), undefined, { signal: job.signal });
    const end = now();
    return JSON.stringify({ worker: "node", start, end, traceparent: job.headers.traceparent ?? null });
  });
  const running = worker.run();
  await worker.waitConnected(10_000);
  process.stdout.write("ready\n");
  await running;
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
