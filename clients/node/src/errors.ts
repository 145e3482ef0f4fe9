/**
 * Errors of the dispatchd client library.
 *
 * Every failed RPC rejects with a {@link DispatchdError} subclass picked by its gRPC status
 * code, so callers can write `if (e instanceof NotFoundError)` instead of comparing numeric
 * codes. The status code, its details and the trailing metadata stay on the error, and the
 * original grpc-js error is its `cause`.
 *
 * What the server says beyond its message travels as standard error details (a
 * `google.rpc.Status` in the `grpc-status-details-bin` trailer) and is decoded into `reason`
 * (ErrorInfo: a stable name such as `QUEUE_FULL`, listed in the server's docs/errors.md),
 * `info` (ErrorInfo's metadata), `fieldViolations` (BadRequest: which request fields are
 * wrong) and `retryDelayMs` (RetryInfo). Programs branch on those, never on `details`.
 *
 * {@link PermanentError} is the odd one out: job handlers throw it to tell the worker that a
 * failure will not go away on retry. It is not a DispatchdError because no RPC failed.
 */

import { Metadata, status as Status, type ServiceError } from "@grpc/grpc-js";
import { BadRequest, ErrorInfo, RetryInfo } from "./gen/google/rpc/error_details";
import { Status as RpcStatus } from "./gen/google/rpc/status";

/** The trailer that carries a google.rpc.Status. */
export const DETAILS_KEY = "grpc-status-details-bin";

/** One request field the server blames, e.g. `{ field: "jobs[3].queue", description }`. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** The standard error details of a refusal, as plain values. */
export interface ErrorFacts {
  /** ErrorInfo.reason ("" when the server sent none). */
  reason: string;
  /** ErrorInfo.metadata: the facts (job_id, queue, max_pending, ...). */
  info: Readonly<Record<string, string>>;
  fieldViolations: readonly FieldViolation[];
  /** RetryInfo.retry_delay in milliseconds; undefined: a retry will not help (or unsaid). */
  retryDelayMs: number | undefined;
}

const NO_FACTS: ErrorFacts = { reason: "", info: {}, fieldViolations: [], retryDelayMs: undefined };
const TYPE_PREFIX = "type.googleapis.com/";

/** An RPC to dispatchd failed. Codes without a dedicated subclass use this class itself. */
export class DispatchdError extends Error {
  /** The gRPC status code (`status.NOT_FOUND`, ...). */
  readonly code: Status;
  /** The server's message: what was wrong and what to change. */
  readonly details: string;
  /** Trailing metadata of the failed call (empty when the failure was local). */
  readonly metadata: Metadata;
  /** What the server's error details say (see the module comment). */
  readonly facts: ErrorFacts;

  constructor(code: Status, details = "", metadata?: Metadata, options?: ErrorOptions) {
    super(details ? `${Status[code] ?? code}: ${details}` : `${Status[code] ?? code}`, options);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
    this.metadata = metadata ?? new Metadata();
    this.facts = factsOf(this.metadata, code);
  }

  /** A stable name for why the server refused (`QUEUE_FULL`, `DRAINING`, ...), or "". */
  get reason(): string {
    return this.facts.reason;
  }

  /** ErrorInfo's metadata: the facts behind the reason. */
  get info(): Readonly<Record<string, string>> {
    return this.facts.info;
  }

  /** The request fields the server blames (`jobs[3].queue`, `queue.width`, ...). */
  get fieldViolations(): readonly FieldViolation[] {
    return this.facts.fieldViolations;
  }

  /** How long to wait before a retry may succeed, or undefined when a retry will not help. */
  get retryDelayMs(): number | undefined {
    return this.facts.retryDelayMs;
  }

  /** The status code's name, e.g. `"NOT_FOUND"`. */
  get codeName(): string {
    return Status[this.code] ?? String(this.code);
  }
}

/** The request itself is wrong (bad queue name, bad page token, out-of-range value). */
export class InvalidArgumentError extends DispatchdError {}

/** The job or queue does not exist (or a finished job outlived its retention). */
export class NotFoundError extends DispatchdError {}

/** Valid request, but the target's state forbids it (e.g. reprioritizing a finished job). */
export class FailedPreconditionError extends DispatchdError {}

/** A server limit was hit (payload size, queue bound); retrying later may work. */
export class ResourceExhaustedError extends DispatchdError {}

/**
 * The server cannot be reached or is draining. Idempotent reads are retried automatically
 * before this is raised; submissions never are.
 */
export class UnavailableError extends DispatchdError {}

/** The call's deadline passed before the server answered. */
export class DeadlineExceededError extends DispatchdError {}

/** The resource to create is already there. */
export class AlreadyExistsError extends DispatchdError {}

/** The caller is known but not allowed to do this. */
export class PermissionDeniedError extends DispatchdError {}

/** The caller could not be identified. */
export class UnauthenticatedError extends DispatchdError {}

/** The server (or this library, on a protocol violation) hit a bug. */
export class InternalError extends DispatchdError {}

