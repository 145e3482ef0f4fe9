/**
 * Recurring schedules (docs/schedules.md): the requests of the Client's schedule methods.
 * Answers are the generated `Schedule` and `ScheduleFiring` messages (times as Dates).
 */

import * as pb from "./gen/dispatchd/v1/dispatcher";
import { type NewJob, jobSpec } from "./requests";
import { toDuration } from "./types";

export {
  FiringCause,
  FiringOutcome,
  type Schedule,
  ScheduleCatchupMode,
  type ScheduleFiring,
  ScheduleOverlapPolicy,
} from "./gen/dispatchd/v1/dispatcher";

/** When a schedule fires: cron expressions (in `timeZone`) and/or intervals, combined. */
export interface ScheduleSpecInput {
  /** 5 fields, or 6 with seconds first; one expression or several. */
  cron?: string | string[];
  /** A fixed interval in milliseconds (whole seconds), from the epoch plus `offsetMs`. */
  everyMs?: number;
  offsetMs?: number;
  /** More intervals. */
  intervals?: { everyMs: number; offsetMs?: number }[];
  /** IANA name (Europe/Berlin); UTC when empty. */
  timeZone?: string;
  startTime?: Date;
  endTime?: Date;
  jitterMs?: number;
}

/** A schedule's policies and state on create (all optional). */
export interface ScheduleOptions {
  overlap?: pb.ScheduleOverlapPolicy;
  catchupWindowMs?: number;
  catchupMode?: pb.ScheduleCatchupMode;
  paused?: boolean;
  note?: string;
}

/** What updateSchedule changes: only the keys given. */
export interface ScheduleChanges extends ScheduleOptions {
  spec?: ScheduleSpecInput;
  template?: NewJob;
}

export function specProto(input: ScheduleSpecInput): pb.ScheduleSpec {
  const cron = input.cron === undefined ? [] : typeof input.cron === "string" ? [input.cron] : input.cron;
  const intervals = [...(input.intervals ?? [])];
  if (input.everyMs !== undefined) {
    intervals.unshift({ everyMs: input.everyMs, offsetMs: input.offsetMs });
  }
  return pb.ScheduleSpec.fromPartial({
    cronExpressions: cron,
    intervals: intervals.map((i) => ({ every: toDuration(i.everyMs), offset: toDuration(i.offsetMs ?? 0) })),
    timeZone: input.timeZone ?? "",
    startTime: input.startTime,
    endTime: input.endTime,
    jitter: input.jitterMs === undefined ? undefined : toDuration(input.jitterMs),
  });
}

export function templateProto(job: NewJob): pb.JobSpec {
  if (job.delayMs !== undefined || job.notBefore !== undefined) {
    throw new TypeError("a schedule's template takes no delayMs or notBefore");
  }
  return jobSpec(job.queue, job.payload, job);
}

export function createScheduleRequest(
  id: string,
  spec: ScheduleSpecInput,
  template: NewJob,
  options: ScheduleOptions,
): pb.CreateScheduleRequest {
  return pb.CreateScheduleRequest.fromPartial({
    schedule: {
      id,
      spec: specProto(spec),
      template: templateProto(template),
      policies: {
        overlap: options.overlap ?? pb.ScheduleOverlapPolicy.SCHEDULE_OVERLAP_POLICY_SKIP,
        catchupWindow: toDuration(options.catchupWindowMs ?? 3_600_000),
        catchupMode: options.catchupMode ?? pb.ScheduleCatchupMode.SCHEDULE_CATCHUP_MODE_ALL,
      },
      paused: options.paused ?? false,
      note: options.note ?? "",
    },
  });
}

export function updateScheduleRequest(id: string, changes: ScheduleChanges): pb.UpdateScheduleRequest {
  const schedule = pb.Schedule.fromPartial({ id, policies: {} });
  const policies = schedule.policies as pb.SchedulePolicies;
  const paths: string[] = [];
  if (changes.spec !== undefined) {
    schedule.spec = specProto(changes.spec);
    paths.push("spec");
  }
  if (changes.template !== undefined) {
    schedule.template = templateProto(changes.template);
    paths.push("template");
  }
  if (changes.overlap !== undefined) {
    policies.overlap = changes.overlap;
    paths.push("policies.overlap");
  }
  if (changes.catchupWindowMs !== undefined) {
    policies.catchupWindow = toDuration(changes.catchupWindowMs);
    paths.push("policies.catchup_window");
  }
  if (changes.catchupMode !== undefined) {
    policies.catchupMode = changes.catchupMode;
    paths.push("policies.catchup_mode");
  }
  if (changes.paused !== undefined) {
    schedule.paused = changes.paused;
    paths.push("paused");
  }
  if (changes.note !== undefined) {
    schedule.note = changes.note;
    paths.push("note");
  }
  if (paths.length === 0) {
    throw new TypeError("updateSchedule needs at least one thing to change");
  }
  return { schedule, updateMask: paths };
}
