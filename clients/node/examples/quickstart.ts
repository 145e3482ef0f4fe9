/**
 * Quickstart: a worker and a producer in one process.
 *
 *   make run                                         # in another terminal: a server on :50051
 *   cd clients/node && npm ci && npm run build
 *   node dist/examples/quickstart.js [host:port]
 */

import { Client, JobState, Worker } from "@dispatchd/client";

const TARGET = process.argv[2] ?? "127.0.0.1:50051";

async function main(): Promise<void> {
  const worker = new Worker(TARGET, { concurrency: 4 });
  worker.handle("sms", async (job) => `sent ${job.payload.toString()} (attempt ${job.attempt})`);
  const running = worker.run(); // until SIGTERM/SIGINT, a server drain or worker.stop()

  const client = new Client(TARGET);
  try {
    await client.updateQueue("sms", { width: 2 }, { create: true }); // at most 2 underway at once
    const job = await client.submit("sms", "hello", { priority: 5 });
    const done = await client.wait(job.id, 10_000);
    console.log(JobState[done.state], done.result.toString()); // SUCCEEDED sent hello (attempt 1)
  } finally {
    client.close();
    worker.stop();
    await running;
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
