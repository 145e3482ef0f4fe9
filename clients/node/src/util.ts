/** Small timing helpers shared by the client (read retries) and the worker (reconnects). */

/**
 * Exponential backoff with "equal jitter": between half and all of `baseMs * 2**attempt`.
 *
 * The jitter keeps many clients that lost the same server from retrying in lockstep; the
 * lower bound keeps the delay from collapsing to zero.
 */
export function backoffDelay(attempt: number, baseMs: number, capMs?: number): number {
  let delay = baseMs * 2 ** Math.min(attempt, 30);
  if (capMs !== undefined) {
    delay = Math.min(delay, capMs);
  }
  return delay / 2 + Math.random() * (delay / 2);
}

/** A one-shot flag that can be awaited: set once, and every waiter (past or future) wakes. */
export class Latch {
  private done = false;
  private readonly waiters: Array<() => void> = [];
  readonly promise: Promise<void>;

  constructor() {
    this.promise = new Promise((resolve) => this.waiters.push(resolve));
  }

  get isSet(): boolean {
    return this.done;
  }

  set(): void {
    if (this.done) {
      return;
    }
    this.done = true;
    for (const wake of this.waiters.splice(0)) {
      wake();
    }
  }
}

/**
 * Resolve after `ms`, or as soon as `wake` is set; true when the time ran out. The timer is
 * cleared either way, so an early wake leaves nothing that keeps the process alive.
 */
export async function sleepUnless(ms: number, wake: Latch): Promise<boolean> {
  if (wake.isSet) {
    return false;
  }
  let timer: NodeJS.Timeout | undefined;
  const elapsed = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(true), ms);
  });
  try {
    return await Promise.race([elapsed, wake.promise.then(() => false)]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolve after `ms`; reject with the signal's reason as soon as it is aborted. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Counts free places; `acquire` waits in FIFO order when there is none. */
export class Semaphore {
  private readonly waiting: Array<() => void> = [];

  constructor(private free: number) {}

  async acquire(): Promise<void> {
    if (this.free > 0) {
      this.free -= 1;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  release(): void {
    const next = this.waiting.shift();
    if (next !== undefined) {
      next(); // the place passes straight to the next waiter
    } else {
      this.free += 1;
    }
  }
}
