/**
 * The client for producers and operators: every unary call of `DispatcherService`, as Promises.
 *
 * Calls reject with {@link DispatchdError} subclasses instead of grpc-js errors, and
 * idempotent reads ride out short UNAVAILABLE blips (a server restart, a proxy reconnect) with
 * a few jittered retries. Submissions are never retried automatically: a retry after an
 * ambiguous failure could enqueue the same work twice, and only the caller knows whether that
 * is harmless (an idempotency key makes it so).
 *
 * Concurrent `submit()` calls are coalesced: those made in the same turn of the event loop share
 * one SubmitBatch round trip, and each still gets its own job or error (see `coalescer.ts`).
 */

import * as grpc from "@grpc/grpc-js";
import { status as Status } from "@grpc/grpc-js";
import type * as pb from "./gen/dispatchd/v1/dispatcher";
import { DispatcherServiceService as S } from "./gen/dispatchd/v1/dispatcher";
import { type ConnectionOptions, connect } from "./channel";
import { Coalescer } from "./coalescer";
import { UnavailableError, errorFor, fromServiceError, isServiceError } from "./errors";
import * as rq from "./requests";
import * as sq from "./schedules";
import {
  type Batch,
  type Job,
  JobState,
  batchFromProto,
  type Queue,
  type Slot,
  type SubmittedJob,
  jobFromProto,
  queueFromProto,
  slotFromProto,
  toDuration,
} from "./types";
import { backoffDelay, sleep } from "./util";

/** First delay before retrying an idempotent read that failed with UNAVAILABLE. */
const RETRY_BASE_MS = 50;
/**
 * WaitJob's call deadline exceeds its server-side timeout by this much, so the server's "timed
 * out, here is the job as it is" answer wins the race against DEADLINE_EXCEEDED.
 */
const WAIT_DEADLINE_MARGIN_MS = 5000;
/** The server caps WaitJob at one hour; an unbounded wait gets that long. */
const MAX_WAIT_MS = 3_600_000;
/** Longest pause between two tries of a WaitJob the server could not take (UNAVAILABLE). */
const WAIT_RETRY_CAP_MS = 1_000;
/** How long an acquired slot lives without a renewal, unless the caller says. */
const DEFAULT_SLOT_TTL_MS = 30_000;

/** Connection options (`tls`, `token`, `credentials`, `channelOptions`) and call defaults. */
export interface ClientOptions extends ConnectionOptions {
  /** Default per-call deadline in milliseconds; `null`: no deadline. Default 30 s. */
  timeoutMs?: number | null;
  /** How many times an idempotent read is retried on UNAVAILABLE. Default 3. */
  retryUnavailable?: number;
  /**
   * Let concurrent `submit()` calls share SubmitBatch round trips (default true): calls made
   * in the same turn of the event loop, or within `coalesceWindowMs` of the first, travel
   * together, up to 1,000 jobs per batch. Each caller gets its own job or its own error; a bad
   * job never fails its neighbours, though it costs its batch-mates a resend. A submit given
   * its own `CallOptions` (deadline or AbortSignal) is always sent alone.
   */
  coalesce?: boolean;
  /** How long the first coalesced submit waits for others, in milliseconds. Default 0. */
  coalesceWindowMs?: number;
}

/** Per-call options, the last argument of every method. */
export interface CallOptions {
  /** This call's deadline in milliseconds (`null`: none), instead of the client's default. */
  timeoutMs?: number | null;
  /** Cancels the call; it then rejects with a CANCELLED DispatchdError. */
  signal?: AbortSignal;
}

interface UnaryDef<Req, Res> {
  path: string;
  requestSerialize: (value: Req) => Buffer;
  responseDeserialize: (value: Buffer) => Res;
}

interface Policy {
  /** Safe to send twice, so retried on UNAVAILABLE. */
  idempotent?: boolean;
  /** The call's own deadline when it must differ from the client's default. */
  timeoutMs?: number;
}

/** What createBatch takes besides the queue (docs/workflows.md). */
export interface BatchOptions {
  batchId?: string;
  description?: string;
  /** Submitted once when the batch is closed and every job succeeded. */
  onSuccess?: rq.NewJob;
  /** Submitted once when the batch is closed and every job is final. */
  onComplete?: rq.NewJob;
}

