/**
 * The Client coalesces concurrent submit() calls into SubmitBatch round trips, against a real
 * dispatchd subprocess: RPCs are counted from its real /metrics endpoint, and every caller
 * still gets its own job or its own error.
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  Client,
  DispatchdError,
  InvalidArgumentError,
  ResourceExhaustedError,
  type SubmittedJob,
  UnavailableError,
  status,
} from "../src";
import { DispatchdProcess } from "./server";

const TIMEOUT = { timeout: 30_000 };
const PAYLOAD_CAP = 1024;
const SERVICE = "dispatchd.v1.DispatcherService";

type Outcome = SubmittedJob | Error;

function settle(promises: Promise<SubmittedJob>[]): Promise<Outcome[]> {
  return Promise.all(promises.map((p) => p.catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))))));
}

function isJob(o: Outcome): o is SubmittedJob {
  return !(o instanceof Error);
}

describe("Client submit coalescing", () => {
  let server: DispatchdProcess;
  let client: Client;

  /** Calls of `method` the server has answered with `code` so far. */
  async function calls(method: string, code = "OK"): Promise<number> {
    const line = `dispatchd_grpc_requests_total{service="${SERVICE}",method="${method}",code="${code}"} `;
    const found = (await server.scrape()).split("\n").find((l) => l.startsWith(line));
    return found === undefined ? 0 : Number(found.slice(line.length));
  }

  /** OK Submit and SubmitBatch calls the server has answered so far. */
  async function rpcs(): Promise<{ submit: number; batch: number }> {
    return { submit: await calls("Submit"), batch: await calls("SubmitBatch") };
  }

  /** Asserts that `body` had the server refuse a SubmitBatch with `code`: the jobs did share one. */
  async function refusesABatch<T>(code: string, body: () => Promise<T>): Promise<T> {
    const before = await calls("SubmitBatch", code);
    const result = await body();
    assert.ok((await calls("SubmitBatch", code)) > before, `no SubmitBatch was refused with ${code}`);
    return result;
  }

  /** The RPCs `body` caused, counted on the server. */
  async function counted(body: () => Promise<void>): Promise<{ submit: number; batch: number }> {
    const before = await rpcs();
    await body();
    const after = await rpcs();
    return { submit: after.submit - before.submit, batch: after.batch - before.batch };
  }

  before(async () => {
    server = await DispatchdProcess.start({
      args: ["--metrics-listen", "127.0.0.1:0", "--max-payload-bytes", String(PAYLOAD_CAP)],
    });
    client = new Client(server.target);
  });

  after(async () => {
    client?.close();
    await server?.kill();
  });

  it("sends submits of one tick as one SubmitBatch, each caller its own job", TIMEOUT, async () => {
    let jobs: SubmittedJob[] = [];
    const rpc = await counted(async () => {
      jobs = await Promise.all(Array.from({ length: 200 }, (_, i) => client.submit("co.tick", `${i}`)));
    });
    assert.deepEqual(rpc, { submit: 0, batch: 1 });
    assert.equal(new Set(jobs.map((j) => j.id)).size, 200);
    for (const i of [0, 99, 199]) {
      assert.equal((await client.get(jobs[i]!.id)).payload.toString(), `${i}`);
    }
  });

  it("shares round trips between producers that submit one job at a time", TIMEOUT, async () => {
    const producers = 50;
    const each = 20;
    const rpc = await counted(async () => {
      await Promise.all(
        Array.from({ length: producers }, async () => {
          for (let i = 0; i < each; i++) {
            await client.submit("co.producers", "x");
          }
        }),
      );
    });
    // One Submit per call would be 1,000 round trips; every answer wakes the whole batch.
    assert.ok(rpc.batch >= 1);
    assert.ok(rpc.submit + rpc.batch <= (producers * each) / 10, JSON.stringify(rpc));
  });

  it("can be turned off", TIMEOUT, async () => {
    const plain = new Client(server.target, { coalesce: false });
    try {
      const rpc = await counted(async () => {
        await Promise.all(Array.from({ length: 20 }, () => plain.submit("co.off", "x")));
      });
      assert.deepEqual(rpc, { submit: 20, batch: 0 });
    } finally {
      plain.close();
    }
  });

  it("gathers calls from later ticks within the window", TIMEOUT, async () => {
    const windowed = new Client(server.target, { coalesceWindowMs: 500 });
    try {
      const rpc = await counted(async () => {
        const first = windowed.submit("co.window", "first");
        await new Promise((resolve) => setImmediate(resolve)); // a later turn of the loop
        const later = Array.from({ length: 9 }, (_, i) => windowed.submit("co.window", `${i}`));
        const jobs = await Promise.all([first, ...later]);
        assert.equal(new Set(jobs.map((j) => j.id)).size, 10);
      });
      assert.deepEqual(rpc, { submit: 0, batch: 1 });
    } finally {
      windowed.close();
    }
  });

  it("sends a submit with its own call options alone", TIMEOUT, async () => {
    const rpc = await counted(async () => {
      await Promise.all(Array.from({ length: 3 }, () => client.submit("co.own", "x", {}, { timeoutMs: 10_000 })));
    });
    assert.deepEqual(rpc, { submit: 3, batch: 0 });
  });

  it("passes the duplicate flag to its own caller", TIMEOUT, async () => {
    const first = await client.submit("co.dup", "a", { idempotencyKey: "k" });
    const [again, other] = await Promise.all([
      client.submit("co.dup", "a", { idempotencyKey: "k" }),
      client.submit("co.dup", "b"),
    ]);
    assert.equal(again.duplicate, true);
    assert.equal(again.id, first.id);
    assert.equal(other.duplicate, false);
  });

  it("fails only the caller of an invalid job", TIMEOUT, async () => {
    const outcomes = await refusesABatch("INVALID_ARGUMENT", () => {
      const good = Array.from({ length: 10 }, (_, i) => client.submit("co.bad", `${i}`));
      return settle([...good.slice(0, 5), client.submit("bad queue!", "x"), ...good.slice(5)]);
    });
    const [bad] = outcomes.splice(5, 1);
    assert.ok(bad instanceof InvalidArgumentError);
    assert.ok(!bad.details.includes("jobs["), "the error a lone submit gets, not the batch's");
    assert.ok(outcomes.every(isJob));
    assert.equal(new Set(outcomes.filter(isJob).map((j) => j.id)).size, 10);
  });

  it("fails only the caller of an oversized payload, keeping call order", TIMEOUT, async () => {
    await client.updateQueue("co.big", { paused: true }, { create: true });
    const payloads = ["a", "b", "x".repeat(PAYLOAD_CAP + 1), "c", "d"];
    const outcomes = await refusesABatch("RESOURCE_EXHAUSTED", () =>
      settle(payloads.map((p) => client.submit("co.big", p))),
    );
    const big = outcomes[2];
    assert.ok(big instanceof ResourceExhaustedError);
    assert.match(big.details, /--max-payload-bytes/);
    assert.deepEqual(
      outcomes.map((o) => isJob(o)),
      [true, true, false, true, true],
    );
    const listed = [];
    for await (const job of client.listJobs("co.big")) {
      listed.push(job.payload.toString());
    }
    assert.deepEqual(listed, ["a", "b", "c", "d"]);
  });

  it("settles a refusal naming no job one by one, in call order", TIMEOUT, async () => {
    await client.updateQueue("co.full", { maxPending: 3 }, { create: true });
    const outcomes = await refusesABatch("RESOURCE_EXHAUSTED", () =>
      settle(Array.from({ length: 5 }, (_, i) => client.submit("co.full", `${i}`))),
    );
    assert.deepEqual(
      outcomes.map((o) => isJob(o)),
      [true, true, true, false, false],
    );
    assert.ok(outcomes.slice(3).every((o) => o instanceof ResourceExhaustedError));
  });
});

describe("Client submit coalescing without a server", () => {
  it("rejects every caller of the batch, each with its own error", TIMEOUT, async () => {
    const gone = await DispatchdProcess.start();
    const target = gone.target;
    await gone.kill();
    const client = new Client(target);
    try {
      const outcomes = await settle(Array.from({ length: 3 }, () => client.submit("q", "x")));
      assert.ok(outcomes.every((o) => o instanceof UnavailableError));
      assert.ok(outcomes.every((o) => o instanceof DispatchdError && o.code === status.UNAVAILABLE));
      assert.equal(new Set(outcomes).size, 3);
    } finally {
      client.close();
    }
  });
});
