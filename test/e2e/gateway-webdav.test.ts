/**
 * WebDAV behind the gateway (issue 5) with a real WebDAV server and client: `rclone serve webdav`
 * as the upstream (under /dav/), rclone as the client through the built `mtls gateway` with its
 * client certificate (`--client-cert --client-key --ca-cert`, an on-the-fly `:webdav,url=…:`
 * remote): a few MB copied up, listed, copied back byte for byte; a client without a certificate,
 * and one whose certificate no rule allows, are refused and write nothing.
 * 127.0.0.1 only. Debian packages: rclone.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { CLI, freePort, requireTool, run, startBackground, tempDir } from "./helpers.js";
import { sha256, stopChild, TestCa, type Tunnel, waitFor, waitForPort } from "./peers.js";

const ALICE_URI = "spiffe://acme.test/user/alice";

let dir: string;
let cleanup: () => void;
let ca: TestCa;
let served: string;
let gw: Tunnel;
const running: { stop(): Promise<void> }[] = [];

before(async () => {
  await requireTool("rclone", ["version"]);
  ({ dir, cleanup } = tempDir("mtls-e2e-gateway-webdav-"));
  ca = await TestCa.init(dir);
  await ca.issue("server", "gateway", ["--dns", "localhost", "--ip", "127.0.0.1"]);
  await ca.issue("client", "alice", ["--uri", ALICE_URI]);
  await ca.issue("client", "bob", ["--uri", "spiffe://acme.test/user/bob"]);

  // The upstream serves under /dav/ itself, so the hrefs of its PROPFIND answers are the paths
  // the client asked for (no prefix rewriting by the gateway).
  served = join(dir, "served");
  mkdirSync(served);
  const davPort = await freePort();
  const dav = await startBackground(
    "rclone",
    [
      "--config",
      "/dev/null",
      "serve",
      "webdav",
      served,
      "--addr",
      `127.0.0.1:${davPort}`,
      "--baseurl",
      "/dav",
    ],
    { cwd: dir, ready: /WebDav Server started on/, timeoutMs: 15_000 },
  );
  running.push({ stop: () => stopChild(dav.child) });
  await waitForPort(davPort, 5_000, "rclone serve webdav", dav.output);

  const f = ca.files("gateway");
  const bg = await startBackground(
    process.execPath,
    [
      CLI,
      "gateway",
      "--listen",
      "127.0.0.1:0",
      "--cert",
      f.cert,
      "--key",
      f.key,
      "--ca",
      f.ca,
      "--allow-uri",
      ALICE_URI,
      "--route",
      `/dav/=http://127.0.0.1:${davPort};mode=require`,
    ],
    { cwd: dir, ready: /mtls: gateway listening on .*\n/, timeoutMs: 15_000 },
  );
  running.push({ stop: () => stopChild(bg.child, 0, "SIGKILL") });
  const m = /listening on 127\.0\.0\.1:(\d+):/.exec(bg.output());
  assert.ok(m, bg.output());
  gw = { bg, port: Number(m[1]) };
});

after(async () => {
  for (const r of running.reverse()) await r.stop();
  cleanup?.();
});

/** rclone with no config file and no retries, as `who` (a client certificate) or with none. */
function rclone(who: string | undefined, args: string[]) {
  const f = who ? ca.files(who) : undefined;
  return run(
    "rclone",
    [
      "--config",
      "/dev/null",
      "--low-level-retries",
      "1",
      "--retries",
      "1",
      "--contimeout",
      "10s",
      "--timeout",
      "30s",
      "--ca-cert",
      ca.files("gateway").ca,
      ...(f ? ["--client-cert", f.cert, "--client-key", f.key] : []),
      ...args,
    ],
    { cwd: dir, timeoutMs: 45_000 },
  );
}

const remote = () => `:webdav,url='https://127.0.0.1:${gw.port}/dav/':`;

interface AuditRequest {
  event: string;
  method: string;
  path: string;
  status: number;
  allowed: boolean;
  reason: string;
  bytesIn: number;
  bytesOut: number;
  identity?: { subject: string; sans: string[] };
}

