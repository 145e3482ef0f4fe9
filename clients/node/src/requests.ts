/**
 * Building the request messages the client sends.
 *
 * Kept apart from {@link Client} so the choices about the wire (how a text payload is sent,
 * which update_mask paths a settings object names) live in one place and can be read without
 * the call machinery around them.
 */

import * as pb from "./gen/dispatchd/v1/dispatcher";
import {
  type AdaptiveRate,
  type JobState,
  type RateWindow,
  type KeyLimits,
  type Rate,
  type RetryPolicy,
  adaptiveToProto,
  retryPolicyToProto,
  windowToProto,
  toDuration,
} from "./types";

export const DEFAULT_TARGET = "127.0.0.1:50051";
export const TEXT_CONTENT_TYPE = "text/plain; charset=utf-8";
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
/** Big enough for the server's largest payloads and for 10,000-job batches. */
/**
 * Keepalive: while a call is open (a Work stream, a WaitJob), ping the server after 20 s of
 * quiet and give the connection up when no answer comes within 10 s, so a connection that
 * died without a word (a partition, a lost NAT entry) is noticed and the Worker reconnects.
 * The server accepts pings as often as once a second.
 */
export const KEEPALIVE_MS = 20_000;
export const KEEPALIVE_TIMEOUT_MS = 10_000;
export const CHANNEL_OPTIONS = {
  "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
  "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
  "grpc.keepalive_time_ms": KEEPALIVE_MS,
  "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
} as const;

/** A payload: bytes as they are, or text sent as UTF-8. */
export type Payload = Uint8Array | string;

/** Everything a submit may set besides the queue and the payload (see `JobSpec`). */
export interface SubmitOptions {
  /** Higher runs first; FIFO among equal priorities. */
  priority?: number;
  /** String headers; pass `traceparent` here to carry trace context to the worker. */
  headers?: Record<string, string>;
  /** MIME type; a string payload defaults to `text/plain; charset=utf-8`. */
  contentType?: string;
  /** Overrides the queue's retry policy for this job. */
  retryPolicy?: RetryPolicy;
  /** Milliseconds from now before the job may run (state SCHEDULED until then). */
  delayMs?: number;
  /** Do not dispatch before this time (give this or `delayMs`). */
  notBefore?: Date;
  /** Expire, never dispatched, if not dispatched by this time. */
  expireAt?: Date;
  /** Time to live from submit; the earlier of ttl and expireAt applies. */
  ttlMs?: number;
  /** Jobs with the same ordering key run one at a time, in submit order. */
  orderingKey?: string;
  /** Jobs are shared fairly among fairness keys (e.g. a tenant id). */
  fairnessKey?: string;
  fairnessWeight?: number;
  /** A second submit with the same key returns the first job and creates nothing. */
  idempotencyKey?: string;
  /** The batch (of this queue) the job joins; made on first use (docs/workflows.md). */
  batchId?: string;
  /** Jobs of the same queue that must succeed first: the job is WAITING until then. */
  parentIds?: string[];
  /** Run once every parent is final even if one did not succeed (default: cancelled). */
  runAfterFailedParents?: boolean;
}

/** One job of a batch. */
export interface NewJob extends SubmitOptions {
  queue: string;
  payload?: Payload;
}

/**
 * Queue settings to change. Only the keys given are sent (as update_mask paths); a message
 * setting given as `null` is cleared (`rate: null` means unlimited).
 */
export interface QueueSettings {
  width?: number;
  paused?: boolean;
  leaseDurationMs?: number;
  rate?: Rate | null;
  retryPolicy?: RetryPolicy | null;
  keyLimits?: KeyLimits | null;
  maxPending?: number;
  /** Throttle signals one job may answer with before one counts as a failed attempt (0: 20). */
  maxThrottleBounces?: number;
  /** Adapt the rate to throttle signals (AIMD); `null`: the configured rate again. */
  adaptive?: AdaptiveRate | null;
  /** Quotas over several windows, all enforced (the whole list; `[]` or `null` clears). */
  windows?: RateWindow[] | null;
  dedupWindowMs?: number;
}

function encodePayload(payload: Payload, contentType: string): [Buffer, string] {
  if (typeof payload === "string") {
    return [Buffer.from(payload, "utf8"), contentType || TEXT_CONTENT_TYPE];
  }
  if (payload instanceof Uint8Array) {
    return [Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), contentType];
  }
  throw new TypeError(`payload must be a Uint8Array or a string, not ${typeof payload}`);
}

