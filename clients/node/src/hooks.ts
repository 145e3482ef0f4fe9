/**
 * Worker hooks, the Python Worker's `on_start`, `on_stop`, `before_job` and `after_job` with
 * TypeScript names: `onStart` runs once when a run starts (before connecting), `onStop` once
 * when it ends however it ends, `beforeJob(job)` before each handler, `afterJob(job, outcome)`
 * after each job with the outcome about to be reported (a cancelled job's too; not a job a
 * broken stream gave up on: nothing is reported for it). Hooks run in registration order, may
 * be async (they are awaited), and a hook that throws is logged and skipped: a metrics hook
 * must not fail jobs.
 */

import type { Logger } from "./log";
import type { Outcome } from "./runner";
import type { ReceivedJob } from "./types";

export type StartStopHook = () => void | Promise<void>;
export type BeforeJobHook = (job: ReceivedJob) => void | Promise<void>;
export type AfterJobHook = (job: ReceivedJob, outcome: Outcome) => void | Promise<void>;

/** The hooks registered on a Worker, in registration order. */
export class Hooks {
  readonly onStart: StartStopHook[] = [];
  readonly onStop: StartStopHook[] = [];
  readonly beforeJob: BeforeJobHook[] = [];
  readonly afterJob: AfterJobHook[] = [];
}

/** Call each hook with `args`, awaiting it; log and skip failures. */
export async function callHooks<A extends unknown[]>(
  hooks: ReadonlyArray<(...args: A) => void | Promise<void>>,
  args: A,
  what: string,
  log: Logger,
): Promise<void> {
  for (const hook of hooks) {
    try {
      await hook(...args);
    } catch (e) {
      log.warn(
        `${what} hook ${hook.name || "(anonymous)"} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`,
      );
    }
  }
}
