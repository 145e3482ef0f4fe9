/**
 * Running one delivered job: the handler, then the outcome the server expects.
 *
 * Kept apart from the stream protocol (session.ts) because nothing here depends on gRPC: it is
 * the user-code boundary, and its rules are what a handler author needs:
 *
 * - the handler's return value becomes the output (a string as UTF-8, `undefined`/`null` as
 *   empty bytes);
 * - a thrown error becomes a {@link JobError} coded with the error's class name, retryable
 *   unless it is a {@link PermanentError};
 * - a thrown {@link ThrottledError} becomes a throttle signal: the job goes back and the server
 *   holds the queue (or the job's fairness key); hooks see it as an error coded "Throttled";
 * - a job whose signal was aborted (the server cancelled it) is answered with
 *   {@link CANCELLED_ERROR} once the handler settles, whatever it returned: the work may still
 *   be running until then, so the job keeps its width slot on the server until it really ends.
 */

import { PermanentError, RetryableError, type ThrottleScopeName, ThrottledError } from "./errors";
import * as pb from "./gen/dispatchd/v1/dispatcher";
import { type JobError, type ReceivedJob, toDuration } from "./types";

/** What a handler may return. */
export type Output = Uint8Array | string | null | undefined | void;
/** A job handler: takes the delivered job (with its AbortSignal), returns the output. */
export type Handler = (job: ReceivedJob) => Output | Promise<Output>;
/** A throttle signal's hold: how long, and of what. */
export interface ThrottleSignal {
  retryAfterMs: number;
  scope: ThrottleScopeName;
  reason: string;
}
/**
 * What a finished job reports: output bytes on success, an error otherwise. A throttle signal
 * is an error (code "Throttled") that also carries `throttled`, so hooks written for outputs
 * and errors keep working.
 */
export type Outcome = { output: Buffer } | { error: JobError; throttled?: ThrottleSignal };

/**
 * The answer for a job the server cancelled. Not retryable: the server already decided the job
 * is over; the answer only frees the worker's slot on the server.
 */
export const CANCELLED_ERROR: JobError = { message: "cancelled", retryable: false, code: "Cancelled" };

/** The bytes to report for a handler's return value. */
export function toOutput(value: unknown): Buffer {
  if (value === undefined || value === null) {
    return Buffer.alloc(0);
  }
  if (typeof value === "string") {
    return Buffer.from(value, "utf8");
  }
  if (value instanceof Uint8Array) {
    return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  }
  throw new TypeError(`handler returned ${typeof value}; expected a Uint8Array, a string or nothing`);
}

/** The JobError for something a handler threw. */
/**
 * The server keeps at most this much of an error message (and cuts the rest): cutting here too
 * keeps a huge exception text from making a result message the server refuses.
 */
export const MAX_ERROR_MESSAGE_BYTES = 4096;

function capped(message: string): string {
  const data = Buffer.from(message);
  if (data.length <= MAX_ERROR_MESSAGE_BYTES) {
    return message;
  }
  // Decoding a cut UTF-8 sequence yields U+FFFD at the end at worst: drop it.
  const kept = data
    .subarray(0, MAX_ERROR_MESSAGE_BYTES - 40)
    .toString()
    .replace(/\uFFFD+$/, "");
  return `${kept} [cut: ${data.length} bytes in all]`;
}

export function errorFromThrown(e: unknown): JobError {
  if (e instanceof Error) {
    // The class name, like the Python worker's type(e).__name__; `name` is often just "Error".
    const code = e.constructor?.name && e.constructor.name !== "Error" ? e.constructor.name : e.name;
    return { message: capped(e.message), retryable: !(e instanceof PermanentError), code };
  }
  return { message: capped(String(e)), retryable: true, code: typeof e };
}

export interface RunLogger {
  warn(message: string): void;
  info(message: string): void;
}

/**
 * Run `job` through `handler` and return its outcome; never throws. `maxResultBytes` (0: no
 * limit) fails an oversized output here, with a reason a person can act on, instead of letting
 * the server reject it and the job sit until its lease runs out.
 */
export async function runJob(
  handler: Handler | undefined,
  job: ReceivedJob,
  maxResultBytes: number,
  log: RunLogger,
): Promise<Outcome> {
  if (handler === undefined) {
    // The server only delivers queues named in hello, so this is a server bug; let another
    // worker (or a fixed server) try again.
    return {
      error: { message: `no handler for queue ${JSON.stringify(job.queue)}`, retryable: true, code: "NoHandler" },
    };
  }
  if (job.signal.aborted) {
    return { error: CANCELLED_ERROR };
  }
  let output: Buffer;
  try {
    output = toOutput(await handler(job));
  } catch (e) {
    if (job.signal.aborted) {
      return { error: CANCELLED_ERROR };
    }
    if (e instanceof ThrottledError) {
      log.info(`job ${job.id} (queue ${job.queue}) throttled: ${e.message}`);
      const throttled = { retryAfterMs: e.retryAfterMs, scope: e.scope, reason: e.reason };
      return { error: { message: e.message, retryable: true, code: "Throttled" }, throttled };
    }
    const error = errorFromThrown(e);
    if (e instanceof RetryableError) {
      log.warn(`job ${job.id} (queue ${job.queue}) failed, to retry: ${error.message}`);
    } else if (error.retryable) {
      log.warn(`job ${job.id} (queue ${job.queue}) failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    } else {
      log.info(`job ${job.id} (queue ${job.queue}) failed permanently: ${error.message}`);
    }
    return { error };
  }
  if (job.signal.aborted) {
    return { error: CANCELLED_ERROR };
  }
  if (maxResultBytes > 0 && output.length > maxResultBytes) {
    return {
      error: {
        message: `result is ${output.length} bytes; the server accepts at most ${maxResultBytes}`,
        retryable: false,
        code: "ResultTooLarge",
      },
    };
  }
  return { output };
}

/** The wire form of a throttle signal (JobResult.throttled). */
export function throttleToProto(t: ThrottleSignal): pb.Throttled {
  const ms = Number.isFinite(t.retryAfterMs) ? Math.max(0, t.retryAfterMs) : 0;
  return {
    retryAfter: toDuration(ms),
    scope:
      t.scope === "fairnessKey" ? pb.ThrottleScope.THROTTLE_SCOPE_FAIRNESS_KEY : pb.ThrottleScope.THROTTLE_SCOPE_QUEUE,
    reason: t.reason.slice(0, 1024),
  };
}
