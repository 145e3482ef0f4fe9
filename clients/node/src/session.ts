/**
 * One `Work` stream, from hello to its end.
 *
 * A {@link Session} speaks the worker half of the protocol in dispatcher.proto: hello and
 * welcome, deliveries in, results out, heartbeats while holding leases, cancellations,
 * rejections and the drain. It knows nothing about reconnecting: when the stream breaks it
 * gives up the jobs it held (the server re-queues them when the stream dies; their signals are
 * aborted and their results never sent) and reports how it ended, and the Worker decides what
 * to do next.
 */

import * as grpc from "@grpc/grpc-js";
import { status as Status } from "@grpc/grpc-js";
import {
  type Delivery,
  DispatcherServiceService as S,
  type DrainNotice,
  type JobResult,
  type ProgressReport,
  type WorkRequest,
  type WorkResponse,
  type WorkerHello,
  type WorkerSettings,
  type WorkerWelcome,
} from "./gen/dispatchd/v1/dispatcher";
import type { Connection } from "./channel";
import { type DispatchdError, errorFor } from "./errors";
import { HeartbeatSchedule } from "./heartbeats";
import { type Hooks, callHooks } from "./hooks";
import type { Logger } from "./log";
import type { WorkerMetrics } from "./metrics";
import { type Handler, type Outcome, runJob, throttleToProto } from "./runner";
import { type ReceivedJob, receivedJobFromDelivery, toMs } from "./types";
import { Latch, type Semaphore, sleepUnless } from "./util";

/** Used when the welcome names no heartbeat interval. */
const DEFAULT_HEARTBEAT_MS = 10_000;
/** Milliseconds between two progress messages of one session (see queueProgress). */
const PROGRESS_EVERY_MS = 250;
/** After a drain, how long to wait for the server to end the stream before cutting it. */
const CLOSE_TIMEOUT_MS = 5_000;

/** How a session ended: by a drain (the worker should exit) or by the server (reconnect). */
export type SessionEnd = "drained" | "ended";

/** Counters over a worker's life, for operators and tests. */
export interface WorkerStats {
  jobsReceived: number;
  resultsSent: number;
  /** WorkResults messages sent: results finishing in the same event-loop turn share one. */
  resultMessages: number;
  heartbeatsSent: number;
  rejections: number;
  reconnects: number;
}

export interface SessionDeps {
  connection: Connection;
  hello: WorkerHello;
  handlers: ReadonlyMap<string, Handler>;
  /** Shared by every session of a worker: handlers given up on may still be running. */
  slots: Semaphore;
  /** Set to stop gracefully: no new jobs, held jobs finish and report. */
  stop: Latch;
  /** Set to give up held jobs at once. */
  force: Latch;
  onWelcome(welcome: WorkerWelcome): void;
  onDrain(): void;
  hooks: Hooks;
  stats: WorkerStats;
  log: Logger;
  /** Prometheus families (metrics.ts), when the application asked for them. */
  metrics?: WorkerMetrics;
}

interface Held {
  job: ReceivedJob;
  controller: AbortController;
  /** Set when this session gives the job up; its result must not be sent. */
  abandoned: boolean;
}

type Call = grpc.ClientDuplexStream<WorkRequest, WorkResponse>;

/**
 * `results` in consecutive parts of about `maxBytes` each at most (a larger result goes
 * alone), in order. The server reads messages of at most its payload cap plus headroom:
 * results finishing together may add up to more, and one message over it ends the stream.
 * 0 (an old server said nothing) sends one part.
 */
export function splitResults(results: JobResult[], maxBytes: number): JobResult[][] {
  if (maxBytes <= 0 || results.length <= 1) {
    return [results];
  }
  const parts: JobResult[][] = [[]];
  let size = 0;
  for (const result of results) {
    const n = resultBytes(result);
    if (parts[parts.length - 1]!.length > 0 && size + n > maxBytes) {
      parts.push([]);
      size = 0;
    }
    parts[parts.length - 1]!.push(result);
    size += n;
  }
  return parts;
}

/** About the bytes `result` takes on the wire (ids, output or error, framing). */
function resultBytes(result: JobResult): number {
  const ids = result.jobId.length + result.leaseId.length + 16;
  const outcome = result.outcome;
  if (outcome === undefined) {
    return ids;
  }
  if (outcome.$case === "output") {
    return ids + outcome.value.length;
  }
  if (outcome.$case === "throttled") {
    return ids + Buffer.byteLength(outcome.value.reason) + 16;
  }
  return ids + Buffer.byteLength(outcome.value.message) + Buffer.byteLength(outcome.value.code) + 8;
}