const BY_CODE: ReadonlyMap<Status, typeof DispatchdError> = new Map<Status, typeof DispatchdError>([
  [Status.INVALID_ARGUMENT, InvalidArgumentError],
  [Status.NOT_FOUND, NotFoundError],
  [Status.FAILED_PRECONDITION, FailedPreconditionError],
  [Status.RESOURCE_EXHAUSTED, ResourceExhaustedError],
  [Status.UNAVAILABLE, UnavailableError],
  [Status.DEADLINE_EXCEEDED, DeadlineExceededError],
  [Status.ALREADY_EXISTS, AlreadyExistsError],
  [Status.PERMISSION_DENIED, PermissionDeniedError],
  [Status.UNAUTHENTICATED, UnauthenticatedError],
  [Status.INTERNAL, InternalError],
]);

/** The DispatchdError (subclass) for a status code. */
export function errorFor(code: Status, details = "", metadata?: Metadata, cause?: unknown): DispatchdError {
  const Cls = BY_CODE.get(code) ?? DispatchdError;
  return new Cls(code, details, metadata, cause === undefined ? undefined : { cause });
}

/**
 * The error details in a call's trailing metadata. Details that do not decode, or that
 * belong to another status than the call's (a proxy's), are ignored: the code alone still
 * says what happened.
 */
export function factsOf(metadata: Metadata, code: Status): ErrorFacts {
  const raw = metadata.get(DETAILS_KEY)[0];
  if (!Buffer.isBuffer(raw)) {
    return NO_FACTS;
  }
  let status: RpcStatus;
  try {
    status = RpcStatus.decode(raw);
  } catch {
    return NO_FACTS;
  }
  if (status.code !== code) {
    return NO_FACTS;
  }
  let reason = "";
  let info: Record<string, string> = {};
  const fieldViolations: FieldViolation[] = [];
  let retryDelayMs: number | undefined;
  for (const detail of status.details) {
    const type = detail.typeUrl.startsWith(TYPE_PREFIX) ? detail.typeUrl.slice(TYPE_PREFIX.length) : detail.typeUrl;
    try {
      if (type === "google.rpc.ErrorInfo") {
        const decoded = ErrorInfo.decode(detail.value);
        reason = decoded.reason;
        info = { ...decoded.metadata };
      } else if (type === "google.rpc.BadRequest") {
        for (const v of BadRequest.decode(detail.value).fieldViolations) {
          fieldViolations.push({ field: v.field, description: v.description });
        }
      } else if (type === "google.rpc.RetryInfo") {
        const delay = RetryInfo.decode(detail.value).retryDelay;
        if (delay !== undefined) {
          retryDelayMs = delay.seconds * 1000 + delay.nanos / 1e6;
        }
      }
    } catch {
      // A detail that does not decode says nothing; the others still count.
    }
  }
  return { reason, info, fieldViolations, retryDelayMs };
}

/** True for the errors grpc-js reports for a failed call (they carry a numeric `code`). */
export function isServiceError(e: unknown): e is ServiceError {
  return e instanceof Error && typeof (e as Partial<ServiceError>).code === "number";
}

/** Translate a grpc-js error into the matching DispatchdError; other values pass through. */
export function fromServiceError(e: unknown): unknown {
  if (e instanceof DispatchdError || !isServiceError(e)) {
    return e;
  }
  return errorFor(e.code, e.details ?? "", e.metadata, e);
}

/**
 * Throw from a job handler to fail the job without asking for a retry.
 *
 * Any other error is reported as retryable, because most failures (timeouts, flaky
 * dependencies) are transient; only the handler knows when the input itself is bad.
 */
export class PermanentError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** What a throttle signal holds: the whole queue, or only the job's fairness key. */
export type ThrottleScopeName = "queue" | "fairnessKey";

/**
 * Throw from a job handler when the provider it calls throttles (a 429, a quota):
 *
 * ```ts
 * throw new ThrottledError(30_000); // the whole queue waits 30 s
 * throw new ThrottledError(5_000, { scope: "fairnessKey" }); // only this job's key waits
 * ```
 *
 * The job goes back to its place without the delivery counting as an attempt, and the server
 * dispatches nothing more of the queue (or of the job's fairness key) until `retryAfterMs` has
 * passed. A job answering this more often than the queue's max_throttle_bounces has the next
 * one counted as a failed attempt.
 */
export class ThrottledError extends Error {
  readonly retryAfterMs: number;
  readonly scope: ThrottleScopeName;
  readonly reason: string;

  constructor(retryAfterMs = 1000, options?: { scope?: ThrottleScopeName; reason?: string }) {
    const reason = options?.reason ?? "";
    super(reason || `throttled for ${retryAfterMs} ms`);
    this.name = new.target.name;
    this.retryAfterMs = retryAfterMs;
    this.scope = options?.scope ?? "queue";
    this.reason = reason;
  }
}

/**
 * Throw from a job handler to fail this attempt and ask for a retry, expectedly (a busy
 * dependency, a lock taken): the worker logs one line without the stack. Any other error is
 * retryable too, but logged with its stack, as a surprise.
 */
export class RetryableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}