/** What {@link Client.watch} follows; empty lists: everything. */
export interface WatchFilter {
  queues?: string[];
  jobIds?: string[];
  batchIds?: string[];
  kinds?: pb.JobEventKind[];
  /** Go on after the event that carried this token. */
  resumeToken?: string;
}

/** One item of {@link Client.watch}: an event, or the news that some were missed. */
export type WatchItem = NonNullable<pb.WatchEventsResponse["kind"]>;

/** The batch being filled inside {@link Client.batch}. */
export interface BatchHandle {
  batchId: string;
  submit(payload?: rq.Payload, options?: rq.SubmitOptions): Promise<SubmittedJob>;
}

function cancelledByCaller(): Error {
  return errorFor(Status.CANCELLED, "cancelled by the caller's AbortSignal");
}

export class Client {
  private readonly grpcClient: grpc.Client;
  private readonly metadata: () => grpc.Metadata;
  private readonly timeoutMs: number | null;
  private readonly retries: number;
  private readonly coalescer: Coalescer | undefined;

  constructor(target: string = rq.DEFAULT_TARGET, options: ClientOptions = {}) {
    const retries = options.retryUnavailable ?? 3;
    if (!Number.isInteger(retries) || retries < 0) {
      throw new RangeError("retryUnavailable must be an integer >= 0");
    }
    const connection = connect(target, options);
    this.grpcClient = connection.client;
    this.metadata = connection.metadata;
    this.timeoutMs = options.timeoutMs === undefined ? 30_000 : options.timeoutMs;
    this.retries = retries;
    const windowMs = options.coalesceWindowMs ?? 0;
    if (!(windowMs >= 0)) {
      throw new RangeError("coalesceWindowMs must be >= 0");
    }
    this.coalescer =
      (options.coalesce ?? true)
        ? new Coalescer(
            (spec) => this.submitSpec(spec),
            (specs) => this.submitSpecs(specs),
            windowMs,
          )
        : undefined;
  }

  /**
   * Close the channel; calls in flight fail with CANCELLED or UNAVAILABLE. Submits still
   * waiting to be coalesced count as in flight: they are sent now and fail the same way.
   */
  close(): void {
    this.coalescer?.flush();
    this.grpcClient.close();
  }

  /** Add one job. A string payload is sent as UTF-8 text. Not retried. */
  async submit(
    queue: string,
    payload?: rq.Payload,
    options: rq.SubmitOptions = {},
    call?: CallOptions,
  ): Promise<SubmittedJob> {
    const spec = rq.jobSpec(queue, payload, options);
    if (this.coalescer !== undefined && call?.timeoutMs === undefined && call?.signal === undefined) {
      return this.coalescer.submit(spec);
    }
    return this.submitSpec(spec, call);
  }

  /** Add many jobs atomically (all or none), returned in request order. Not retried. */
  async submitBatch(jobs: readonly rq.NewJob[], call?: CallOptions): Promise<SubmittedJob[]> {
    return this.submitSpecs(
      jobs.map((j) => rq.jobSpec(j.queue, j.payload, j)),
      call,
    );
  }

  private async submitSpec(spec: pb.JobSpec, call?: CallOptions): Promise<SubmittedJob> {
    const response = await this.call(S.submit, { job: spec }, {}, call);
    return { ...jobFromProto(response.job), duplicate: response.duplicate };
  }

  private async submitSpecs(specs: pb.JobSpec[], call?: CallOptions): Promise<SubmittedJob[]> {
    const response = await this.call(S.submitBatch, { jobs: specs }, {}, call);
    return response.jobs.map((j, i) => ({ ...jobFromProto(j), duplicate: response.duplicates[i] ?? false }));
  }

  /** The job in any state (finished jobs are kept for the server's retention period). */
  async get(jobId: string, call?: CallOptions): Promise<Job> {
    return jobFromProto((await this.call(S.getJob, { jobId }, { idempotent: true }, call)).job);
  }

