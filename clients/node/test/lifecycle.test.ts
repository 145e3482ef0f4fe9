/** The Worker across a server's life: a drain it must honour, a restart it must ride out. */

import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { Client, JobState, Worker, status } from "../src";
import { REFUSALS } from "../src/worker";
import { DispatchdProcess, eventually, gate } from "./server";

const TIMEOUT = { timeout: 30_000 };

describe("Worker lifecycle", () => {
  const servers: DispatchdProcess[] = [];
  const clients: Client[] = [];

  async function startServer(listen?: string, args?: string[]): Promise<DispatchdProcess> {
    const server = await DispatchdProcess.start({ listen, args });
    servers.push(server);
    return server;
  }

  function newClient(target: string): Client {
    const client = new Client(target);
    clients.push(client);
    return client;
  }

  after(async () => {
    for (const client of clients) {
      client.close();
    }
    for (const server of servers) {
      await server.kill();
    }
  });

  it("on a drain notice, finishes held jobs, reports them and exits", TIMEOUT, async () => {
    const server = await startServer();
    const client = newClient(server.target);
    const release = gate();
    const started = gate();
    const worker = new Worker(server.target).handle("l.drain", async () => {
      started.open();
      await release.promise;
      return "done";
    });
    const done = worker.run({ handleSignals: false });
    await worker.waitConnected(10_000);
    await client.submit("l.drain");
    await started.promise;

    const counts = await client.drain(20_000);
    assert.deepEqual(counts, { pendingCount: 0, underwayCount: 1 });
    await eventually(() => worker.draining, "the drain notice to reach the worker");
    release.open();
    await done; // the worker exits by itself once the server ends the stream
    assert.equal(await server.wait(), 0, server.log);
    assert.match(server.log, /snapshot of 0 jobs/, "the held job finished within the grace");
    assert.doesNotMatch(server.log, /grace ran out/);
  });

  it("reconnects with backoff when the server goes away and comes back", TIMEOUT, async () => {
    const first = await startServer();
    const ran: string[] = [];
    const worker = new Worker(first.target, { reconnectMaxBackoffMs: 300 }).handle("l.restart", (job) => {
      ran.push(job.id);
      return "ok";
    });
    const done = worker.run({ handleSignals: false });
    try {
      await worker.waitConnected(10_000);
      await first.kill();
      await eventually(() => !worker.connected && worker.stats.reconnects > 0, "the worker to notice");

      const second = await startServer(first.target); // same port: the worker's target
      await eventually(() => worker.connected, "the worker to reconnect");
      const client = newClient(second.target);
      const job = await client.submit("l.restart", "after restart");
      assert.equal((await client.wait(job.id, 10_000)).state, JobState.SUCCEEDED);
      assert.deepEqual(ran, [job.id]);
    } finally {
      worker.stop();
      await done;
    }
  });

  it("reconnects on a broken stream and gives up only when refused", () => {
    // A crashed server may be reported as INTERNAL or UNKNOWN rather than UNAVAILABLE.
    for (const code of [status.UNAVAILABLE, status.INTERNAL, status.UNKNOWN, status.CANCELLED]) {
      assert.equal(REFUSALS.has(code), false, status[code]);
    }
    for (const code of [status.INVALID_ARGUMENT, status.FAILED_PRECONDITION, status.PERMISSION_DENIED]) {
      assert.equal(REFUSALS.has(code), true, status[code]);
    }
  });

  it("keeps waiting for a job across a server restart", TIMEOUT, async () => {
    const first = await startServer();
    const client = newClient(first.target);
    const job = await client.submit("later", "x");
    const waited = client.wait(job.id, 20_000);
    await first.crash(); // the wait is under way: the server goes
    const second = await startServer(`127.0.0.1:${first.port}`, ["--data-dir", first.dataDir]);
    const worker = new Worker(second.target, { reconnectMaxBackoffMs: 200 });
    worker.handle("later", (j) => j.payload);
    const run = worker.run({ handleSignals: false });
    try {
      const done = await waited;
      assert.equal(done.state, JobState.SUCCEEDED);
    } finally {
      worker.stop({ force: true });
      await run.catch(() => undefined);
    }
  });
});