export class Session {
  /** True once the server welcomed this session (the Worker resets its backoff then). */
  welcomed = false;
  private call: Call | undefined;
  private readonly held = new Map<string, Held>();
  private idleWaiters: Array<() => void> = [];
  private pending: JobResult[] = [];
  private flushHandle: NodeJS.Immediate | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private heartbeatMs = DEFAULT_HEARTBEAT_MS;
  private schedule: HeartbeatSchedule | undefined;
  private maxResultBytes = 0;
  private drainNotice: DrainNotice | undefined;
  private readonly drainRequested = new Latch();
  private readonly welcome = new Latch();
  private readonly ended = new Latch();
  /** Why the stream ended: null for OK (or a local cancel after we were done). */
  private failure: Error | null = null;
  /** Set when the server broke the protocol: the worker gives up instead of reconnecting. */
  protocolViolation: DispatchdError | undefined;
  private closed = false;

  constructor(private readonly deps: SessionDeps) {}

  /**
   * Run the stream to its end: "drained" when it ended by a drain (server notice or local
   * stop), "ended" when the server ended it without one. Rejects with the stream's error.
   */
  async run(): Promise<SessionEnd> {
    const { stop } = this.deps;
    const { client, metadata } = this.deps.connection;
    const call = client.makeBidiStreamRequest(
      S.work.path,
      S.work.requestSerialize,
      S.work.responseDeserialize,
      metadata(),
      {},
    );
    this.call = call;
    this.watch(call);
    try {
      this.write({ kind: { $case: "hello", value: this.deps.hello } });
      await Promise.race([this.welcome.promise, this.ended.promise, stop.promise]);
      if (!this.welcome.isSet) {
        // Stopped before the server answered: nothing is held, so there is nothing to drain.
        return stop.isSet ? "drained" : this.endOfStream();
      }
      this.schedule = new HeartbeatSchedule(this.heartbeatMs, performance.now());
      this.armHeartbeat();
      await Promise.race([this.ended.promise, stop.promise, this.drainRequested.promise]);
      if (stop.isSet || this.drainRequested.isSet) {
        await this.drain(call);
        return "drained";
      }
      return this.endOfStream();
    } finally {
      this.close(call);
    }
  }

  private endOfStream(): SessionEnd {
    if (this.failure !== null) {
      throw this.failure;
    }
    return "ended";
  }

  /** The stream has ended once the server's status came and every message was read. */
  private watch(call: Call): void {
    let status: grpc.StatusObject | undefined;
    let readAll = false;
    const settle = (): void => {
      if (status === undefined || !readAll) {
        return;
      }
      if (status.code !== Status.OK && this.failure === null) {
        this.failure = errorFor(status.code, status.details, status.metadata);
      }
      this.ended.set();
    };
    call.on("data", (msg: WorkResponse) => this.onMessage(msg));
    call.on("status", (s: grpc.StatusObject) => {
      status = s;
      settle();
    });
    call.on("end", () => {
      readAll = true;
      settle();
    });
    // Non-OK statuses also arrive as 'error' events; 'status' reports them. Without a
    // listener an 'error' event would crash the process.
    call.on("error", (e: Error) => this.deps.log.debug(`work stream error: ${e.message}`));
  }

  private onMessage(msg: WorkResponse): void {
    const kind = msg.kind;
    if (kind === undefined) {
      this.deps.log.debug("ignoring an empty or unknown message from the server");
      return;
    }
    if (!this.welcomed) {
      if (kind.$case !== "welcome") {
        this.protocolError(`expected a welcome first, got ${kind.$case}`);
      } else {
        this.onWelcome(kind.value);
      }
      return;
    }
    switch (kind.$case) {
      case "deliveries":
        for (const delivery of kind.value.deliveries) {
          this.start(delivery);
        }
        return;
      case "cancellations":
        for (const jobId of kind.value.jobIds) {
          this.cancel(jobId);
        }
        return;
      case "drain":
        this.drainNotice = kind.value;
        this.drainRequested.set();
        return;
      case "rejections":
        for (const r of kind.value.rejections) {
          this.deps.stats.rejections += 1;
          this.deps.log.warn(`server rejected the result of job ${r.jobId} (lease ${r.leaseId}): ${r.reason}`);
        }
        return;
      case "settings":
        this.onSettings(kind.value);
        return;
      case "welcome":
        this.protocolError("a second welcome");
        return;
    }
  }

  /** The server changed what it asks of this worker: heartbeat at the new interval. */
  private onSettings(settings: WorkerSettings): void {
    if (settings.heartbeatInterval === undefined) {
      return;
    }
    const interval = toMs(settings.heartbeatInterval);
    this.heartbeatMs = interval > 0 ? interval : DEFAULT_HEARTBEAT_MS;
    this.deps.log.info(`server asks for a heartbeat every ${this.heartbeatMs} ms from now on`);
    if (this.schedule?.change(this.heartbeatMs)) {
      this.armHeartbeat();
    }
  }

