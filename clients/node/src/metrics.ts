/**
 * Opt-in Prometheus metrics of a Worker, with prom-client (an optional peer dependency: the
 * client itself never loads it). Pass the module you already use, so the families land in its
 * registry (or in the one given):
 *
 * ```ts
 * import * as prom from "prom-client";
 * const worker = new Worker("dispatchd:50051", { metrics: new WorkerMetrics(prom) });
 * // serve prom.register.metrics() on your /metrics
 * ```
 *
 * The families have the Python Worker's names (docs/observability.md):
 * `dispatchd_worker_jobs_total{queue,outcome}` (succeeded, retryable, permanent, cancelled),
 * `dispatchd_worker_job_seconds{queue}` (handler time, hooks included),
 * `dispatchd_worker_jobs_running{queue}`, `dispatchd_worker_reconnects_total`,
 * `dispatchd_worker_connected`.
 */

import type * as PromClient from "prom-client";

import type { Outcome } from "./runner";
import { CANCELLED_ERROR } from "./runner";

/** Seconds. Handlers take from milliseconds to an hour. */
export const JOB_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600];

/** The parts of prom-client this uses. */
export type PromClientModule = Pick<typeof PromClient, "Counter" | "Gauge" | "Histogram" | "register">;

export class WorkerMetrics {
  readonly jobs: PromClient.Counter<"queue" | "outcome">;
  readonly jobSeconds: PromClient.Histogram<"queue">;
  readonly running: PromClient.Gauge<"queue">;
  readonly reconnects: PromClient.Counter;
  readonly connected: PromClient.Gauge;

  /** Registers the families once in `registry` (prom-client's default one unless given). */
  constructor(prom: PromClientModule, registry: PromClient.Registry = prom.register) {
    const registers = [registry];
    this.jobs = new prom.Counter({
      name: "dispatchd_worker_jobs_total",
      help: "Jobs this worker process ran, by queue and outcome (succeeded, retryable, permanent, cancelled).",
      labelNames: ["queue", "outcome"],
      registers,
    });
    this.jobSeconds = new prom.Histogram({
      name: "dispatchd_worker_job_seconds",
      help: "Seconds each job's handler ran, hooks included.",
      labelNames: ["queue"],
      buckets: JOB_BUCKETS,
      registers,
    });
    this.running = new prom.Gauge({
      name: "dispatchd_worker_jobs_running",
      help: "Handlers running now.",
      labelNames: ["queue"],
      registers,
    });
    this.reconnects = new prom.Counter({
      name: "dispatchd_worker_reconnects_total",
      help: "Work streams that ended without a drain or stop, so the worker connected again.",
      registers,
    });
    this.connected = new prom.Gauge({
      name: "dispatchd_worker_connected",
      help: "1 while the worker has a stream the server welcomed.",
      registers,
    });
  }

  /** A handler starts; returns the start time for {@link finished}. */
  started(queue: string): bigint {
    this.running.inc({ queue });
    return process.hrtime.bigint();
  }

  finished(queue: string, start: bigint, outcome: Outcome | undefined): void {
    this.running.dec({ queue });
    this.jobSeconds.observe({ queue }, Number(process.hrtime.bigint() - start) / 1e9);
    this.jobs.inc({ queue, outcome: outcomeLabel(outcome) });
  }
}

/** The `outcome` label (undefined: the run never produced one). */
export function outcomeLabel(outcome: Outcome | undefined): string {
  if (outcome === undefined) {
    return "cancelled";
  }
  if ("output" in outcome) {
    return "succeeded";
  }
  if (outcome.error === CANCELLED_ERROR) {
    return "cancelled";
  }
  return outcome.error.retryable ? "retryable" : "permanent";
}