  /**
   * Wait until the job finishes or `timeoutMs` passes, and return it as it is then (check
   * `isFinished(job.state)`). Without a timeout, waits as long as the server allows (1 hour).
   */
  async wait(jobId: string, timeoutMs?: number, call?: CallOptions): Promise<Job> {
    // A server that cannot answer meanwhile (restarting, draining) is asked again, with
    // backoff, each time for what is left, until the caller's own timeout has passed.
    const until = Date.now() + (timeoutMs ?? MAX_WAIT_MS);
    for (let attempt = 0; ; attempt++) {
      const left = Math.max(0, until - Date.now());
      const request = rq.waitJobRequest(jobId, timeoutMs === undefined && attempt === 0 ? undefined : left);
      const policy = { idempotent: true, timeoutMs: left + WAIT_DEADLINE_MARGIN_MS };
      try {
        return jobFromProto((await this.call(S.waitJob, request, policy, call)).job);
      } catch (e) {
        const remaining = until - Date.now();
        if (!(e instanceof UnavailableError) || remaining <= 0 || call?.signal?.aborted) {
          throw e;
        }
        try {
          await sleep(Math.min(backoffDelay(attempt, RETRY_BASE_MS, WAIT_RETRY_CAP_MS), remaining), call?.signal);
        } catch {
          throw cancelledByCaller();
        }
      }
    }
  }

  /** Remove a pending job, or mark an underway job cancelled and tell its worker. */
  async cancel(jobId: string, call?: CallOptions): Promise<Job> {
    return jobFromProto((await this.call(S.cancelJob, { jobId }, {}, call)).job);
  }

  /** Change the priority of a job that has not finished. */
  async reprioritize(jobId: string, priority: number, call?: CallOptions): Promise<Job> {
    return jobFromProto((await this.call(S.reprioritizeJob, { jobId, priority }, {}, call)).job);
  }

  /** Put a dead or failed job back to pending with a fresh attempt budget. */
  async retryJob(jobId: string, call?: CallOptions): Promise<Job> {
    return jobFromProto((await this.call(S.retryJob, { jobId }, {}, call)).job);
  }

  /** Every job of `queue` (in `state`, if given), fetching pages lazily. */
  async *listJobs(
    queue: string,
    options: { state?: JobState; pageSize?: number } = {},
    call?: CallOptions,
  ): AsyncGenerator<Job, void, undefined> {
    let token = "";
    do {
      const request = rq.listJobsRequest(queue, options.state ?? JobState.UNSPECIFIED, options.pageSize ?? 100, token);
      const page = await this.call(S.listJobs, request, { idempotent: true }, call);
      for (const job of page.jobs) {
        yield jobFromProto(job);
      }
      token = page.nextPageToken;
    } while (token);
  }

  /** Forget the finished jobs of `queue` (only those in `state`, if given); returns how many. */
  async purgeJobs(queue: string, state: JobState = JobState.UNSPECIFIED, call?: CallOptions): Promise<number> {
    const request = { queue, state: state as number };
    return (await this.call(S.purgeJobs, request, {}, call)).purgedCount;
  }

  /** One queue's settings and counts. */
  async getQueue(name: string, call?: CallOptions): Promise<Queue> {
    return queueFromProto((await this.call(S.getQueue, { name }, { idempotent: true }, call)).queue);
  }

  /** Every known queue, sorted by name. */
  async listQueues(call?: CallOptions): Promise<Queue[]> {
    return (await this.call(S.listQueues, {}, { idempotent: true }, call)).queues.map(queueFromProto);
  }

  /**
   * Change the given settings live (the others are left alone). `create` makes the queue if
   * it does not exist instead of rejecting with NotFoundError.
   */
  async updateQueue(
    name: string,
    settings: rq.QueueSettings,
    options: { create?: boolean } = {},
    call?: CallOptions,
  ): Promise<Queue> {
    const request = rq.updateQueueRequest(name, settings, options.create ?? false);
    return queueFromProto((await this.call(S.updateQueue, request, {}, call)).queue);
  }

  /** Stop new dispatches from `name`; underway jobs run on. */
  async pause(name: string, call?: CallOptions): Promise<Queue> {
    return queueFromProto((await this.call(S.pauseQueue, { name }, {}, call)).queue);
  }

  /** Lift a pause, optionally setting a new width at the same time. */
  async resume(name: string, width?: number, call?: CallOptions): Promise<Queue> {
    return queueFromProto((await this.call(S.resumeQueue, { name, width }, {}, call)).queue);
  }

