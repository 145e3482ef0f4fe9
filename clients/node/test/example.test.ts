/** The runnable example works against a real server, and the README shows it as it is. */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { DispatchdProcess, REPO_ROOT } from "./server";

const TIMEOUT = { timeout: 30_000 };
const EXAMPLE = path.join(REPO_ROOT, "clients", "node", "examples", "quickstart.ts");
const COMPILED = path.join(REPO_ROOT, "clients", "node", "dist", "examples", "quickstart.js");

describe("examples/quickstart", () => {
  let server: DispatchdProcess;

  before(async () => {
    server = await DispatchdProcess.start();
  });

  after(async () => {
    await server?.kill();
  });

  it("runs and prints the finished job", TIMEOUT, async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [COMPILED, server.target], { timeout: 20_000 });
    assert.equal(stdout.trim(), "SUCCEEDED sent hello (attempt 1)");
  });

  it("is what the README shows", () => {
    const readme = readFileSync(path.join(REPO_ROOT, "README.md"), "utf8");
    const section = readme.split("## Quickstart (Node.js)")[1] ?? "";
    const block = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
    assert.ok(block, "README has no ts block under Quickstart (Node.js)");
    assert.ok(readFileSync(EXAMPLE, "utf8").endsWith(block), "README and examples/quickstart.ts differ");
  });
});
