/**
 * VNC through mTLS tunnels (issue 3, "proven end to end"): TigerVNC's Xvnc with no VNC
 * authentication behind `mtls tunnel server`, `vncsnapshot` through `mtls tunnel client`. Alice's
 * certificate is allowed and gets a screenshot; Bob's (same CA, identity not in the rules) gets
 * nothing, and the server counts and audits him as not_allowed. 127.0.0.1 only.
 * Debian packages: tigervnc-standalone-server, vncsnapshot.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { freePort, requireTool, run, tempDir } from "./helpers.js";
import {
  auditLines,
  failures,
  isJpeg,
  metricsOf,
  metricValue,
  startClientTunnel,
  startServerTunnel,
  startXvnc,
  TestCa,
  TUNNEL_LABEL,
  waitForAudit,
} from "./peers.js";

let dir: string;
let cleanup: () => void;
let ca: TestCa;
const running: { stop(): Promise<void> }[] = [];

before(async () => {
  await requireTool("Xvnc", ["-version"]);
  await requireTool("vncsnapshot", ["-help"]);
  ({ dir, cleanup } = tempDir("mtls-e2e-vnc-"));
  ca = await TestCa.init(dir);
  await ca.issue("server", "tunnel", ["--dns", "localhost", "--ip", "127.0.0.1"]);
  await ca.issue("client", "alice", ["--uri", "spiffe://acme.test/user/alice"]);
  await ca.issue("client", "bob", ["--uri", "spiffe://acme.test/user/bob"]);
});

after(async () => {
  for (const r of running.reverse()) await r.stop();
  cleanup?.();
});

/** `vncsnapshot` of the whole 320x240 screen from 127.0.0.1:PORT into `out`. */
function snapshot(port: number, out: string) {
  // -rect and raw encoding: TigerVNC's Xvnc answers vncsnapshot's default request with an empty
  // rectangle; -allowblank: the desktop (no window manager) is all black, a valid capture.
  return run(
    "vncsnapshot",
    ["-quiet", "-allowblank", "-rect", "320x240+0+0", "-encodings", "raw", `127.0.0.1::${port}`, out],
    { cwd: dir, timeoutMs: 20_000 },
  );
}

describe("VNC (Xvnc + vncsnapshot) through mtls tunnels", () => {
  it("vncsnapshot captures the screen with an allowed certificate, and cannot without one", async () => {
    // Xvnc said it listens on 127.0.0.1 only (startXvnc waits for exactly that line).
    const xvnc = await startXvnc(await freePort(), dir);
    running.push(xvnc);
    const server = await startServerTunnel(
      ca,
      `127.0.0.1:${xvnc.port}`,
      ["--allow-uri", "spiffe://acme.test/user/alice"],
      running,
    );
    const alice = await startClientTunnel(ca, server, "alice", running);
    const bob = await startClientTunnel(ca, server, "bob", running);

    const shot = join(dir, "alice.jpg");
    const ok = await snapshot(alice.port, shot);
    assert.equal(ok.code, 0, `vncsnapshot through alice's tunnel failed:\n${ok.stdout}${ok.stderr}`);
    assert.ok(isJpeg(shot), "alice.jpg is a JPEG");
    const allowed = await waitForAudit(
      server,
      (l) => l.allowed === true && (l.identity?.sans ?? []).includes("uri:spiffe://acme.test/user/alice"),
      "alice's VNC session",
    );
    assert.ok((allowed.bytesOut ?? 0) > 320 * 240, `the screen went through: ${JSON.stringify(allowed)}`);

    const before = await failures(server, "not_allowed");
    const denied = join(dir, "bob.jpg");
    const refused = await snapshot(bob.port, denied);
    assert.notEqual(refused.code, 0, `vncsnapshot through bob's tunnel must fail:\n${refused.stdout}`);
    assert.ok(!existsSync(denied), "no screenshot for bob");
    const line = await waitForAudit(server, (l) => l.allowed === false, "bob refused");
    assert.equal(line.reason, "not_allowed");
    assert.ok(line.identity?.sans.includes("uri:spiffe://acme.test/user/bob"), JSON.stringify(line));
    assert.equal((await failures(server, "not_allowed")) - before, 1);
    assert.equal(auditLines(server).filter((l) => l.allowed === false).length, 1);

    const metrics = await metricsOf(server);
    assert.ok(metricValue(metrics, `mtls_tunnel_bytes_total{${TUNNEL_LABEL},direction="out"}`) > 320 * 240);
  });
});
