/**
 * The Worker follows WorkerSettings: a new heartbeat interval reschedules the pending beat
 * (shorter at once, longer after the next beat). The rule with numbers, then a Worker against
 * a scripted Work stream (a grpc-js server that only speaks the protocol, not dispatchd).
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { Worker, defaultLogger } from "../src";
import { DispatcherServiceService, type WorkRequest, WorkResponse } from "../src/gen/dispatchd/v1/dispatcher";
import { HeartbeatSchedule } from "../src/heartbeats";
import { eventually } from "./server";

const TIMEOUT = { timeout: 30_000 };

describe("HeartbeatSchedule", () => {
  it("beats at the interval", () => {
    const s = new HeartbeatSchedule(10_000, 100_000);
    assert.equal(s.dueMs, 110_000);
    s.beat(110_200);
    assert.equal(s.dueMs, 120_200);
  });

  it("moves the pending beat at once for a shorter interval", () => {
    const s = new HeartbeatSchedule(10_000, 100_000);
    assert.equal(s.change(400), true);
    assert.equal(s.dueMs, 100_400);
    s.beat(100_500);
    assert.equal(s.dueMs, 100_900);
  });

  it("applies a longer interval after the next beat", () => {
    const s = new HeartbeatSchedule(1_000, 100_000);
    assert.equal(s.change(5_000), false);
    assert.equal(s.dueMs, 101_000);
    s.beat(101_000);
    assert.equal(s.dueMs, 106_000);
  });
});

describe("Worker and WorkerSettings", () => {
  let server: grpc.Server;
  let target = "";
  const received: WorkRequest[] = [];
  let release: () => void = () => {};
  const released = new Promise<void>((resolve) => (release = resolve));

  function ms(n: number): { seconds: number; nanos: number } {
    return { seconds: Math.floor(n / 1000), nanos: (n % 1000) * 1e6 };
  }

  before(async () => {
    server = new grpc.Server();
    server.addService(DispatcherServiceService, {
      work: (call: grpc.ServerDuplexStream<WorkRequest, WorkResponse>) => {
        call.on("data", (req: WorkRequest) => {
          received.push(req);
          const kind = req.kind?.$case;
          if (kind === "hello") {
            call.write(
              WorkResponse.fromPartial({
                kind: { $case: "welcome", value: { workerId: "w", heartbeatInterval: ms(60_000), maxResultBytes: 0 } },
              }),
            );
            call.write(
              WorkResponse.fromPartial({
                kind: {
                  $case: "deliveries",
                  value: {
                    deliveries: [
                      {
                        job: { id: "held", queue: "q", payload: Buffer.alloc(0), attempt: 1 } as never,
                        leaseId: "l-held",
                        leaseExpireTime: undefined,
                      },
                    ],
                  },
                },
              }),
            );
            call.write(WorkResponse.fromPartial({ kind: { $case: "settings", value: { heartbeatInterval: ms(50) } } }));
          } else if (kind === "results") {
            call.write(WorkResponse.fromPartial({ kind: { $case: "drain", value: { deadline: undefined } } }));
          }
        });
        call.on("end", () => call.end());
      },
    } as never);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    target = `127.0.0.1:${port}`;
  });

  after(() => {
    server.forceShutdown();
  });

  it("heartbeats at the new interval at once", TIMEOUT, async () => {
    const worker = new Worker(target, { concurrency: 1, logger: { ...defaultLogger, info: () => {} } }).handle(
      "q",
      async () => {
        await released;
        return "done";
      },
    );
    const done = worker.run({ handleSignals: false });
    // The welcome asked for a beat a minute; three within the test's time come from the settings.
    await eventually(() => received.filter((r) => r.kind?.$case === "heartbeat").length >= 3, "three heartbeats");
    release();
    await done;
    const results = received.flatMap((r) => (r.kind?.$case === "results" ? r.kind.value.results : []));
    assert.deepEqual(
      results.map((r) => r.jobId),
      ["held"],
    );
  });
});