function audit(): AuditRequest[] {
  return gw.bg
    .output()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as AuditRequest)
    .filter((l) => l.event === "request");
}

describe("WebDAV (rclone) behind mtls gateway", () => {
  it("rclone with alice's certificate copies 6 MB up, lists it and copies it back, byte for byte", async () => {
    const payload = randomBytes(6 * 1024 * 1024 + 123);
    const upload = join(dir, "payload.bin");
    writeFileSync(upload, payload);

    const up = await rclone("alice", ["copyto", upload, `${remote()}reports/payload.bin`]);
    assert.equal(up.code, 0, up.stderr);
    const stored = join(served, "reports", "payload.bin");
    assert.equal(sha256(readFileSync(stored)), sha256(payload), "stored on the WebDAV server as sent");

    const note = join(dir, "note.txt");
    writeFileSync(note, "through the gateway\n");
    assert.equal((await rclone("alice", ["copyto", note, `${remote()}reports/note.txt`])).code, 0);

    const lsl = await rclone("alice", ["lsjson", "-R", remote()]);
    assert.equal(lsl.code, 0, lsl.stderr);
    const listed = (JSON.parse(lsl.stdout) as { Path: string; Size: number; IsDir: boolean }[])
      .map((e) => `${e.Path} ${e.IsDir ? "dir" : e.Size}`)
      .sort();
    assert.deepEqual(listed, [
      "reports dir",
      `reports/note.txt ${"through the gateway\n".length}`,
      `reports/payload.bin ${payload.length}`,
    ]);

    const back = join(dir, "back.bin");
    const down = await rclone("alice", ["copyto", `${remote()}reports/payload.bin`, back]);
    assert.equal(down.code, 0, down.stderr);
    assert.equal(sha256(readFileSync(back)), sha256(payload), "copied back the same bytes");

    // The gateway let alice's upload through, with her identity, and counted its bytes.
    await waitFor(
      () => audit().some((l) => l.method === "PUT" && l.path.endsWith("/payload.bin") && l.status < 300),
      5_000,
      "the audit line of the PUT",
      gw.bg.output,
    );
    const put = audit().find((l) => l.method === "PUT" && l.path.endsWith("/payload.bin")) as AuditRequest;
    assert.equal(put.allowed, true);
    assert.equal(put.path, "/dav/reports/payload.bin");
    assert.ok(put.bytesIn >= payload.length, JSON.stringify(put));
    assert.ok(put.identity?.sans.includes(`uri:${ALICE_URI}`), JSON.stringify(put));
    const get = audit().find((l) => l.method === "GET" && l.path === "/dav/reports/payload.bin");
    assert.ok(get && get.bytesOut >= payload.length, JSON.stringify(get));
    assert.ok(audit().some((l) => l.method === "PROPFIND" && l.allowed));
  });

  it("rclone without a certificate, or with one no rule allows, is refused and writes nothing", async () => {
    const file = join(dir, "intruder.txt");
    writeFileSync(file, "should never arrive\n");
    const before = audit().length;

    const anon = await rclone(undefined, ["copyto", file, `${remote()}intruder.txt`]);
    assert.notEqual(anon.code, 0, "rclone without a certificate must fail");
    assert.match(anon.stderr, /401|Unauthorized|certificate/i, anon.stderr);
    const anonList = await rclone(undefined, ["lsf", remote()]);
    assert.notEqual(anonList.code, 0, "nor may it list");

    const bob = await rclone("bob", ["copyto", file, `${remote()}intruder.txt`]);
    assert.notEqual(bob.code, 0, "bob's certificate is valid but not allowed");
    assert.match(bob.stderr, /403|Forbidden/i, bob.stderr);

    assert.ok(!existsSync(join(served, "intruder.txt")));
    assert.deepEqual(readdirSync(served), ["reports"]);
    const refused = audit().slice(before);
    assert.ok(refused.length > 0 && refused.every((l) => !l.allowed), JSON.stringify(refused));
    assert.ok(refused.some((l) => l.reason === "no_certificate" && l.status === 401));
    assert.ok(refused.some((l) => l.reason === "not_allowed" && l.status === 403));
  });
});
