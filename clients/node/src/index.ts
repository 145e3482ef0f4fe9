/**
 * `@dispatchd/client`: a Promise-based client and a worker for dispatchd, built on
 * `@grpc/grpc-js` and the message types generated from `proto/dispatchd/v1`.
 */

export { type ConnectionOptions, type TlsOptions } from "./channel";
export {
  type BatchHandle,
  type BatchOptions,
  Client,
  type CallOptions,
  type ClientOptions,
  type WatchFilter,
  type WatchItem,
} from "./client";
export {
  AlreadyExistsError,
  DeadlineExceededError,
  DispatchdError,
  type ErrorFacts,
  FailedPreconditionError,
  type FieldViolation,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  PermanentError,
  RetryableError,
  PermissionDeniedError,
  ResourceExhaustedError,
  type ThrottleScopeName,
  ThrottledError,
  UnauthenticatedError,
  UnavailableError,
} from "./errors";
export { type Logger, defaultLogger } from "./log";
export { DEFAULT_TARGET, type NewJob, type Payload, type QueueSettings, type SubmitOptions } from "./requests";
export { type AfterJobHook, type BeforeJobHook, type StartStopHook } from "./hooks";
export {
  FiringCause,
  FiringOutcome,
  type Schedule,
  type ScheduleChanges,
  ScheduleCatchupMode,
  type ScheduleFiring,
  type ScheduleOptions,
  ScheduleOverlapPolicy,
  type ScheduleSpecInput,
} from "./schedules";
export { JOB_BUCKETS, type PromClientModule, WorkerMetrics } from "./metrics";
export { CANCELLED_ERROR, type Handler, type Outcome, type Output, type ThrottleSignal } from "./runner";
export type { WorkerStats } from "./session";
export {
  type AdaptiveRate,
  type Attempt,
  type Batch,
  type BatchCounts,
  type Job,
  type JobProgress,
  type JobError,
  JobState,
  type KeyLimits,
  type Queue,
  type Rate,
  type RateWindow,
  type ReceivedJob,
  type RetryPolicy,
  type Slot,
  type SubmittedJob,
  isFinished,
} from "./types";
export { REFUSALS, type RunOptions, Worker, type WorkerOptions } from "./worker";
/** The generated messages and service definition, for callers who need the raw contract. */
export * as v1 from "./gen/dispatchd/v1/dispatcher";
export { status } from "@grpc/grpc-js";