  /**
   * Delete an empty queue with its settings and finished jobs; resolves with how many finished
   * jobs went with it. Rejects with FailedPreconditionError (reason QUEUE_NOT_EMPTY) while it
   * has waiting or underway jobs, held or requested slots, or connected workers.
   */
  async deleteQueue(name: string, call?: CallOptions): Promise<number> {
    return (await this.call(S.deleteQueue, { name }, {}, call)).forgottenCount;
  }

  /**
   * Ask the server to stop intake, let underway jobs finish (for `graceMs`, or its configured
   * default), snapshot and exit. Resolves with the counts when the drain began.
   */
  async drain(graceMs?: number, call?: CallOptions): Promise<{ pendingCount: number; underwayCount: number }> {
    const request = { grace: graceMs === undefined ? undefined : toDuration(graceMs) };
    const response = await this.call(S.drain, request, {}, call);
    return { pendingCount: response.pendingCount, underwayCount: response.underwayCount };
  }

  /**
   * Wait (within the call's deadline) until `queue`'s width and rate allow, then hold one slot
   * of its width for work that runs outside dispatchd workers. Renew it before `expireTime`.
   */
  async acquireSlot(
    queue: string,
    options: { holder?: string; ttlMs?: number; priority?: number } = {},
    call?: CallOptions,
  ): Promise<Slot> {
    const request = {
      queue,
      holder: options.holder ?? "",
      ttl: toDuration(options.ttlMs ?? DEFAULT_SLOT_TTL_MS),
      priority: options.priority ?? 0,
    };
    return slotFromProto((await this.call(S.acquireSlot, request, {}, call)).slot);
  }

  /** Extend a held slot by `ttlMs` from now (default: the ttl it was acquired with). */
  async renewSlot(slotId: string, ttlMs?: number, call?: CallOptions): Promise<Slot> {
    const request = { slotId, ttl: ttlMs === undefined ? undefined : toDuration(ttlMs) };
    return slotFromProto((await this.call(S.renewSlot, request, {}, call)).slot);
  }

  /** Free a held slot. */
  async releaseSlot(slotId: string, call?: CallOptions): Promise<void> {
    await this.call(S.releaseSlot, { slotId }, {}, call);
  }

  // ---- schedules (docs/schedules.md) ------------------------------------------------------

  /**
   * Add a schedule: each tick of `spec` submits one job made from `template` (its `ttlMs`
   * counts from each firing; no delay or idempotency key). Rejects with AlreadyExistsError
   * when the id is taken.
   */
  async createSchedule(
    id: string,
    spec: sq.ScheduleSpecInput,
    template: rq.NewJob,
    options: sq.ScheduleOptions = {},
    call?: CallOptions,
  ): Promise<pb.Schedule> {
    const request = sq.createScheduleRequest(id, spec, template, options);
    return required((await this.call(S.createSchedule, request, {}, call)).schedule);
  }

  /** One schedule, with its next ten fire times and ten latest firings. */
  async getSchedule(id: string, call?: CallOptions): Promise<pb.Schedule> {
    return required((await this.call(S.getSchedule, { id }, { idempotent: true }, call)).schedule);
  }

