/**
 * Refusals carry their facts as standard error details (grpc-status-details-bin), and the
 * client's errors expose them: reason, info, fieldViolations, retryDelayMs. The coalescer
 * finds the culprit of a refused batch by its field path, never by the message.
 */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Metadata } from "@grpc/grpc-js";
import { Client, DispatchdError, InvalidArgumentError, NotFoundError, ResourceExhaustedError, status } from "../src";
import { ONE_BY_ONE, culprit } from "../src/coalescer";
import { DETAILS_KEY, factsOf } from "../src/errors";
import { Any } from "../src/gen/google/protobuf/any";
import { BadRequest, ErrorInfo, RetryInfo } from "../src/gen/google/rpc/error_details";
import { Status as RpcStatus } from "../src/gen/google/rpc/status";
import { DispatchdProcess } from "./server";

const TIMEOUT = { timeout: 30_000 };

/** Trailing metadata as the server sends it. */
function trailer(code: status, fields: string[], reason = "INVALID_ARGUMENT", retrySeconds?: number): Metadata {
  const details: Any[] = [
    {
      typeUrl: "type.googleapis.com/google.rpc.ErrorInfo",
      value: Buffer.from(ErrorInfo.encode({ reason, domain: "dispatchd.dev", metadata: { queue: "q" } }).finish()),
    },
  ];
  if (fields.length > 0) {
    const bad = BadRequest.encode({
      fieldViolations: fields.map((field) => ({ field, description: "bad", reason: "", localizedMessage: undefined })),
    });
    details.push({ typeUrl: "type.googleapis.com/google.rpc.BadRequest", value: Buffer.from(bad.finish()) });
  }
  if (retrySeconds !== undefined) {
    const retry = RetryInfo.encode({ retryDelay: { seconds: retrySeconds, nanos: 0 } });
    details.push({ typeUrl: "type.googleapis.com/google.rpc.RetryInfo", value: Buffer.from(retry.finish()) });
  }
  const md = new Metadata();
  md.set(DETAILS_KEY, Buffer.from(RpcStatus.encode({ code, message: "bad", details }).finish()));
  return md;
}

describe("error details without a server", () => {
  it("decodes reason, info, field violations and the retry delay", () => {
    const facts = factsOf(trailer(status.RESOURCE_EXHAUSTED, [], "QUEUE_FULL", 1), status.RESOURCE_EXHAUSTED);
    assert.deepEqual(facts, { reason: "QUEUE_FULL", info: { queue: "q" }, fieldViolations: [], retryDelayMs: 1000 });
  });

  it("ignores details of another status, and bytes that do not decode", () => {
    assert.equal(factsOf(trailer(status.NOT_FOUND, []), status.UNAVAILABLE).reason, "");
    const junk = new Metadata();
    junk.set(DETAILS_KEY, Buffer.from([0xff, 0xff, 0xff]));
    assert.equal(factsOf(junk, status.INVALID_ARGUMENT).reason, "");
    assert.equal(factsOf(new Metadata(), status.INVALID_ARGUMENT).retryDelayMs, undefined);
  });

  it("finds the culprit by field path, not by message", () => {
    const named = new InvalidArgumentError(
      status.INVALID_ARGUMENT,
      "whatever",
      trailer(status.INVALID_ARGUMENT, ["jobs[2].payload"]),
    );
    assert.equal(culprit(named, 5), 2);
    const outside = new InvalidArgumentError(
      status.INVALID_ARGUMENT,
      "",
      trailer(status.INVALID_ARGUMENT, ["jobs[9].queue"]),
    );
    assert.equal(culprit(outside, 5), ONE_BY_ONE);
    const textOnly = new InvalidArgumentError(status.INVALID_ARGUMENT, "jobs[1]: queue name ...");
    assert.equal(culprit(textOnly, 5), ONE_BY_ONE);
    assert.equal(culprit(new DispatchdError(status.UNAVAILABLE, ""), 5), undefined);
  });
});

describe("error details from a real server", () => {
  let server: DispatchdProcess;
  let client: Client;

  before(async () => {
    server = await DispatchdProcess.start();
    client = new Client(server.target, { coalesce: false });
  });

  after(async () => {
    client?.close();
    await server?.kill();
  });

  it("names the bad job of a batch by its field path", TIMEOUT, async () => {
    const error = await client
      .submitBatch([
        { queue: "e.ok", payload: "a" },
        { queue: "bad queue!", payload: "b" },
      ])
      .catch((e: unknown) => e);
    assert.ok(error instanceof InvalidArgumentError);
    assert.equal(error.reason, "INVALID_ARGUMENT");
    assert.deepEqual(
      error.fieldViolations.map((v) => v.field),
      ["jobs[1].queue"],
    );
    assert.equal(error.retryDelayMs, undefined);
  });

  it("says QUEUE_FULL with a retry delay when max_pending is reached", TIMEOUT, async () => {
    await client.updateQueue("e.full", { maxPending: 1 }, { create: true });
    await client.submit("e.full", "1");
    const error = await client.submit("e.full", "2").catch((e: unknown) => e);
    assert.ok(error instanceof ResourceExhaustedError);
    assert.equal(error.reason, "QUEUE_FULL");
    assert.equal(error.retryDelayMs, 1000);
    assert.equal(error.info.queue, "e.full");
  });

  it("says JOB_NOT_FOUND for a job that never was", TIMEOUT, async () => {
    const job = await client.submit("e.nf", "x");
    const missing = (job.id.startsWith("0") ? "1" : "0") + job.id.slice(1);
    const error = await client.get(missing).catch((e: unknown) => e);
    assert.ok(error instanceof NotFoundError);
    assert.equal(error.reason, "JOB_NOT_FOUND");
    assert.deepEqual(error.info, { job_id: missing });
  });
});