  /** Milliseconds between heartbeats, as the server last asked. */
  get heartbeatIntervalMs(): number {
    return this.heartbeatMs;
  }

  private armHeartbeat(): void {
    clearTimeout(this.heartbeatTimer);
    const schedule = this.schedule;
    if (schedule === undefined || this.closed) {
      return;
    }
    this.heartbeatTimer = setTimeout(
      () => {
        schedule.beat(performance.now());
        this.heartbeat();
        this.armHeartbeat();
      },
      Math.max(0, schedule.dueMs - performance.now()),
    );
  }

  private onWelcome(welcome: WorkerWelcome): void {
    const interval = toMs(welcome.heartbeatInterval);
    this.heartbeatMs = interval > 0 ? interval : DEFAULT_HEARTBEAT_MS;
    this.maxResultBytes = welcome.maxResultBytes;
    this.welcomed = true;
    this.deps.onWelcome(welcome);
    this.welcome.set();
  }

  private protocolError(what: string): void {
    if (this.failure === null) {
      this.protocolViolation = errorFor(Status.INTERNAL, `protocol violation by the server: ${what}`);
      this.failure = this.protocolViolation;
    }
    this.call?.cancel();
  }

  private start(delivery: Delivery): void {
    if (delivery.job === undefined) {
      this.protocolError(`a delivery without a job (lease ${delivery.leaseId})`);
      return;
    }
    const controller = new AbortController();
    const job = receivedJobFromDelivery(delivery, controller.signal, (id, leaseId, percent, message) =>
      this.queueProgress(id, leaseId, percent, message),
    );
    const old = this.held.get(job.id);
    if (old !== undefined) {
      // Same job, new lease: the old lease expired and the server re-dispatched the job here.
      // The old run's result would be rejected as stale, so drop it.
      this.deps.log.warn(`job ${job.id} redelivered with a new lease; dropping the old run`);
      this.abandon(old, "redelivered with a new lease");
    }
    const held: Held = { job, controller, abandoned: false };
    this.held.set(job.id, held);
    this.deps.stats.jobsReceived += 1;
    void this.execute(held);
  }

  private async execute(held: Held): Promise<void> {
    const { slots } = this.deps;
    // The server honours our credit; the shared slots also count handlers that a broken
    // stream gave up on but that have not returned yet.
    await slots.acquire();
    const { hooks, log, metrics } = this.deps;
    const queue = held.job.queue;
    const started = metrics?.started(queue);
    let outcome: Outcome | undefined;
    try {
      await callHooks(hooks.beforeJob, [held.job], "beforeJob", log);
      outcome = await runJob(this.deps.handlers.get(held.job.queue), held.job, this.maxResultBytes, log);
      if (!held.abandoned) {
        await callHooks(hooks.afterJob, [held.job, outcome], "afterJob", log);
      }
    } finally {
      slots.release();
      if (started !== undefined) {
        metrics?.finished(queue, started, outcome);
      }
    }
    this.complete(held, outcome);
  }

  private cancel(jobId: string): void {
    const held = this.held.get(jobId);
    if (held === undefined) {
      this.deps.log.debug(`cancellation for job ${jobId}, which this worker no longer holds`);
      return;
    }
    this.deps.log.info(`job ${jobId} cancelled by the server`);
    held.controller.abort(new DOMException(`job ${jobId} was cancelled`, "AbortError"));
  }

  private abandon(held: Held, why: string): void {
    held.abandoned = true;
    held.controller.abort(new DOMException(`job ${held.job.id} given up: ${why}`, "AbortError"));
    this.forget(held);
  }

  private forget(held: Held): void {
    if (this.held.get(held.job.id) === held) {
      this.held.delete(held.job.id);
      if (this.held.size === 0) {
        for (const wake of this.idleWaiters.splice(0)) {
          wake();
        }
      }
    }
  }

  private complete(held: Held, outcome: Outcome): void {
    this.forget(held);
    if (held.abandoned || this.closed) {
      return;
    }
    this.pending.push({ jobId: held.job.id, leaseId: held.job.leaseId, outcome: resultOutcome(outcome) });
    // Results finishing in the same event-loop turn share one message: setImmediate runs
    // after every promise continuation and I/O callback already due in this turn.
    this.flushHandle ??= setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushHandle = undefined;
    if (this.pending.length === 0) {
      return;
    }
    const results = this.pending;
    this.pending = [];
    for (const part of splitResults(results, this.maxResultBytes)) {
      if (!this.write({ kind: { $case: "results", value: { results: part } } })) {
        this.deps.log.info(`could not send ${results.length} results: the stream is closed`);
        return;
      }
      this.deps.stats.resultsSent += part.length;
      this.deps.stats.resultMessages += 1;
    }
  }

