/**
 * Errors of the dispatchd client library.
 *
 * Every failed RPC rejects with a {@link DispatchdError} subclass picked by its gRPC status
 * code, so callers can write `if (e instanceof NotFoundError)` instead of comparing numeric
 * codes. The status code, its details and the trailing metadata stay on the error, and the
 * original grpc-js error is its `cause`.
 *
 * {@link PermanentError} is the odd one out: job handlers throw it to tell the worker that a
 * failure will not go away on retry. It is not a DispatchdError because no RPC failed.
 */

import { Metadata, status as Status, type ServiceError } from "@grpc/grpc-js";

/** An RPC to dispatchd failed. Codes without a dedicated subclass use this class itself. */
export class DispatchdError extends Error {
  /** The gRPC status code (`status.NOT_FOUND`, ...). */
  readonly code: Status;
  /** The server's message: what was wrong and what to change. */
  readonly details: string;
  /** Trailing metadata of the failed call (empty when the failure was local). */
  readonly metadata: Metadata;

  constructor(code: Status, details = "", metadata?: Metadata, options?: ErrorOptions) {
    super(details ? `${Status[code] ?? code}: ${details}` : `${Status[code] ?? code}`, options);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
    this.metadata = metadata ?? new Metadata();
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
