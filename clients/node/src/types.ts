/**
 * Plain values for what the dispatchd API returns, and their conversions from the wire.
 *
 * The generated message types are faithful to proto3 and so awkward in application code:
 * durations are `{seconds, nanos}`, enums are open numbers. These types are what the client
 * and the worker hand out instead: `undefined` for "not set", `Date` for times, milliseconds
 * (named `...Ms`) for durations, and a {@link JobState} that tolerates states added to the proto
 * after this library was built.
 */

import type { Duration } from "./gen/google/protobuf/duration";
import * as pb from "./gen/dispatchd/v1/dispatcher";

/** Where a job is in its life; values equal the proto `JobState` numbers. */
export enum JobState {
  UNSPECIFIED = 0,
  PENDING = 1,
  UNDERWAY = 2,
  SUCCEEDED = 3,
  FAILED = 4,
  CANCELLED = 5,
  SCHEDULED = 6,
  EXPIRED = 7,
  DEAD = 8,
  /** Waiting for its parent jobs to succeed (docs/workflows.md). */
  WAITING = 9,
}

const FINISHED: ReadonlySet<JobState> = new Set([
  JobState.SUCCEEDED,
  JobState.FAILED,
  JobState.CANCELLED,
  JobState.EXPIRED,
  JobState.DEAD,
]);

/** True once the job can no longer change by itself (only RetryJob revives it). */
export function isFinished(state: JobState): boolean {
  return FINISHED.has(state);
}

/** A state from the wire; one this library does not know reads as UNSPECIFIED. */
export function toJobState(value: number): JobState {
  return value in JobState ? (value as JobState) : JobState.UNSPECIFIED;
}

/** A failure reported by a worker: `retryable` asks for another attempt. */
export interface JobError {
  message: string;
  retryable: boolean;
  /** A short machine-readable code chosen by the worker (e.g. the error class name). */
  code: string;
}

/** A token bucket: `perSecond` tokens a second, at most `burst` saved up (0: automatic). */
export interface Rate {
  perSecond: number;
  burst?: number;
}

/** When a failed attempt runs again; see `RetryPolicy` in dispatcher.proto. */
export interface RetryPolicy {
  /** Total attempts including the first (1-1000); 1 means no retry. */
  maxAttempts: number;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** At least 1; 0 means 2. */
  multiplier?: number;
  /** Fraction 0-1 of the backoff, applied as +/- a uniform random share. */
  jitter?: number;
}

/** Bounds on each fairness key of a queue (0: no bound). */
export interface KeyLimits {
  maxInFlightPerKey?: number;
  perKeyRate?: number;
  perKeyBurst?: number;
  /** Quotas per fairness key over several windows (`used` is not reported per key). */
  perKeyWindows?: RateWindow[];
}

/** One delivery of a job and how it ended. */
export interface Attempt {
  number: number;
  workerId: string;
  dispatchTime?: Date;
  finishTime?: Date;
  error?: JobError;
}

/** A submitted job as the server knows it, at the moment of the call that returned it. */
export interface Job {
  /** Server-made, sortable by submit time (ULID). */
  id: string;
  queue: string;
  payload: Buffer;
  /** Higher runs first; FIFO among equal priorities. */
  priority: number;
  state: JobState;
  /** String headers as submitted; `traceparent` carries trace context. */
  headers: Record<string, string>;
  /** Number of deliveries so far: 0 before the first dispatch, 1 during the first run. */
  attempt: number;
  contentType: string;
  submitTime?: Date;
  /** Time of the latest dispatch. */
  dispatchTime?: Date;
  firstDispatchTime?: Date;
  finishTime?: Date;
  leaseExpireTime?: Date;
  notBefore?: Date;
  expireTime?: Date;
  /** Output of a succeeded job. */
  result: Buffer;
  /** Error of a failed job. */
  error?: JobError;
  /** Worker holding (or that last held) the job's lease. */
  workerId: string;
  orderingKey: string;
  fairnessKey: string;
  idempotencyKey: string;
  /** Every delivery so far, oldest first (servers that keep them). */
  attempts: Attempt[];
  /** The retry policy that applies; undefined: none. */
  retryPolicy?: RetryPolicy;
  /** The batch it belongs to ("" none), its parents, whether it runs after a failed one. */
  batchId: string;
  parentIds: string[];
  runAfterFailedParents: boolean;
  /** The latest progress its worker reported. */
  progress?: JobProgress;
  /** Why the server cancelled it (a parent that did not succeed, CancelBatch), if it did. */
  cancelReason: string;
  /** Deliveries answered with a throttle signal (not counted in `attempt`). */
  throttleCount: number;
}

