/** TLS and bearer tokens: the Client and the Worker against servers that require them. */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import {
  Client,
  JobState,
  PermissionDeniedError,
  UnauthenticatedError,
  UnavailableError,
  Worker,
  type TlsOptions,
} from "../src";
import { DispatchdProcess, PYTHON, REPO_ROOT } from "./server";

const TIMEOUT = { timeout: 30_000 };
const TOKENS = { admin: "admin-7f3c9a1e5b2d8c4f", submit: "submit-2b8e4d6a0c1f9e3b", work: "work-5c3a9e1d7b4f2a6c" };

/** A throwaway CA and server certificate for 127.0.0.1, made by the Python tests' helper. */
function makePki(dir: string): void {
  const code = "import sys; from pathlib import Path; from tests.pki import make_pki; make_pki(Path(sys.argv[1]))";
  execFileSync(PYTHON, ["-c", code, dir], { cwd: REPO_ROOT });
}

describe("Security", () => {
  let dir: string;
  let tokensFile: string;
  let tls: TlsOptions;
  const servers: DispatchdProcess[] = [];
  const clients: Client[] = [];

  function client(target: string, options: ConstructorParameters<typeof Client>[1]): Client {
    const c = new Client(target, { retryUnavailable: 0, ...options });
    clients.push(c);
    return c;
  }

  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), "dispatchd-node-pki-"));
    makePki(dir);
    // The certificate names 127.0.0.1 and localhost; TLS wants a host name to check, not an IP.
    tls = { rootCertificates: readFileSync(path.join(dir, "ca.crt")), serverName: "localhost" };
    tokensFile = path.join(dir, "tokens");
    writeFileSync(
      tokensFile,
      Object.entries(TOKENS)
        .map(([role, token]) => `${role} ${token} node-${role}\n`)
        .join(""),
    );
  });

  after(async () => {
    for (const c of clients) {
      c.close();
    }
    for (const server of servers) {
      await server.kill();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it("speaks TLS with tokens as call credentials, per role", TIMEOUT, async () => {
    const server = await DispatchdProcess.start({
      args: ["--tls-cert", path.join(dir, "server.crt"), "--tls-key", path.join(dir, "server.key")].concat(
        "--auth-tokens",
        tokensFile,
      ),
    });
    servers.push(server);
    const submitter = client(server.target, { tls, token: TOKENS.submit });
    const admin = client(server.target, { tls, token: TOKENS.admin });

    await assert.rejects(client(server.target, {}).submit("s.tls"), UnavailableError, "plaintext to a TLS server");
    await assert.rejects(client(server.target, { tls }).submit("s.tls"), UnauthenticatedError);
    const job = await submitter.submit("s.tls", "secret");
    await assert.rejects(submitter.getQueue("s.tls"), PermissionDeniedError, "queues are an operator's");

    const worker = new Worker(server.target, { tls, token: TOKENS.work }).handle("s.tls", (j) => `got ${j.payload}`);
    const done = worker.run({ handleSignals: false });
    try {
      const finished = await submitter.wait(job.id, 10_000);
      assert.equal(finished.state, JobState.SUCCEEDED);
      assert.equal(finished.result.toString(), "got secret");
      assert.equal((await admin.getQueue("s.tls")).workerCount, 1);
    } finally {
      worker.stop();
      await done;
    }
  });

  it("puts the token in a header on a plaintext channel, and a refused worker gives up", TIMEOUT, async () => {
    const server = await DispatchdProcess.start({ args: ["--auth-tokens", tokensFile] });
    servers.push(server);
    const submitter = client(server.target, { token: TOKENS.submit });
    const job = await submitter.submit("s.plain", "x");

    const refused = new Worker(server.target, { token: TOKENS.submit }).handle("s.plain", () => "no");
    await assert.rejects(refused.run({ handleSignals: false }), PermissionDeniedError);

    const worker = new Worker(server.target, { token: TOKENS.work }).handle("s.plain", () => "ok");
    const done = worker.run({ handleSignals: false });
    try {
      assert.equal((await submitter.wait(job.id, 10_000)).state, JobState.SUCCEEDED);
    } finally {
      worker.stop();
      await done;
    }
    assert.throws(() => new Client(server.target, { token: "two words" }), TypeError);
  });
});