export function jobSpec(queue: string, payload: Payload = Buffer.alloc(0), options: SubmitOptions = {}): pb.JobSpec {
  const [data, contentType] = encodePayload(payload, options.contentType ?? "");
  if (options.delayMs !== undefined && options.notBefore !== undefined) {
    throw new TypeError("give delayMs or notBefore, not both");
  }
  const notBefore = options.delayMs === undefined ? options.notBefore : new Date(Date.now() + options.delayMs);
  return {
    queue,
    payload: data,
    priority: options.priority ?? 0,
    headers: { ...options.headers },
    contentType,
    retryPolicy: options.retryPolicy && retryPolicyToProto(options.retryPolicy),
    notBefore,
    expireAt: options.expireAt,
    ttl: options.ttlMs === undefined ? undefined : toDuration(options.ttlMs),
    orderingKey: options.orderingKey ?? "",
    fairnessKey: options.fairnessKey ?? "",
    idempotencyKey: options.idempotencyKey ?? "",
    fairnessWeight: options.fairnessWeight ?? 0,
    batchId: options.batchId ?? "",
    parentIds: [...(options.parentIds ?? [])],
    runAfterFailedParents: options.runAfterFailedParents ?? false,
  };
}

export function waitJobRequest(jobId: string, timeoutMs: number | undefined): pb.WaitJobRequest {
  if (timeoutMs !== undefined && !(timeoutMs >= 0)) {
    throw new RangeError("timeoutMs must be >= 0");
  }
  return { jobId, timeout: timeoutMs === undefined ? undefined : toDuration(timeoutMs) };
}

export function listJobsRequest(
  queue: string,
  state: JobState,
  pageSize: number,
  pageToken: string,
): pb.ListJobsRequest {
  return { queue, state: state as number as pb.JobState, pageSize, pageToken };
}

/**
 * UpdateQueue touching only the settings given.
 *
 * An empty update_mask means "set width, paused and lease_duration" to the server, which
 * would silently zero the settings the caller left out; so at least one setting is required.
 */
export function updateQueueRequest(name: string, settings: QueueSettings, create: boolean): pb.UpdateQueueRequest {
  // fromPartial: every field the caller does not set keeps its default, however many the
  // proto grows.
  const queue: pb.Queue = pb.Queue.fromPartial({ name });
  const paths: string[] = [];
  const set = <K extends keyof QueueSettings>(
    key: K,
    path: string,
    apply: (v: NonNullable<QueueSettings[K]>) => void,
  ): void => {
    const value = settings[key];
    if (value === undefined) {
      return;
    }
    paths.push(path);
    if (value !== null) {
      apply(value as NonNullable<QueueSettings[K]>);
    }
  };
  set("width", "width", (v) => (queue.width = v));
  set("paused", "paused", (v) => (queue.paused = v));
  set("leaseDurationMs", "lease_duration", (v) => (queue.leaseDuration = toDuration(v)));
  set("rate", "rate", (v) => (queue.rate = { perSecond: v.perSecond, burst: v.burst ?? 0 }));
  set("retryPolicy", "retry_policy", (v) => (queue.retryPolicy = retryPolicyToProto(v)));
  set("keyLimits", "key_limits", (v) => {
    queue.keyLimits = pb.KeyLimits.fromPartial({
      maxInFlightPerKey: v.maxInFlightPerKey ?? 0,
      perKeyRate: v.perKeyRate ?? 0,
      perKeyBurst: v.perKeyBurst ?? 0,
      perKeyWindows: (v.perKeyWindows ?? []).map(windowToProto),
    });
  });
  set("maxPending", "max_pending", (v) => (queue.maxPending = v));
  set("dedupWindowMs", "dedup_window", (v) => (queue.dedupWindow = toDuration(v)));
  set("maxThrottleBounces", "max_throttle_bounces", (v) => (queue.maxThrottleBounces = v));
  set("adaptive", "adaptive", (v) => (queue.adaptive = adaptiveToProto(v)));
  set("windows", "windows", (v) => (queue.windows = v.map(windowToProto)));
  if (paths.length === 0) {
    throw new TypeError("updateQueue needs at least one setting to change");
  }
  return { queue, updateMask: paths, allowMissing: create };
}