/** What a worker last reported about a job (docs/workflows.md). */
export interface JobProgress {
  /** 0-100; undefined when the report had no number. */
  percent?: number;
  message: string;
  reportTime?: Date;
}

/** A batch's jobs by where they are. */
export interface BatchCounts {
  total: number;
  /** Not final yet: waiting, pending, scheduled or underway. */
  active: number;
  succeeded: number;
  failed: number;
  cancelled: number;
  expired: number;
  dead: number;
}

/** A batch of one queue's jobs followed as one (docs/workflows.md). */
export interface Batch {
  queue: string;
  batchId: string;
  description: string;
  /** Takes no new jobs; its callbacks fire once every job is final. */
  closed: boolean;
  /** Closed and every job final (the callbacks, if any, are submitted). */
  complete: boolean;
  counts: BatchCounts;
  onSuccessJobId: string;
  onCompleteJobId: string;
  createTime?: Date;
  completeTime?: Date;
}

export function batchFromProto(b: pb.Batch | undefined): Batch {
  if (b === undefined) {
    throw new TypeError("the server answered without a batch");
  }
  const c = b.counts;
  return {
    queue: b.queue,
    batchId: b.batchId,
    description: b.description,
    closed: b.closed,
    complete: b.complete,
    counts: {
      total: Number(c?.total ?? 0),
      active: Number(c?.active ?? 0),
      succeeded: Number(c?.succeeded ?? 0),
      failed: Number(c?.failed ?? 0),
      cancelled: Number(c?.cancelled ?? 0),
      expired: Number(c?.expired ?? 0),
      dead: Number(c?.dead ?? 0),
    },
    onSuccessJobId: b.onSuccessJobId,
    onCompleteJobId: b.onCompleteJobId,
    createTime: b.createTime,
    completeTime: b.completeTime,
  };
}

/** A job returned by submit: `duplicate` when an earlier job had the same idempotency key. */
export interface SubmittedJob extends Job {
  duplicate: boolean;
}

/** A job delivered to a worker: the {@link Job} plus its lease and its cancellation signal. */
export interface ReceivedJob extends Job {
  /** Identifies this delivery; results carrying an older lease id are ignored by the server. */
  leaseId: string;
  /**
   * Aborted when the server cancels the job, or when the worker gives it up (stream lost,
   * forced stop). Pass it to whatever the handler awaits (`fetch`, timers, child processes).
   */
  signal: AbortSignal;
  /**
   * Tells the server how far the job is (0-100 and/or a short message of at most 1,000
   * characters); shown as `Job.progress`. The worker sends the latest report per job at most
   * every 250 ms, so call it as often as is convenient.
   */
  reportProgress(percent?: number, message?: string): void;
}

/** One queue's settings and counts. */
export interface Queue {
  name: string;
  /** Max jobs underway at once across all workers; 0 dispatches nothing. */
  width: number;
  paused: boolean;
  pendingCount: number;
  /** Leases held, including cancelled jobs whose worker has not answered yet. */
  underwayCount: number;
  /** How long a delivery's lease lasts without a heartbeat. */
  leaseDurationMs: number;
  /** Workers connected that serve this queue. */
  workerCount: number;
  /** Dispatch rate limit; undefined: unlimited. */
  rate?: Rate;
  retryPolicy?: RetryPolicy;
  keyLimits?: KeyLimits;
  /** Most pending + scheduled jobs; 0: no bound. */
  maxPending: number;
  scheduledCount: number;
  dedupWindowMs: number;
  slotCount: number;
  /** While a throttle signal holds the whole queue: when the hold ends. */
  throttledUntil?: Date;
  /** Why the queue is held, while it is. */
  throttleReason: string;
  /** Throttle signals one job may answer with before one counts as a failed attempt. */
  maxThrottleBounces: number;
  /** Fairness keys a key-scoped throttle signal holds now. */
  throttledKeyCount: number;
  adaptive?: AdaptiveRate;
  /** The rate in force now (below `rate` after throttle signals when adaptive); 0: none. */
  effectiveRate: number;
  /** Quotas over several windows, each with what its current window used. */
  windows: RateWindow[];
}

