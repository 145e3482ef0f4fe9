/**
 * The worker: register a handler per queue, then `await worker.run()`.
 *
 * ```ts
 * const worker = new Worker("dispatchd:50051", { concurrency: 4 });
 * worker.handle("thumbnails", async (job) => render(job.payload, { signal: job.signal }));
 * await worker.run(); // until SIGTERM/SIGINT or a server drain
 * ```
 *
 * The worker keeps one `Work` stream open and reconnects with jittered exponential backoff
 * when it breaks; jobs held on a broken stream are given up (their signals are
 * aborted), since the server re-queues them when the stream dies. Stopping is always graceful
 * first: take no more jobs, finish the held ones, send their results, close the stream. A
 * second SIGINT/SIGTERM (or `stop({ force: true })`) abandons whatever is still running.
 *
 * Hooks (`onStart`, `onStop`, `beforeJob`, `afterJob`) are the Python Worker's; hooks.ts
 * says when each runs.
 *
 * The stream protocol lives in session.ts and the handler rules in runner.ts; this module
 * owns the lifecycle.
 */

import * as grpc from "@grpc/grpc-js";
import { status as Status } from "@grpc/grpc-js";
import { type Connection, type ConnectionOptions, connect } from "./channel";
import { DispatchdError } from "./errors";
import type { WorkerWelcome } from "./gen/dispatchd/v1/dispatcher";
import { type AfterJobHook, type BeforeJobHook, Hooks, type StartStopHook, callHooks } from "./hooks";
import { type Logger, defaultLogger } from "./log";
import type { WorkerMetrics } from "./metrics";
import { DEFAULT_TARGET, KEEPALIVE_MS, KEEPALIVE_TIMEOUT_MS } from "./requests";
import type { Handler } from "./runner";
import { Session, type WorkerStats } from "./session";
import { Latch, Semaphore, backoffDelay, sleepUnless } from "./util";

/**
 * Answers that mean "this worker is refused": `run()` rejects with them. Any other status
 * ends the stream as broken and the worker reconnects: a crashed server may be reported as
 * INTERNAL or UNKNOWN rather than UNAVAILABLE.
 */
export const REFUSALS: ReadonlySet<Status> = new Set([
  Status.INVALID_ARGUMENT,
  Status.FAILED_PRECONDITION,
  Status.UNAUTHENTICATED,
  Status.PERMISSION_DENIED,
  Status.UNIMPLEMENTED,
  Status.NOT_FOUND,
  Status.OUT_OF_RANGE,
]);
/** First reconnect delay; doubles per failed attempt up to `reconnectMaxBackoffMs`. */
const RECONNECT_BASE_MS = 100;
const MAX_CONCURRENCY = 10_000;

/** Connection options (`tls`, `token`, `credentials`, `channelOptions`) and the worker's. */
export interface WorkerOptions extends ConnectionOptions {
  /** A name for people and logs; empty: the server makes one up. */
  workerId?: string;
  /** Most jobs held at once (announced as max_in_flight). Default 8. */
  concurrency?: number;
  /** Free-form labels (host, version) shown to operators. */
  labels?: Record<string, string>;
  /** Cap of the reconnect backoff. Default 5 s. */
  reconnectMaxBackoffMs?: number;
  /**
   * How long the stream may stay quiet before the Worker pings the server (at least 1 s);
   * without an answer within `keepaliveTimeoutMs` it reconnects. Defaults 20 s and 10 s.
   */
  keepaliveMs?: number;
  keepaliveTimeoutMs?: number;
  logger?: Logger;
  /** Prometheus metrics of this worker (see metrics.ts), opt-in with prom-client. */
  metrics?: WorkerMetrics;
}

export interface RunOptions {
  /**
   * Stop gracefully on SIGTERM/SIGINT (a second one forces) while running. Default true; turn
   * it off when the application handles signals itself and calls `stop()`.
   */
  handleSignals?: boolean;
}

export class Worker {
  private readonly target: string;
  private readonly requestedId: string;
  private readonly concurrency: number;
  private readonly labels: Record<string, string>;
  private readonly maxBackoffMs: number;
  private readonly connection: ConnectionOptions;
  private readonly reconnectOptions: grpc.ChannelOptions;
  private readonly log: Logger;
  private readonly metrics: WorkerMetrics | undefined;
  private readonly handlers = new Map<string, Handler>();
  private readonly hooks = new Hooks();
  private currentId: string;
  private running = false;
  private isConnected = false;
  private isDraining = false;
  // Per-run state, replaced when a run ends so the Worker can run again.
  private stopLatch = new Latch();
  private forceLatch = new Latch();
  private connectedWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  /** Counters since the Worker was made. */
  readonly stats: WorkerStats = {
    jobsReceived: 0,
    resultsSent: 0,
    resultMessages: 0,
    heartbeatsSent: 0,
    rejections: 0,
    reconnects: 0,
  };

