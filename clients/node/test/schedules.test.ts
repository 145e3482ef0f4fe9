/** The Client's schedule methods against a real dispatchd subprocess. */

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  AlreadyExistsError,
  Client,
  FiringCause,
  FiringOutcome,
  NotFoundError,
  ScheduleCatchupMode,
  ScheduleOverlapPolicy,
} from "../src";
import { DispatchdProcess } from "./server";

const TIMEOUT = { timeout: 30_000 };

describe("Client schedules", () => {
  let server: DispatchdProcess;
  let client: Client;

  before(async () => {
    server = await DispatchdProcess.start();
    client = new Client(server.target);
  });

  after(async () => {
    client?.close();
    await server?.kill();
  });

  it("creates, reads, lists, changes, pauses, resumes and deletes", TIMEOUT, async () => {
    const made = await client.createSchedule(
      "n.nightly",
      { cron: "30 2 * * *", timeZone: "Europe/Berlin" },
      { queue: "n.reports", payload: "build", priority: 2, ttlMs: 600_000 },
      { overlap: ScheduleOverlapPolicy.SCHEDULE_OVERLAP_POLICY_BUFFER_ONE, note: "reports" },
    );
    assert.deepEqual(made.spec?.cronExpressions, ["30 2 * * *"]);
    assert.equal(made.template?.queue, "n.reports");
    assert.equal(made.nextFireTimes.length, 10);
    assert.ok(made.nextFireTimes[0] instanceof Date);
    await assert.rejects(
      client.createSchedule("n.nightly", { everyMs: 1000 }, { queue: "n.reports" }),
      AlreadyExistsError,
    );
    await client.createSchedule("n.beat", { everyMs: 3_600_000 }, { queue: "n.pings" }, { paused: true });
    const ids: string[] = [];
    for await (const s of client.listSchedules({ pageSize: 1 })) {
      ids.push(s.id);
    }
    assert.deepEqual(
      ids.filter((i) => i.startsWith("n.")),
      ["n.beat", "n.nightly"],
    );
    const changed = await client.updateSchedule("n.nightly", {
      catchupMode: ScheduleCatchupMode.SCHEDULE_CATCHUP_MODE_LATEST,
    });
    assert.equal(changed.policies?.overlap, ScheduleOverlapPolicy.SCHEDULE_OVERLAP_POLICY_BUFFER_ONE);
    assert.equal(changed.policies?.catchupMode, ScheduleCatchupMode.SCHEDULE_CATCHUP_MODE_LATEST);
    const paused = await client.pauseSchedule("n.nightly", "holiday");
    assert.equal(paused.paused, true);
    assert.equal(paused.note, "holiday");
    assert.equal((await client.resumeSchedule("n.nightly")).paused, false);
    await client.deleteSchedule("n.beat");
    await assert.rejects(client.getSchedule("n.beat"), NotFoundError);
  });

  it("triggers and backfills without a second job per tick", TIMEOUT, async () => {
    await client.createSchedule(
      "n.bf",
      { everyMs: 2000 },
      { queue: "n.bfq" },
      { paused: true, overlap: ScheduleOverlapPolicy.SCHEDULE_OVERLAP_POLICY_ALLOW },
    );
    const fired = await client.triggerSchedule("n.bf");
    assert.equal(fired.outcome, FiringOutcome.FIRING_OUTCOME_SUBMITTED);
    assert.equal(fired.cause, FiringCause.FIRING_CAUSE_TRIGGERED);
    const now = Math.floor(Date.now() / 1000) * 1000;
    const start = new Date(now - 20_000);
    const end = new Date(now - 11_000);
    const first = await client.backfillSchedule("n.bf", start, end);
    assert.deepEqual(
      first.map((f) => f.outcome),
      Array(5).fill(FiringOutcome.FIRING_OUTCOME_SUBMITTED),
    );
    const again = await client.backfillSchedule("n.bf", start, end);
    assert.deepEqual(
      again.map((f) => f.jobId),
      first.map((f) => f.jobId),
    );
    assert.ok(again.every((f) => f.outcome === FiringOutcome.FIRING_OUTCOME_DUPLICATE));
  });
});