/**
 * AIMD of a queue's rate on throttle signals: each signal multiplies the effective rate by
 * `decrease` (0.5), not below `floor`; each `quietIntervalMs` (1 s) without one adds
 * `increase` per second (5 % of the configured rate), never above the configured rate.
 */
export interface AdaptiveRate {
  floor: number;
  decrease?: number;
  increase?: number;
  quietIntervalMs?: number;
}

/**
 * A quota: at most `limit` dispatches in each window of `periodMs` (windows fixed and aligned
 * to the epoch: a day's starts at 00:00 UTC). `used` and `windowStart` come on answers.
 */
export interface RateWindow {
  limit: number;
  periodMs: number;
  used?: number;
  windowStart?: Date;
}

export function windowToProto(w: RateWindow): pb.RateWindow {
  return { limit: w.limit, period: toDuration(w.periodMs), used: 0, windowStart: undefined };
}

export function adaptiveToProto(a: AdaptiveRate): pb.AdaptiveRate {
  return {
    floor: a.floor,
    decrease: a.decrease ?? 0,
    increase: a.increase ?? 0,
    quietInterval: a.quietIntervalMs === undefined ? undefined : toDuration(a.quietIntervalMs),
  };
}

/** One unit of a queue's width held outside the worker stream (AcquireSlot). */
export interface Slot {
  slotId: string;
  queue: string;
  holder: string;
  expireTime?: Date;
}

export function toMs(d: Duration | undefined): number {
  return d === undefined ? 0 : d.seconds * 1000 + d.nanos / 1e6;
}