  // Progress reports (ReceivedJob.reportProgress): the latest per job, sent at most every
  // PROGRESS_EVERY_MS, so the server's one-report-per-job-per-200-ms limit never drops the last.
  private progress = new Map<string, ProgressReport>();
  private progressTimer: NodeJS.Timeout | undefined;

  private queueProgress(jobId: string, leaseId: string, percent: number | undefined, message: string): void {
    this.progress.set(jobId, { jobId, leaseId, percent, message });
    if (this.progressTimer === undefined) {
      this.sendProgress();
    }
  }

  private sendProgress(): void {
    this.progressTimer = undefined;
    if (this.progress.size === 0 || this.closed) {
      return;
    }
    const reports = [...this.progress.values()];
    this.progress.clear();
    if (this.write({ kind: { $case: "progress", value: { reports } } })) {
      this.progressTimer = setTimeout(() => this.sendProgress(), PROGRESS_EVERY_MS);
      this.progressTimer.unref();
    }
  }

  private heartbeat(): void {
    // An empty lease list extends every lease this stream holds.
    if (this.held.size > 0 && this.write({ kind: { $case: "heartbeat", value: { leaseIds: [] } } })) {
      this.deps.stats.heartbeatsSent += 1;
    }
  }

  /** Write unless the stream is done; false when it is (the status says why). */
  private write(request: WorkRequest): boolean {
    const call = this.call;
    if (call === undefined || this.closed || this.ended.isSet || !call.writable) {
      return false;
    }
    // grpc-js buffers writes; the stream is bounded by our credit and by result sizes.
    try {
      call.write(request);
    } catch (e) {
      this.deps.log.debug(`write of ${request.kind?.$case} failed: ${e instanceof Error ? e.message : String(e)}`);
      return false;
    }
    return true;
  }

  /** Stop taking jobs, finish the held ones, send their results, close our side. */
  private async drain(call: Call): Promise<void> {
    const { log, force } = this.deps;
    this.deps.onDrain();
    const why = this.drainNotice !== undefined ? "server drain notice" : "stop requested";
    log.info(`draining (${why}); ${this.held.size} jobs held`);
    this.write({ kind: { $case: "credit", value: { maxInFlight: 0 } } });
    if (!(await this.waitIdle(this.drainTimeoutMs(), force))) {
      log.warn(`drain: giving up on ${this.held.size} unfinished jobs`);
      for (const held of [...this.held.values()]) {
        this.abandon(held, "the drain ran out of time");
      }
    }
    if (this.flushHandle !== undefined) {
      clearImmediate(this.flushHandle);
      this.flush();
    }
    clearTimeout(this.heartbeatTimer);
    if (!this.ended.isSet) {
      call.end(); // writes stop here: the call is no longer writable
      // Let the server end the stream, so the results just sent are not cut off.
      await sleepUnless(CLOSE_TIMEOUT_MS, this.ended);
    }
  }

  /** Milliseconds until the server's drain deadline; undefined for a local stop. */
  private drainTimeoutMs(): number | undefined {
    const deadline = this.drainNotice?.deadline;
    return deadline === undefined ? undefined : Math.max(0, deadline.getTime() - Date.now());
  }

  /** Wait until no job is held; give up after `limitMs`, when forced, or when the stream ends. */
  private async waitIdle(limitMs: number | undefined, force: Latch): Promise<boolean> {
    if (this.held.size > 0) {
      const idle = new Promise<void>((resolve) => this.idleWaiters.push(resolve));
      const giveUp = new Latch();
      const timer = limitMs === undefined ? undefined : setTimeout(() => giveUp.set(), limitMs);
      try {
        await Promise.race([idle, giveUp.promise, force.promise, this.ended.promise]);
      } finally {
        clearTimeout(timer);
      }
    }
    return this.held.size === 0;
  }

  /** Give up held jobs, stop timers, cut the call. Runs however the stream ended. */
  private close(call: Call): void {
    this.closed = true;
    clearTimeout(this.heartbeatTimer);
    if (this.flushHandle !== undefined) {
      clearImmediate(this.flushHandle);
      this.flushHandle = undefined;
    }
    if (this.held.size > 0) {
      this.deps.log.info(`stream closed; giving up ${this.held.size} held jobs (the server re-queues them)`);
      for (const held of [...this.held.values()]) {
        this.abandon(held, "the stream to the server closed");
      }
    }
    for (const wake of this.idleWaiters.splice(0)) {
      wake();
    }
    call.cancel();
  }
}

/** A job's outcome as JobResult.outcome: the output, the error, or the throttle signal. */
function resultOutcome(outcome: Outcome): NonNullable<JobResult["outcome"]> {
  if ("output" in outcome) {
    return { $case: "output", value: outcome.output };
  }
  if (outcome.throttled !== undefined) {
    return { $case: "throttled", value: throttleToProto(outcome.throttled) };
  }
  return { $case: "error", value: outcome.error };
}
