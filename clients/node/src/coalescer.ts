/**
 * Coalescing concurrent `Client.submit()` calls into SubmitBatch round trips.
 *
 * Calls made in the same turn of the event loop (everything that runs before the next
 * `setImmediate`, microtasks included), or within `windowMs` of the first, travel together in
 * one SubmitBatch, the way ioredis pipelines commands; each caller still gets its own job or
 * its own error. A batch of one goes out as a plain Submit, so a lone caller sees no difference.
 *
 * SubmitBatch is all-or-nothing on the server, so a refused batch admitted nothing and may be
 * resent safely; the coalescer isolates the culprit instead of failing its neighbours, reading
 * the refusal's error details (never its message):
 *
 * - a refusal whose field violation names `jobs[i]` (validation, payload cap) sends `jobs[:i]` again as a batch,
 *   `jobs[i]` alone as a plain Submit (its caller gets the exact error a lone submit would),
 *   then the rest by the same rule -- in that order, so equal priorities keep call order;
 * - a refusal that depends on the jobs but names none (a queue's maxPending, a message over
 *   gRPC's size cap) resends every job alone, in call order;
 * - errors that say nothing about the jobs (UNAVAILABLE, DEADLINE_EXCEEDED, auth, ...) reject
 *   every caller of the batch and are never retried: the batch may have been admitted, and a
 *   resend could enqueue the jobs twice (use idempotency keys to resubmit safely).
 *
 * The Python clients follow the same rules (dispatchd_client/_batching.py).
 */

import { status as Status } from "@grpc/grpc-js";
import { DispatchdError, errorFor } from "./errors";
import type * as pb from "./gen/dispatchd/v1/dispatcher";
import type { SubmittedJob } from "./types";

/** Jobs per SubmitBatch: beyond a thousand the round trip is amortized (the server takes 10,000). */
export const MAX_BATCH_JOBS = 1000;
/** Payload bytes per SubmitBatch, well under the 64 MiB message cap. */
export const MAX_BATCH_BYTES = 16 * 1024 * 1024;
/** Refusals that depend on the jobs themselves: resending the others can succeed. */
const PER_JOB_CODES: ReadonlySet<Status> = new Set([
  Status.INVALID_ARGUMENT,
  Status.RESOURCE_EXHAUSTED,
  Status.FAILED_PRECONDITION,
  Status.NOT_FOUND,
  Status.OUT_OF_RANGE,
]);
const JOB_FIELD = /^jobs\[(\d+)\]/;
/** {@link culprit}'s answer for a refusal that depends on the jobs but names none. */
export const ONE_BY_ONE = -1;

export type SendOne = (spec: pb.JobSpec) => Promise<SubmittedJob>;
export type SendBatch = (specs: pb.JobSpec[]) => Promise<SubmittedJob[]>;

interface Pending {
  spec: pb.JobSpec;
  resolve: (job: SubmittedJob) => void;
  reject: (error: unknown) => void;
}

export class Coalescer {
  private queued: Pending[] = [];
  private queuedBytes = 0;
  private cancelFlush: (() => void) | undefined;
  private readonly sending = new Set<Promise<void>>();

  constructor(
    private readonly sendOne: SendOne,
    private readonly sendBatch: SendBatch,
    private readonly windowMs: number,
  ) {
    if (!(windowMs >= 0)) {
      throw new RangeError("coalesceWindowMs must be >= 0");
    }
  }

  /** Queue one job; the promise settles with its own outcome. */
  submit(spec: pb.JobSpec): Promise<SubmittedJob> {
    return new Promise((resolve, reject) => {
      const size = spec.payload.length;
      if (this.queued.length > 0 && this.queuedBytes + size > MAX_BATCH_BYTES) {
        this.flush();
      }
      this.queued.push({ spec, resolve, reject });
      this.queuedBytes += size;
      if (this.queued.length >= MAX_BATCH_JOBS) {
        this.flush();
      } else if (this.cancelFlush === undefined) {
        this.scheduleFlush();
      }
    });
  }

  /** Send what is queued now, as one batch. */
  flush(): void {
    this.cancelFlush?.();
    this.cancelFlush = undefined;
    const items = this.queued;
    this.queued = [];
    this.queuedBytes = 0;
    if (items.length > 0) {
      const sent = this.send(items);
      this.sending.add(sent);
      void sent.finally(() => this.sending.delete(sent));
    }
  }

  /** Send what is queued and wait until every batch in flight has settled its callers. */
  async settle(): Promise<void> {
    this.flush();
    while (this.sending.size > 0) {
      await Promise.allSettled([...this.sending]);
    }
  }

  private scheduleFlush(): void {
    // setImmediate runs after the microtasks of this turn: every caller resumed by the same
    // answer (a batch resolves many promises at once) has queued its next job by then.
    if (this.windowMs > 0) {
      const timer = setTimeout(() => this.flush(), this.windowMs);
      this.cancelFlush = () => clearTimeout(timer);
    } else {
      const immediate = setImmediate(() => this.flush());
      this.cancelFlush = () => clearImmediate(immediate);
    }
  }

  /** Settle every item; never rejects (each error lands on its callers). */
  private async send(items: Pending[]): Promise<void> {
    if (items.length === 0) {
      return;
    }
    if (items.length === 1) {
      await this.sendAlone(items[0]!);
      return;
    }
    let jobs: SubmittedJob[];
    try {
      jobs = await this.sendBatch(items.map((p) => p.spec));
    } catch (e) {
      await this.afterRefusal(items, e);
      return;
    }
    if (jobs.length !== items.length) {
      fail(items, errorFor(Status.INTERNAL, `SubmitBatch answered ${jobs.length} jobs for ${items.length}`));
      return;
    }
    items.forEach((p, i) => p.resolve(jobs[i]!));
  }

  private async afterRefusal(items: Pending[], error: unknown): Promise<void> {
    const index = culprit(error, items.length);
    if (index === undefined) {
      fail(items, error);
    } else if (index === ONE_BY_ONE) {
      for (const p of items) {
        await this.sendAlone(p);
      }
    } else {
      await this.send(items.slice(0, index));
      await this.sendAlone(items[index]!);
      await this.send(items.slice(index + 1));
    }
  }

  private async sendAlone(p: Pending): Promise<void> {
    try {
      p.resolve(await this.sendOne(p.spec));
    } catch (e) {
      p.reject(e);
    }
  }
}

/**
 * How to settle a batch of `size` jobs refused with `error`: the index of the job it names,
 * ONE_BY_ONE to resend every job alone, or undefined to reject every caller.
 */
export function culprit(error: unknown, size: number): number | undefined {
  if (!(error instanceof DispatchdError) || !PER_JOB_CODES.has(error.code)) {
    return undefined;
  }
  for (const { field } of error.fieldViolations) {
    const match = JOB_FIELD.exec(field);
    if (match) {
      const index = Number(match[1]);
      return index >= 0 && index < size ? index : ONE_BY_ONE;
    }
  }
  return ONE_BY_ONE;
}

/** Each caller gets its own error object, so stack traces do not pile up on one. */
function fail(items: Pending[], error: unknown): void {
  for (const p of items) {
    if (items.length > 1 && error instanceof DispatchdError) {
      p.reject(errorFor(error.code, error.details, error.metadata, error.cause));
    } else {
      p.reject(error);
    }
  }
}