/** A Duration of `ms` milliseconds (seconds and nanos share the sign, as proto requires). */
export function toDuration(ms: number): Duration {
  if (!Number.isFinite(ms)) {
    throw new RangeError(`duration must be a finite number of milliseconds, not ${ms}`);
  }
  const seconds = Math.trunc(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

export function jobErrorFromProto(e: pb.JobError): JobError {
  return { message: e.message, retryable: e.retryable, code: e.code };
}

export function retryPolicyFromProto(p: pb.RetryPolicy): RetryPolicy {
  return {
    maxAttempts: p.maxAttempts,
    minBackoffMs: toMs(p.minBackoff),
    maxBackoffMs: toMs(p.maxBackoff),
    multiplier: p.multiplier,
    jitter: p.jitter,
  };
}

export function retryPolicyToProto(p: RetryPolicy): pb.RetryPolicy {
  return {
    maxAttempts: p.maxAttempts,
    minBackoff: p.minBackoffMs === undefined ? undefined : toDuration(p.minBackoffMs),
    maxBackoff: p.maxBackoffMs === undefined ? undefined : toDuration(p.maxBackoffMs),
    multiplier: p.multiplier ?? 0,
    jitter: p.jitter ?? 0,
  };
}

function attemptFromProto(a: pb.Attempt): Attempt {
  return {
    number: a.number,
    workerId: a.workerId,
    dispatchTime: a.dispatchTime,
    finishTime: a.finishTime,
    error: a.error && jobErrorFromProto(a.error),
  };
}

export function jobFromProto(j: pb.Job | undefined): Job {
  if (j === undefined) {
    throw new TypeError("the server answered without a job");
  }
  return {
    id: j.id,
    queue: j.queue,
    payload: j.payload,
    priority: j.priority,
    state: toJobState(j.state),
    headers: { ...j.headers },
    attempt: j.attempt,
    contentType: j.contentType,
    submitTime: j.submitTime,
    dispatchTime: j.dispatchTime,
    firstDispatchTime: j.firstDispatchTime,
    finishTime: j.finishTime,
    leaseExpireTime: j.leaseExpireTime,
    notBefore: j.notBefore,
    expireTime: j.expireTime,
    result: j.result,
    error: j.error && jobErrorFromProto(j.error),
    workerId: j.workerId,
    orderingKey: j.orderingKey,
    fairnessKey: j.fairnessKey,
    idempotencyKey: j.idempotencyKey,
    attempts: j.attempts.map(attemptFromProto),
    retryPolicy: j.retryPolicy && retryPolicyFromProto(j.retryPolicy),
    batchId: j.batchId,
    parentIds: [...j.parentIds],
    runAfterFailedParents: j.runAfterFailedParents,
    progress: j.progress && {
      percent: j.progress.percent,
      message: j.progress.message,
      reportTime: j.progress.reportTime,
    },
    cancelReason: j.cancelReason,
    throttleCount: j.throttleCount,
  };
}

/** The job of a delivery; the delivery's own lease expiry wins over the embedded job's. */
export function receivedJobFromDelivery(
  d: pb.Delivery,
  signal: AbortSignal,
  progress: (jobId: string, leaseId: string, percent: number | undefined, message: string) => void = () => {},
): ReceivedJob {
  const job = jobFromProto(d.job);
  return {
    ...job,
    leaseExpireTime: d.leaseExpireTime ?? job.leaseExpireTime,
    leaseId: d.leaseId,
    signal,
    reportProgress(percent?: number, message = ""): void {
      if (percent !== undefined && !(Number.isInteger(percent) && percent >= 0 && percent <= 100)) {
        throw new RangeError(`percent must be an integer 0-100, got ${percent}`);
      }
      if (message.length > 1000) {
        throw new RangeError("progress message is limited to 1,000 characters");
      }
      progress(d.job?.id ?? "", d.leaseId, percent, message);
    },
  };
}

export function queueFromProto(q: pb.Queue | undefined): Queue {
  if (q === undefined) {
    throw new TypeError("the server answered without a queue");
  }
  return {
    name: q.name,
    width: q.width,
    paused: q.paused,
    pendingCount: q.pendingCount,
    underwayCount: q.underwayCount,
    leaseDurationMs: toMs(q.leaseDuration),
    workerCount: q.workerCount,
    rate: q.rate && { perSecond: q.rate.perSecond, burst: q.rate.burst },
    retryPolicy: q.retryPolicy && retryPolicyFromProto(q.retryPolicy),
    keyLimits: q.keyLimits && {
      maxInFlightPerKey: q.keyLimits.maxInFlightPerKey,
      perKeyRate: q.keyLimits.perKeyRate,
      perKeyBurst: q.keyLimits.perKeyBurst,
      perKeyWindows: q.keyLimits.perKeyWindows.map((w) => ({ limit: w.limit, periodMs: toMs(w.period) })),
    },
    maxPending: q.maxPending,
    scheduledCount: q.scheduledCount,
    dedupWindowMs: toMs(q.dedupWindow),
    slotCount: q.slotCount,
    throttledUntil: q.throttledUntil,
    throttleReason: q.throttleReason,
    maxThrottleBounces: q.maxThrottleBounces,
    throttledKeyCount: q.throttledKeyCount,
    adaptive: q.adaptive && {
      floor: q.adaptive.floor,
      decrease: q.adaptive.decrease,
      increase: q.adaptive.increase,
      quietIntervalMs: toMs(q.adaptive.quietInterval),
    },
    effectiveRate: q.effectiveRate,
    windows: q.windows.map((w) => ({
      limit: w.limit,
      periodMs: toMs(w.period),
      used: w.used,
      windowStart: w.windowStart,
    })),
  };
}

export function slotFromProto(s: pb.Slot | undefined): Slot {
  if (s === undefined) {
    throw new TypeError("the server answered without a slot");
  }
  return { slotId: s.slotId, queue: s.queue, holder: s.holder, expireTime: s.expireTime };
}
