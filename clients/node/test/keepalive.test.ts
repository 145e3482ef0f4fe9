/**
 * Keepalive: a Worker behind a connection that died without a word (a partition: a proxy
 * that forwards nothing either way and closes nothing) notices and gives the stream up, and
 * the server gives its job back.
 */

import assert from "node:assert/strict";
import { type Server, type Socket, createConnection, createServer } from "node:net";
import { after, before, describe, it } from "node:test";
import { Client, JobState, Worker } from "../src";
import { DispatchdProcess, eventually } from "./server";

const TIMEOUT = { timeout: 30_000 };

/** Forwards bytes to `port` until `partition()`; then drops everything, closing nothing. */
class PartitionProxy {
  private open = true;
  private readonly sockets: Socket[] = [];
  private server?: Server;

  constructor(private readonly upstreamPort: number) {}

  async start(): Promise<string> {
    this.server = createServer((client) => {
      const upstream = createConnection(this.upstreamPort, "127.0.0.1");
      this.sockets.push(client, upstream);
      for (const [from, to] of [
        [client, upstream],
        [upstream, client],
      ] as const) {
        from.on("data", (chunk) => {
          if (this.open) {
            to.write(chunk);
          }
        });
        from.on("error", () => undefined);
      }
    });
    await new Promise<void>((resolve) => this.server?.listen(0, "127.0.0.1", resolve));
    const address = this.server.address();
    assert.ok(address !== null && typeof address === "object");
    return `127.0.0.1:${address.port}`;
  }

  partition(): void {
    this.open = false;
  }

  close(): void {
    for (const socket of this.sockets) {
      socket.destroy();
    }
    this.server?.close();
  }
}

describe("Keepalive", () => {
  let server: DispatchdProcess;
  let client: Client;

  before(async () => {
    server = await DispatchdProcess.start({ args: ["--keepalive-time", "1"] });
    client = new Client(server.target);
  });

  after(async () => {
    client.close();
    await server.kill();
  });

  it("lets a partitioned Worker notice and the server give its job back", TIMEOUT, async () => {
    const proxy = new PartitionProxy(server.port);
    const via = await proxy.start();
    let started = false;
    const worker = new Worker(via, { keepaliveMs: 1_000, keepaliveTimeoutMs: 1_000 });
    worker.handle("ka", async () => {
      started = true;
      await new Promise(() => undefined); // runs until the worker is stopped
    });
    const done = worker.run({ handleSignals: false });
    try {
      await worker.waitConnected(10_000);
      const job = await client.submit("ka", "x");
      await eventually(() => started, "the job to start");
      proxy.partition();
      await eventually(
        async () => {
          const queue = await client.getQueue("ka");
          const back = await client.get(job.id);
          return !worker.connected && queue.workerCount === 0 && back.state === JobState.PENDING;
        },
        "both sides to notice the dead connection",
        15_000,
      );
    } finally {
      worker.stop({ force: true });
      await done.catch(() => undefined);
      proxy.close();
    }
  });
});
