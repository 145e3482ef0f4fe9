/**
 * `node dist/bench/coalescing.js [--producers 50] [--jobs 20000] [--warmup 2000] [--runs 3]`:
 * submit throughput through the Node `Client`, with its submit() coalescing on (the default)
 * and off (`make node-build` first; it runs the repository's .venv server like the tests do).
 *
 * Method: the real server runs as a child process (journal off: `--durability none`, metrics
 * on). This process runs `producers` async producers on one shared Client, each awaiting
 * `submit()` for one job at a time until `jobs` jobs in all are admitted; no worker runs, so
 * the figure is the producer side of the per-job path alone. Every run gets a fresh server and
 * a warm-up first; the two modes alternate, `runs` times each, and the medians are printed per
 * mode (jobs/s over the wall clock, server CPU microseconds per job from /proc/<pid>/stat, and
 * the RPCs that carried the jobs from the server's own dispatchd_grpc_requests_total), with
 * the coalesced figures as ratios of the plain ones.
 */

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { Client } from "../src";
import { DispatchdProcess } from "../test/server";

const MODES = ["one-submit-per-call", "coalesced"] as const;
/** Kernel clock ticks per second (USER_HZ), 100 on every Linux this runs on. */
const CLK_TCK = 100;

interface Run {
  jobsPerS: number;
  serverCpuUsPerJob: number;
  rpcs: number;
}

/** utime + stime of `pid` in seconds, every thread included. */
function cpuSeconds(pid: number): number {
  const raw = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = raw.slice(raw.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

async function submitRpcs(server: DispatchdProcess): Promise<number> {
  const calls = /^dispatchd_grpc_requests_total\{[^}]*method="Submit(?:Batch)?"[^}]*code="OK"[^}]*\} (\S+)$/;
  let total = 0;
  for (const line of (await server.scrape()).split("\n")) {
    const match = calls.exec(line);
    total += match ? Number(match[1]) : 0;
  }
  return total;
}

async function produce(client: Client, producers: number, jobs: number): Promise<void> {
  const payload = Buffer.alloc(16, "x");
  await Promise.all(
    Array.from({ length: producers }, async (_, i) => {
      const n = Math.floor(jobs / producers) + (i < jobs % producers ? 1 : 0);
      for (let j = 0; j < n; j++) {
        await client.submit("bench", payload);
      }
    }),
  );
}

async function measure(mode: (typeof MODES)[number], producers: number, jobs: number, warmup: number): Promise<Run> {
  const server = await DispatchdProcess.start({
    args: ["--durability", "none", "--metrics-listen", "127.0.0.1:0", "--log-level", "info"],
  });
  const client = new Client(server.target, { coalesce: mode === "coalesced" });
  try {
    const pid = server.pid!;
    await produce(client, producers, warmup);
    const rpcs0 = await submitRpcs(server);
    const cpu0 = cpuSeconds(pid);
    const t0 = process.hrtime.bigint();
    await produce(client, producers, jobs);
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = cpuSeconds(pid) - cpu0;
    const rpcs = (await submitRpcs(server)) - rpcs0;
    return { jobsPerS: Math.round(jobs / wall), serverCpuUsPerJob: Math.round((cpu / jobs) * 1e7) / 10, rpcs };
  } finally {
    client.close();
    await server.kill();
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      producers: { type: "string", default: "50" },
      jobs: { type: "string", default: "20000" },
      warmup: { type: "string", default: "2000" },
      runs: { type: "string", default: "3" },
    },
  });
  const [producers, jobs, warmup, count] = [values.producers, values.jobs, values.warmup, values.runs].map(Number);
  const runs: Record<string, Run[]> = { [MODES[0]]: [], [MODES[1]]: [] };
  for (let i = 0; i < count!; i++) {
    for (const mode of MODES) {
      // Alternating, so drifting machine load hits both modes alike.
      runs[mode]!.push(await measure(mode, producers!, jobs!, warmup!));
    }
  }
  const medians = Object.fromEntries(
    MODES.map((mode) => {
      const rs = runs[mode]!;
      return [
        mode,
        {
          jobsPerS: median(rs.map((r) => r.jobsPerS)),
          serverCpuUsPerJob: median(rs.map((r) => r.serverCpuUsPerJob)),
          rpcs: median(rs.map((r) => r.rpcs)),
        },
      ];
    }),
  );
  const [plain, coalesced] = [medians[MODES[0]]!, medians[MODES[1]]!];
  const ratio = (a: number, b: number): number => Math.round((a / b) * 100) / 100;
  const report = {
    client: "Node Client (promises)",
    producers,
    jobs,
    runs,
    medians,
    coalescedVsPlain: {
      jobsPerS: ratio(coalesced.jobsPerS, plain.jobsPerS),
      serverCpuUsPerJob: ratio(coalesced.serverCpuUsPerJob, plain.serverCpuUsPerJob),
    },
  };
  console.log(JSON.stringify(report, null, 2));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
