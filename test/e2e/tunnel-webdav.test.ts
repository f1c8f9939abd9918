/**
 * WebDAV through mTLS tunnels (issue 3, "proven end to end"): `rclone serve webdav` behind
 * `mtls tunnel server`; through `mtls tunnel client`, curl PUTs 1 MB of random bytes, PROPFIND lists
 * it and GET returns the same bytes; then rclone itself, as a WebDAV client, uploads and lists.
 * 127.0.0.1 only. Debian packages: rclone, curl.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { freePort, requireTool, run, tempDir } from "./helpers.js";
import {
  curl,
  sha256,
  startClientTunnel,
  startRcloneWebdav,
  startServerTunnel,
  TestCa,
  waitForAudit,
} from "./peers.js";

let dir: string;
let cleanup: () => void;
let ca: TestCa;
const running: { stop(): Promise<void> }[] = [];

before(async () => {
  await requireTool("rclone", ["version"]);
  await requireTool("curl", ["--version"]);
  ({ dir, cleanup } = tempDir("mtls-e2e-webdav-"));
  ca = await TestCa.init(dir);
  await ca.issue("server", "tunnel", ["--dns", "localhost", "--ip", "127.0.0.1"]);
  await ca.issue("client", "alice", ["--uri", "spiffe://acme.test/user/alice"]);
});

after(async () => {
  for (const r of running.reverse()) await r.stop();
  cleanup?.();
});

/** rclone with no config file; the remote is given on the fly as `:webdav,url=...:path`. */
function rclone(args: string[]) {
  return run("rclone", ["--config", "/dev/null", "--low-level-retries", "1", "--retries", "1", ...args], {
    cwd: dir,
    timeoutMs: 30_000,
  });
}

describe("WebDAV (rclone serve webdav) through mtls tunnels", () => {
  it("curl PUT/PROPFIND/GET and rclone copyto/lsf go through the tunnel pair, byte for byte", async () => {
    const served = join(dir, "served");
    mkdirSync(served);
    const davPort = await freePort();
    running.push(await startRcloneWebdav(served, davPort, dir));
    const server = await startServerTunnel(
      ca,
      `127.0.0.1:${davPort}`,
      ["--allow-uri", "spiffe://acme.test/user/*"],
      running,
    );
    const client = await startClientTunnel(ca, server, "alice", running);
    const base = `http://127.0.0.1:${client.port}`;

    // curl: PUT 1 MB of random bytes, PROPFIND, GET.
    const payload = randomBytes(1024 * 1024);
    const upload = join(dir, "payload.bin");
    writeFileSync(upload, payload);
    const put = await curl(
      ["-w", "%{http_code}", "-o", "/dev/null", "-T", upload, `${base}/payload.bin`],
      20,
    );
    assert.equal(put.code, 0, put.stderr);
    assert.match(put.stdout, /^20[14]$/, "PUT answered 201 Created (or 204)");
    assert.equal(sha256(readFileSync(join(served, "payload.bin"))), sha256(payload), "stored as sent");

    const propfind = await curl(["-X", "PROPFIND", "-H", "Depth: 1", "-w", "\n%{http_code}", `${base}/`]);
    assert.equal(propfind.code, 0, propfind.stderr);
    assert.match(propfind.stdout, /\n207$/, "207 Multi-Status");
    assert.match(propfind.stdout, /<D:href>\/payload\.bin<\/D:href>/);
    assert.match(propfind.stdout, /<D:getcontentlength>1048576<\/D:getcontentlength>/);

    const downloaded = join(dir, "downloaded.bin");
    const get = await curl(["-o", downloaded, "-w", "%{http_code}", `${base}/payload.bin`], 20);
    assert.equal(get.code, 0, get.stderr);
    assert.equal(get.stdout, "200");
    assert.equal(sha256(readFileSync(downloaded)), sha256(payload), "GET returned the same bytes");

    // rclone as the WebDAV client, with an on-the-fly remote.
    const remote = `:webdav,url='${base}':`;
    const note = join(dir, "note.txt");
    writeFileSync(note, "carried by rclone over mTLS\n");
    const copy = await rclone(["copyto", note, `${remote}docs/note.txt`]);
    assert.equal(copy.code, 0, copy.stderr);
    assert.equal(readFileSync(join(served, "docs", "note.txt"), "utf8"), "carried by rclone over mTLS\n");
    const lsf = await rclone(["lsf", "-R", remote]);
    assert.equal(lsf.code, 0, lsf.stderr);
    assert.deepEqual(lsf.stdout.trim().split("\n").sort(), ["docs/", "docs/note.txt", "payload.bin"]);
    const back = join(dir, "back.bin");
    const fetched = await rclone(["copyto", `${remote}payload.bin`, back]);
    assert.equal(fetched.code, 0, fetched.stderr);
    assert.equal(sha256(readFileSync(back)), sha256(payload), "rclone downloaded the same bytes");

    // The server tunnel audited alice's connections with the bytes they carried.
    const line = await waitForAudit(
      server,
      (l) => l.allowed === true && (l.bytesIn ?? 0) >= payload.length,
      "the PUT connection",
    );
    assert.ok(line.identity?.sans.includes("uri:spiffe://acme.test/user/alice"), JSON.stringify(line));
  });
});
