/**
 * HTTP through mTLS tunnels (issue 3, "proven end to end"): nginx (nginx-light) serving static
 * files behind `mtls tunnel server`; `curl --cert --key` straight to the tunnel server, and plain
 * `curl` through `mtls tunnel client`, get the same bytes nginx serves. 127.0.0.1 only.
 * Debian packages: nginx-light, curl.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { freePort, requireTool, tempDir } from "./helpers.js";
import {
  auditLines,
  curl,
  sha256,
  startClientTunnel,
  startNginx,
  startServerTunnel,
  TestCa,
  waitForAudit,
} from "./peers.js";

let dir: string;
let cleanup: () => void;
let ca: TestCa;
const running: { stop(): Promise<void> }[] = [];

before(async () => {
  await requireTool("nginx", ["-v"]);
  await requireTool("curl", ["--version"]);
  ({ dir, cleanup } = tempDir("mtls-e2e-http-"));
  ca = await TestCa.init(dir);
  await ca.issue("server", "tunnel", ["--dns", "localhost", "--ip", "127.0.0.1"]);
  await ca.issue("client", "alice", ["--uri", "spiffe://acme.test/user/alice"]);
});

after(async () => {
  for (const r of running.reverse()) await r.stop();
  cleanup?.();
});

describe("HTTP (nginx) through mtls tunnels", () => {
  it("curl with a client certificate straight to the tunnel server, and plain curl through the client", async () => {
    const html = join(dir, "html");
    mkdirSync(html);
    const blob = randomBytes(512 * 1024);
    writeFileSync(join(html, "file.bin"), blob);
    writeFileSync(join(html, "hello.txt"), "hello from nginx\n");
    const nginxPort = await freePort();
    running.push(await startNginx(join(dir, "nginx"), html, nginxPort));
    const server = await startServerTunnel(
      ca,
      `127.0.0.1:${nginxPort}`,
      ["--allow-uri", "spiffe://acme.test/user/alice"],
      running,
    );
    const client = await startClientTunnel(ca, server, "alice", running);

    // Straight to the tunnel server: HTTPS with alice's certificate, the name checked by curl.
    const https = [...ca.curlFlags("alice"), "--resolve", `localhost:${server.port}:127.0.0.1`];
    const origin = `https://localhost:${server.port}`;
    const hello = await curl([...https, "-i", `${origin}/hello.txt`]);
    assert.equal(hello.code, 0, hello.stderr);
    assert.match(hello.stdout, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(hello.stdout, /\r\nServer: nginx/);
    assert.ok(hello.stdout.endsWith("\r\n\r\nhello from nginx\n"), hello.stdout);
    const directFile = join(dir, "direct.bin");
    const got = await curl([...https, "-o", directFile, "-w", "%{http_code}", `${origin}/file.bin`]);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(got.stdout, "200");
    assert.equal(sha256(readFileSync(directFile)), sha256(blob));
    // Two requests on one kept-alive connection, and nginx's own 404.
    const twice = await curl([...https, "-w", "%{http_code}\n", `${origin}/hello.txt`, `${origin}/missing`]);
    assert.equal(twice.code, 0, twice.stderr);
    assert.match(twice.stdout, /^hello from nginx\n200\n[\s\S]*404 Not Found[\s\S]*\n404\n$/);

    // Plain HTTP through the tunnel client.
    const viaClient = join(dir, "via-client.bin");
    const plain = await curl([
      "-o",
      viaClient,
      "-w",
      "%{http_code}",
      `http://127.0.0.1:${client.port}/file.bin`,
    ]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout, "200");
    assert.equal(sha256(readFileSync(viaClient)), sha256(blob));
    const head = await curl(["-I", `http://127.0.0.1:${client.port}/hello.txt`]);
    assert.match(head.stdout, /^HTTP\/1\.1 200 OK\r\n[\s\S]*Content-Length: 17\r\n/);

    // Every connection was allowed and audited as alice's.
    await waitForAudit(
      server,
      (l) => l.allowed === true && (l.bytesOut ?? 0) >= blob.length,
      "a file download",
    );
    await waitForAudit(server, () => auditLines(server).length >= 5, "five audited connections");
    for (const l of auditLines(server)) {
      assert.equal(l.allowed, true, JSON.stringify(l));
      assert.ok(l.identity?.sans.includes("uri:spiffe://acme.test/user/alice"), JSON.stringify(l));
    }
  });
});
