/**
 * Test helpers: a real dispatchd server as a subprocess (stopped by pid), and polling with a
 * deadline instead of fixed sleeps.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { get } from "node:http";
import { tmpdir } from "node:os";
import * as path from "node:path";

/** The repository root, from dist/test/ (compiled) or test/ (source). */
export const REPO_ROOT = path.resolve(
  __dirname,
  __dirname.includes(`${path.sep}dist${path.sep}`) ? "../../../.." : "../../..",
);
/** The Python that runs dispatchd: $DISPATCHD_PYTHON, else the repository's .venv. */
export const PYTHON = process.env.DISPATCHD_PYTHON ?? path.join(REPO_ROOT, ".venv", "bin", "python");
const SERVING = /dispatchd serving on [^:\s]+:(\d+)/;
const METRICS = /metrics on http:\/\/[^:\s]+:(\d+)\/metrics/;
const START_TIMEOUT_MS = 20_000;

export interface StartOptions {
  /** host:port to listen on; default a free port on 127.0.0.1. */
  listen?: string;
  /** Extra server flags. */
  args?: string[];
}

export class DispatchdProcess {
  readonly dataDir: string;
  private readonly proc: ChildProcess;
  private lines: string[] = [];
  private readonly exited: Promise<number | null>;
  port = 0;

  private constructor(options: StartOptions) {
    this.dataDir = mkdtempSync(path.join(tmpdir(), "dispatchd-node-test-"));
    const listen = options.listen ?? "127.0.0.1:0";
    const args = options.args ?? [];
    this.proc = spawn(
      PYTHON,
      [
        "-m",
        "dispatchd",
        "--listen",
        listen,
        "--data-dir",
        this.dataDir,
        "--log-level",
        "info",
        "--metrics-listen",
        "0",
        "--http-listen", // the dashboard off: tests start several servers at once
        "0",
        ...args,
      ],
      { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, PYTHONUNBUFFERED: "1" } },
    );
    this.exited = new Promise((resolve) => this.proc.once("exit", (code) => resolve(code)));
  }

  /** Start a server (with its own temporary data dir) and wait until it serves. */
  static async start(options: StartOptions = {}): Promise<DispatchdProcess> {
    const server = new DispatchdProcess(options);
    server.port = await server.waitServing();
    return server;
  }

  /** The server's process id (for reading its CPU time from /proc). */
  get pid(): number | undefined {
    return this.proc.pid;
  }

  get target(): string {
    return `127.0.0.1:${this.port}`;
  }

  get log(): string {
    return this.lines.join("");
  }

  private waitServing(): Promise<number> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`dispatchd did not start:\n${this.log}`)), START_TIMEOUT_MS);
      this.proc.stderr?.setEncoding("utf8");
      this.proc.stderr?.on("data", (chunk: string) => {
        this.lines.push(chunk);
        const match = SERVING.exec(this.log);
        if (match && this.port === 0) {
          clearTimeout(timer);
          resolve(Number(match[1]));
        }
      });
      this.proc.once("error", (e) => {
        clearTimeout(timer);
        reject(new Error(`cannot run ${PYTHON} (set DISPATCHD_PYTHON or run \`make install\`): ${e.message}`));
      });
      void this.exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`dispatchd exited with ${code} before serving:\n${this.log}`));
      });
    });
  }

  /**
   * The port of the server's /metrics endpoint, read from its log; start the server with
   * `args: ["--metrics-listen", "127.0.0.1:0"]` (the default here is metrics off).
   */
  async metricsPort(): Promise<number> {
    let port = 0;
    await eventually(() => {
      port = Number(METRICS.exec(this.log)?.[1] ?? 0);
      return port > 0;
    }, "the metrics port in the server log");
    return port;
  }

  /** The text of the server's /metrics page, as Prometheus would scrape it. */
  async scrape(): Promise<string> {
    const port = await this.metricsPort();
    return new Promise((resolve, reject) => {
      get({ host: "127.0.0.1", port, path: "/metrics" }, (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (body += chunk));
        res.on("end", () => resolve(body));
        res.on("error", reject);
      }).on("error", reject);
    });
  }

  /** Send SIGTERM (a drain) to the server's pid. */
  terminate(): void {
    if (this.proc.pid !== undefined) {
      process.kill(this.proc.pid, "SIGTERM");
    }
  }

  /** The exit code, once the process ended. */
  wait(): Promise<number | null> {
    return this.exited;
  }

  /** Kill the server by pid (SIGKILL, a crash), keeping its data dir for a restart. */
  async crash(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null && this.proc.pid !== undefined) {
      process.kill(this.proc.pid, "SIGKILL");
    }
    await this.exited;
  }

  /** Kill the server by pid (if still running) and remove its data dir. */
  async kill(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null && this.proc.pid !== undefined) {
      process.kill(this.proc.pid, "SIGKILL");
    }
    await this.exited;
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** Poll `check` until it is true or `withinMs` passes. */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  what: string,
  withinMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + withinMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${withinMs} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A promise with its resolve function, to hold handlers until a test lets them go. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open = (): void => {};
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}