  constructor(target: string = DEFAULT_TARGET, options: WorkerOptions = {}) {
    const concurrency = options.concurrency ?? 8;
    if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > MAX_CONCURRENCY) {
      throw new RangeError(`concurrency must be an integer 1-${MAX_CONCURRENCY}`);
    }
    const maxBackoffMs = options.reconnectMaxBackoffMs ?? 5_000;
    if (!(maxBackoffMs > 0)) {
      throw new RangeError("reconnectMaxBackoffMs must be > 0");
    }
    this.target = target;
    this.requestedId = options.workerId ?? "";
    this.currentId = this.requestedId;
    this.concurrency = concurrency;
    this.labels = { ...options.labels };
    this.maxBackoffMs = maxBackoffMs;
    this.connection = options;
    // gRPC's own reconnect backoff starts at 1 s and grows to 120 s: a worker would sit idle
    // long after a restarted server is back. Keep it within the worker's own backoff.
    const keepaliveMs = options.keepaliveMs ?? KEEPALIVE_MS;
    if (!(keepaliveMs >= 1_000)) {
      throw new RangeError("keepaliveMs must be >= 1000 (the server refuses more frequent pings)");
    }
    this.reconnectOptions = {
      "grpc.initial_reconnect_backoff_ms": RECONNECT_BASE_MS,
      "grpc.max_reconnect_backoff_ms": Math.max(RECONNECT_BASE_MS, Math.round(maxBackoffMs)),
      "grpc.keepalive_time_ms": keepaliveMs,
      "grpc.keepalive_timeout_ms": options.keepaliveTimeoutMs ?? KEEPALIVE_TIMEOUT_MS,
    };
    this.log = options.logger ?? defaultLogger;
    this.metrics = options.metrics;
  }

  /** Register the handler of `queue` (one per queue). Returns the worker, for chaining. */
  handle(queue: string, handler: Handler): this {
    if (!queue) {
      throw new TypeError("queue name must not be empty");
    }
    if (this.handlers.has(queue)) {
      throw new Error(`queue ${JSON.stringify(queue)} already has a handler`);
    }
    if (this.running) {
      throw new Error("cannot add handlers while the worker runs");
    }
    this.handlers.set(queue, handler);
    return this;
  }

  /** Call `hook()` once when a run starts, before connecting. Returns the worker. */
  onStart(hook: StartStopHook): this {
    this.hooks.onStart.push(hook);
    return this;
  }

  /** Call `hook()` once when a run ends, however it ends. Returns the worker. */
  onStop(hook: StartStopHook): this {
    this.hooks.onStop.push(hook);
    return this;
  }

  /** Call `hook(job)` before each handler runs. Returns the worker. */
  beforeJob(hook: BeforeJobHook): this {
    this.hooks.beforeJob.push(hook);
    return this;
  }

  /**
   * Call `hook(job, outcome)` after each job; `outcome` is `{ output }` or `{ error }`, what
   * is about to be reported. Returns the worker.
   */
  afterJob(hook: AfterJobHook): this {
    this.hooks.afterJob.push(hook);
    return this;
  }

  /** The queues this worker serves, sorted. */
  get queues(): string[] {
    return [...this.handlers.keys()].sort();
  }

  /** The id the server knows this worker by (from the latest welcome). */
  get workerId(): string {
    return this.currentId;
  }

  /** True while a stream is open and welcomed. */
  get connected(): boolean {
    return this.isConnected;
  }

  /** True from the moment a drain begins (server notice or stop) until the run ends. */
  get draining(): boolean {
    return this.isDraining;
  }

  /**
   * Resolve once the server has welcomed this worker; reject after `timeoutMs`, or when the
   * run ends first (so a caller fails fast instead of waiting out its timeout).
   */
  waitConnected(timeoutMs?: number): Promise<void> {
    if (this.isConnected) {
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              this.connectedWaiters = this.connectedWaiters.filter((w) => w !== waiter);
              reject(new Error(`worker not connected after ${timeoutMs} ms`));
            }, timeoutMs);
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.connectedWaiters.push(waiter);
    });
  }

  /**
   * Ask the running worker to stop; await `run()` to know when it is done. Graceful: no new
   * jobs, held jobs finish and report. `force`, or a second stop, abandons held jobs instead.
   * Calling it before `run()` makes the next run return as soon as it starts.
   */
  stop(options: { force?: boolean } = {}): void {
    if (options.force || this.stopLatch.isSet) {
      this.forceLatch.set();
    }
    this.stopLatch.set();
  }

  /**
   * Serve jobs until stopped or drained. Rejects with a DispatchdError when the server refuses
   * the worker (a code in {@link REFUSALS}, e.g. INVALID_ARGUMENT for a bad queue name); any
   * other broken stream only reconnects.
   */
  async run(options: RunOptions = {}): Promise<void> {
    if (this.handlers.size === 0) {
      throw new Error("register at least one handler before running the worker");
    }
    if (this.running) {
      throw new Error("worker is already running");
    }
    this.running = true;
    const removeSignals = (options.handleSignals ?? true) ? this.installSignalHandlers() : () => {};
    let connection: Connection | undefined;
    try {
      await callHooks(this.hooks.onStart, [], "onStart", this.log);
      connection = connect(this.target, this.connection, this.reconnectOptions);
      await this.serve(connection);
    } finally {
      removeSignals();
      connection?.client.close();
      await callHooks(this.hooks.onStop, [], "onStop", this.log);
      this.endRun();
    }
  }

  /** Open streams until one ends by a drain or a stop is requested. */
  private async serve(connection: Connection): Promise<void> {
    const slots = new Semaphore(this.concurrency);
    const hello = {
      workerId: this.requestedId,
      queues: this.queues,
      maxInFlight: this.concurrency,
      labels: this.labels,
    };
    let attempt = 0;
    while (!this.stopLatch.isSet) {
      const session = new Session({
        connection,
        hello,
        handlers: this.handlers,
        slots,
        stop: this.stopLatch,
        force: this.forceLatch,
        onWelcome: (welcome) => this.welcomed(welcome),
        onDrain: () => (this.isDraining = true),
        hooks: this.hooks,
        stats: this.stats,
        log: this.log,
        metrics: this.metrics,
      });
      try {
        if ((await session.run()) === "drained") {
          this.log.info(`worker ${this.currentId} drained; exiting`);
          return;
        }
        this.log.info("stream ended by the server without a drain; reconnecting");
      } catch (e) {
        if (!(e instanceof DispatchdError) || REFUSALS.has(e.code) || e === session.protocolViolation) {
          throw e;
        }
        const log = e.code === Status.UNAVAILABLE ? this.log.info : this.log.warn;
        log.call(this.log, `stream broke (${e.codeName}: ${e.details}); reconnecting`);
      } finally {
        this.isConnected = false;
        this.metrics?.connected.set(0);
      }
      if (session.welcomed) {
        attempt = 0;
      }
      this.stats.reconnects += 1;
      if (!this.stopLatch.isSet) {
        this.metrics?.reconnects.inc();
      }
      await sleepUnless(backoffDelay(attempt, RECONNECT_BASE_MS, this.maxBackoffMs), this.stopLatch);
      attempt += 1;
    }
  }

  private welcomed(welcome: WorkerWelcome): void {
    this.currentId = welcome.workerId || this.currentId;
    this.isConnected = true;
    this.metrics?.connected.set(1);
    this.log.info(`connected to ${this.target} as ${this.currentId}, serving ${this.queues.join(", ")}`);
    for (const waiter of this.connectedWaiters.splice(0)) {
      waiter.resolve();
    }
  }

  private installSignalHandlers(): () => void {
    const onSignal = (signal: NodeJS.Signals): void => {
      const forcing = this.stopLatch.isSet;
      this.log.info(`${signal} received: ${forcing ? "forcing stop" : "stopping gracefully (send again to force)"}`);
      this.stop();
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
    return () => {
      process.off("SIGTERM", onSignal);
      process.off("SIGINT", onSignal);
    };
  }

  /** Wake anyone waiting on this run, then reset for a possible next run. */
  private endRun(): void {
    for (const waiter of this.connectedWaiters.splice(0)) {
      waiter.reject(new Error("worker stopped before connecting"));
    }
    this.running = false;
    this.isConnected = false;
    this.isDraining = false;
    this.stopLatch = new Latch();
    this.forceLatch = new Latch();
  }
}
