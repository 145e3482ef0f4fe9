/**
 * When the next heartbeat is due. The interval comes from the welcome, and from
 * `WorkerSettings` when the server changes it (a queue this worker serves got another lease):
 * a shorter interval applies at once, counted from the last beat, since the leases it protects
 * may already be shorter; a longer one after the next beat. Plain numbers (milliseconds on any
 * clock), so the rule is tested without timers.
 */
export class HeartbeatSchedule {
  private gapMs: number;

  constructor(
    public intervalMs: number,
    public lastMs: number,
  ) {
    this.gapMs = intervalMs;
  }

  get dueMs(): number {
    return this.lastMs + this.gapMs;
  }

  beat(nowMs: number): void {
    this.lastMs = nowMs;
    this.gapMs = this.intervalMs;
  }

  /** Takes a new interval; true when the pending beat moved earlier. */
  change(intervalMs: number): boolean {
    this.intervalMs = intervalMs;
    if (intervalMs < this.gapMs) {
      this.gapMs = intervalMs;
      return true;
    }
    return false;
  }
}