  /** Every schedule by id (three next fire times and firings each), page by page. */
  async *listSchedules(
    options: { pageSize?: number } = {},
    call?: CallOptions,
  ): AsyncGenerator<pb.Schedule, void, undefined> {
    let pageToken = "";
    do {
      const request = { pageSize: options.pageSize ?? 100, pageToken };
      const page = await this.call(S.listSchedules, request, { idempotent: true }, call);
      yield* page.schedules;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** Change what is given, nothing else; a new spec goes on from now. */
  async updateSchedule(id: string, changes: sq.ScheduleChanges, call?: CallOptions): Promise<pb.Schedule> {
    const request = sq.updateScheduleRequest(id, changes);
    return required((await this.call(S.updateSchedule, request, {}, call)).schedule);
  }

  /** Remove a schedule; the jobs it submitted stay. */
  async deleteSchedule(id: string, call?: CallOptions): Promise<void> {
    await this.call(S.deleteSchedule, { id }, {}, call);
  }

  /** Stop a schedule's ticks from firing, saying why in `note`. */
  async pauseSchedule(id: string, note = "", call?: CallOptions): Promise<pb.Schedule> {
    return required((await this.call(S.pauseSchedule, { id, note }, {}, call)).schedule);
  }

  /** Fire again from the next tick on (the pause's ticks do not catch up). */
  async resumeSchedule(id: string, note?: string, call?: CallOptions): Promise<pb.Schedule> {
    return required((await this.call(S.resumeSchedule, { id, note }, {}, call)).schedule);
  }

  /** Fire once now, outside the spec (`overlap` overrides the schedule's). */
  async triggerSchedule(
    id: string,
    overlap?: pb.ScheduleOverlapPolicy,
    call?: CallOptions,
  ): Promise<pb.ScheduleFiring> {
    const request = { id, overlap: overlap ?? 0 };
    return required((await this.call(S.triggerSchedule, request, {}, call)).firing);
  }

  /** Fire the spec's ticks of start..end (the past) now; a fired tick gets no second job. */
  async backfillSchedule(
    id: string,
    startTime: Date,
    endTime: Date,
    overlap?: pb.ScheduleOverlapPolicy,
    call?: CallOptions,
  ): Promise<pb.ScheduleFiring[]> {
    const request = { id, startTime, endTime, overlap: overlap ?? 0 };
    return (await this.call(S.backfillSchedule, request, {}, call)).firings;
  }

  // ---- batches (docs/workflows.md) ----------------------------------------------------

  /**
   * Open a batch of `queue`; its callbacks are jobs of that queue the server submits once,
   * after the batch is closed and every job of it is final. An empty `batchId`: the server
   * makes one. Rejects with AlreadyExistsError when the queue has that batch.
   */
  async createBatch(queue: string, options: BatchOptions = {}, call?: CallOptions): Promise<Batch> {
    const cb = (j: rq.NewJob | undefined): pb.JobSpec | undefined => j && rq.jobSpec(j.queue, j.payload, j);
    const batch: pb.Batch = {
      queue,
      batchId: options.batchId ?? "",
      description: options.description ?? "",
      closed: false,
      onSuccess: cb(options.onSuccess),
      onComplete: cb(options.onComplete),
      onSuccessJobId: "",
      onCompleteJobId: "",
      complete: false,
      counts: undefined,
      createTime: undefined,
      completeTime: undefined,
    };
    return batchFromProto((await this.call(S.createBatch, { batch }, {}, call)).batch);
  }

  async getBatch(queue: string, batchId: string, call?: CallOptions): Promise<Batch> {
    return batchFromProto((await this.call(S.getBatch, { queue, batchId }, { idempotent: true }, call)).batch);
  }

  /** Until every job of the batch is final or `timeoutMs` passes (default: up to an hour). */
  async waitBatch(queue: string, batchId: string, timeoutMs?: number, call?: CallOptions): Promise<Batch> {
    const request = { queue, batchId, timeout: timeoutMs === undefined ? undefined : toDuration(timeoutMs) };
    const policy = { idempotent: true, timeoutMs: (timeoutMs ?? MAX_WAIT_MS) + WAIT_DEADLINE_MARGIN_MS };
    return batchFromProto((await this.call(S.waitBatch, request, policy, call)).batch);
  }

  /** No more jobs join; the callbacks fire once every job is final. */
  async closeBatch(queue: string, batchId: string, call?: CallOptions): Promise<Batch> {
    return batchFromProto((await this.call(S.closeBatch, { queue, batchId }, { idempotent: true }, call)).batch);
  }

  /** Closes the batch and cancels its unfinished jobs. */
  async cancelBatch(queue: string, batchId: string, call?: CallOptions): Promise<Batch> {
    return batchFromProto((await this.call(S.cancelBatch, { queue, batchId }, {}, call)).batch);
  }

  /**
   * The Sidekiq shape: `await client.batch("q", { onComplete }, async (b) => { await
   * b.submit(...) })` creates the batch, runs `fill`, and closes the batch once `fill`
   * resolves (a rejected `fill` leaves it open). Resolves to the closed batch.
   */
  async batch(queue: string, options: BatchOptions, fill: (b: BatchHandle) => Promise<void>): Promise<Batch> {
    const created = await this.createBatch(queue, options);
    const handle: BatchHandle = {
      batchId: created.batchId,
      submit: (payload, opts = {}) => this.submit(queue, payload, { ...opts, batchId: created.batchId }),
    };
    await fill(handle);
    return this.closeBatch(queue, created.batchId);
  }

  // ---- events (docs/workflows.md) -----------------------------------------------------

  /**
   * Lifecycle events as they happen (from now, or after `filter.resumeToken`), filtered: an
   * async iterator of `{ $case: "event", value }` and `{ $case: "missed", value }` (the
   * server could not deliver some events: it says why and where). A stream that breaks with
   * UNAVAILABLE is reopened from the last token seen; `signal` ends the iteration.
   */
  async *watch(filter: WatchFilter = {}, signal?: AbortSignal): AsyncGenerator<WatchItem> {
    let token = filter.resumeToken ?? "";
    for (let attempt = 0; !signal?.aborted; attempt++) {
      const request: pb.WatchEventsRequest = {
        queues: [...(filter.queues ?? [])],
        jobIds: [...(filter.jobIds ?? [])],
        batchIds: [...(filter.batchIds ?? [])],
        kinds: [...(filter.kinds ?? [])],
        resumeToken: token,
      };
      const call = this.grpcClient.makeServerStreamRequest(
        S.watchEvents.path,
        S.watchEvents.requestSerialize,
        S.watchEvents.responseDeserialize,
        request,
        this.metadata(),
        {},
      );
      const onAbort = (): void => call.cancel();
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        for await (const resp of call as AsyncIterable<pb.WatchEventsResponse>) {
          attempt = 0;
          if (resp.kind === undefined) {
            continue;
          }
          if (resp.kind.$case === "event") {
            token = resp.kind.value.resumeToken;
          }
          yield resp.kind;
        }
      } catch (e) {
        if (signal?.aborted) {
          return;
        }
        if (!(isServiceError(e) && e.code === Status.UNAVAILABLE)) {
          throw fromServiceError(e);
        }
      } finally {
        signal?.removeEventListener("abort", onAbort);
        call.cancel();
      }
      try {
        await sleep(backoffDelay(attempt, RETRY_BASE_MS), signal);
      } catch {
        return;
      }
    }
  }

  /** Send `request`, retrying per `policy`; failures reject with a DispatchdError. */
  private async call<Req, Res>(
    def: UnaryDef<Req, Res>,
    request: Req,
    policy: Policy,
    options: CallOptions = {},
  ): Promise<Res> {
    const timeoutMs = options.timeoutMs !== undefined ? options.timeoutMs : (policy.timeoutMs ?? this.timeoutMs);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.once(def, request, timeoutMs, options.signal);
      } catch (e) {
        const retry =
          policy.idempotent &&
          attempt < this.retries &&
          isServiceError(e) &&
          e.code === Status.UNAVAILABLE &&
          !options.signal?.aborted;
        if (!retry) {
          throw fromServiceError(e);
        }
      }
      try {
        await sleep(backoffDelay(attempt, RETRY_BASE_MS), options.signal);
      } catch {
        throw cancelledByCaller();
      }
    }
  }

  private once<Req, Res>(
    def: UnaryDef<Req, Res>,
    request: Req,
    timeoutMs: number | null,
    signal?: AbortSignal,
  ): Promise<Res> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(cancelledByCaller());
        return;
      }
      const deadline = timeoutMs === null ? Infinity : Date.now() + timeoutMs;
      const onAbort = (): void => call.cancel();
      const call = this.grpcClient.makeUnaryRequest(
        def.path,
        def.requestSerialize,
        def.responseDeserialize,
        request,
        this.metadata(),
        { deadline },
        (error, response) => {
          signal?.removeEventListener("abort", onAbort);
          if (error) {
            reject(signal?.aborted ? cancelledByCaller() : error);
          } else if (response === undefined) {
            reject(errorFor(Status.INTERNAL, `${def.path} answered without a response`));
          } else {
            resolve(response);
          }
        },
      );
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}

/** A message field the server always sets. */
function required<T>(value: T | undefined): T {
  if (value === undefined) {
    throw errorFor(Status.INTERNAL, "the server left out a field it always sends");
  }
  return value;
}
