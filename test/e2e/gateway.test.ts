/**
 * The gateway end to end (issue 5): the built `mtls gateway` in front of a Node upstream that echoes
 * what it received, driven by `curl --cert --key`. Certificates made at test time by the CLI
 * (`mtls init`, `mtls issue`, `mtls revoke`). 127.0.0.1 only. Debian packages: curl.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect as tlsConnect } from "node:tls";
import {
  assertCliError,
  assertOk,
  CLI,
  mtls,
  pemBlocks,
  requireTool,
  startBackground,
  tempDir,
  withTimeout,
} from "./helpers.js";
import { curl, metricsOf, metricValue, sha256, stopChild, TestCa, type Tunnel, waitFor } from "./peers.js";

let dir: string;
let cleanup: () => void;
let ca: TestCa;
let evil: TestCa;
let upstream: Server;
let upstreamPort: number;
let gw: Tunnel;
const running: { stop(): Promise<void> }[] = [];

const MAX_BODY = 32 * 1024 * 1024;

interface Echo {
  method: string;
  url: string;
  headers: Record<string, string | string[]>;
  rawHeaders: string[];
  bytes: number;
  sha256: string;
}

/** An upstream that answers every request with what it received (headers, body size and hash). */
function startUpstream(): Promise<Server> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://upstream");
    if (url.pathname === "/download") {
      const n = Number(url.searchParams.get("bytes") ?? 0);
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(n) });
      const chunk = Buffer.alloc(64 * 1024, 7);
      let left = n;
      const pump = () => {
        while (left > 0) {
          const piece = left >= chunk.length ? chunk : chunk.subarray(0, left);
          left -= piece.length;
          if (!res.write(piece)) return void res.once("drain", pump);
        }
        res.end();
      };
      pump();
      return;
    }
    const hash = createHash("sha256");
    let bytes = 0;
    req.on("data", (c: Buffer) => {
      bytes += c.length;
      hash.update(c);
    });
    req.on("end", () => {
      const echo: Echo = {
        method: req.method ?? "",
        url: req.url ?? "",
        headers: req.headers as Echo["headers"],
        rawHeaders: req.rawHeaders,
        bytes,
        sha256: hash.digest("hex"),
      };
      const body = JSON.stringify(echo);
      res.writeHead(200, { "content-type": "application/json", "x-upstream": "echo" });
      res.end(body);
    });
  });
  // A WebSocket-ish upstream: answers the upgrade, says who it saw, then echoes every byte.
  server.on("upgrade", (req, socket) => {
    socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    socket.write(`${JSON.stringify({ url: req.url, identity: req.headers["x-client-identity"] ?? null })}\n`);
    socket.pipe(socket);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

/** Opens a TLS connection to the gateway as `who`, sends an upgrade request, collects what comes back. */
function upgradeAs(who: string | undefined, path: string, port = gw.port) {
  const files = who ? ca.files(who) : undefined;
  const socket = tlsConnect({
    host: "127.0.0.1",
    port,
    servername: "localhost",
    ca: readFileSync(ca.files("gateway").ca),
    ...(files ? { cert: readFileSync(files.cert), key: readFileSync(files.key) } : {}),
  });
  let received = "";
  socket.on("data", (d: Buffer) => {
    received += d.toString("latin1");
  });
  const closed = new Promise<void>((r) => socket.once("close", () => r()));
  socket.on("error", () => undefined);
  socket.write(
    `GET ${path} HTTP/1.1\r\nHost: localhost:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nClient-Cert: :Zm9yZ2Vk:\r\n\r\n`,
  );
  return { socket, received: () => received, closed };
}

/** curl to the gateway as `who` (a client certificate name, or none), name-checked as localhost. */
function gwCurl(who: string | undefined, args: string[], maxTimeS = 20) {
  const f = ca.files("gateway");
  const id =
    who === undefined
      ? []
      : who.startsWith("evil:")
        ? evil.curlFlags(who.slice(5)).slice(0, 4)
        : ca.curlFlags(who).slice(0, 4);
  return curl(["--cacert", f.ca, ...id, "--resolve", `localhost:${gw.port}:127.0.0.1`, ...args], maxTimeS);
}

const url = (path: string) => `https://localhost:${gw.port}${path}`;

/** The status code and body of `curl -w` output ending in "\n<code>". */
function split(stdout: string): { status: number; body: string } {
  const i = stdout.lastIndexOf("\n");
  return { status: Number(stdout.slice(i + 1)), body: stdout.slice(0, i) };
}

async function request(
  who: string | undefined,
  path: string,
  extra: string[] = [],
): Promise<{ status: number; body: string }> {
  const res = await gwCurl(who, ["-w", "\n%{http_code}", ...extra, url(path)]);
  assert.equal(res.code, 0, `curl failed: ${res.stderr}`);
  return split(res.stdout);
}

async function echo(who: string | undefined, path: string, extra: string[] = []): Promise<Echo> {
  const r = await request(who, path, extra);
  assert.equal(r.status, 200, r.body);
  return JSON.parse(r.body) as Echo;
}

const derBase64 = (pem: string): string =>
  pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, "").replace(/\s+/g, "");

before(async () => {
  await requireTool("curl", ["--version"]);
  ({ dir, cleanup } = tempDir("mtls-e2e-gateway-"));
  ca = await TestCa.init(dir);
  await ca.issue("server", "gateway", [
    "--dns",
    "localhost",
    "--ip",
    "127.0.0.1",
    "--uri",
    "spiffe://acme.test/gateway",
  ]);
  await ca.issue("client", "alice", ["--uri", "spiffe://acme.test/user/alice"]);
  await ca.issue("client", "bob", ["--uri", "spiffe://acme.test/user/bob"]);
  await ca.issue("client", "carol", ["--uri", "spiffe://acme.test/user/carol"]);
  await ca.revoke("carol");
  const evilDir = join(dir, "evil");
  const { mkdirSync } = await import("node:fs");
  mkdirSync(evilDir);
  evil = await TestCa.init(evilDir);
  await evil.issue("client", "alice", ["--uri", "spiffe://acme.test/user/alice"]);

  upstream = await startUpstream();
  upstreamPort = (upstream.address() as AddressInfo).port;
  const up = `http://127.0.0.1:${upstreamPort}`;
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
      "--crl",
      join(ca.state, "ca", "crl.pem"),
      "--allow-uri",
      "spiffe://acme.test/user/alice",
      "--allow-uri",
      "spiffe://acme.test/user/carol",
      "--route",
      `/=${up}`,
      "--route",
      `/admin/=${up};allow-uri=spiffe://acme.test/user/bob`,
      "--route",
      `/public/=${up};mode=optional`,
      "--route",
      `/open/=${up};mode=none`,
      "--route",
      `/ro/=${up};methods=GET,HEAD`,
      "--route",
      `/mapped/=${up}/base/`,
      "--enroll-url",
      "https://ca.acme.test/enroll?from=<gateway>",
      "--max-body",
      String(MAX_BODY),
      "--status",
      "127.0.0.1:0",
    ],
    { cwd: dir, ready: /mtls: gateway listening on .*\n/, timeoutMs: 15_000 },
  );
  running.push({ stop: () => stopChild(bg.child, 0, "SIGKILL") });
  const m = /listening on 127\.0\.0\.1:(\d+):.*?; status on 127\.0\.0\.1:(\d+)/.exec(bg.output());
  assert.ok(m, bg.output());
  gw = { bg, port: Number(m[1]), status: Number(m[2]) };
});

after(async () => {
  for (const r of running.reverse()) await r.stop();
  await new Promise<void>((r) => (upstream ? upstream.close(() => r()) : r()));
  cleanup?.();
});

interface AuditRequest {
  event: string;
  route: string;
  status: number;
  allowed: boolean;
  reason: string;
  identity?: { subject: string; sans: string[] };
}

function auditRequests(): AuditRequest[] {
  return gw.bg
    .output()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as AuditRequest)
    .filter((l) => l.event === "request");
}

describe("mtls gateway", () => {
  it("an allowed identity reaches the upstream with RFC 9440 headers and X-Client-Identity", async () => {
    const got = await echo("alice", "/hello?x=1");
    assert.equal(got.url, "/hello?x=1");
    const alicePem = pemBlocks(readFileSync(ca.files("alice").cert, "utf8"), "CERTIFICATE");
    assert.ok(alicePem.length >= 2, "alice.crt holds the leaf and the intermediate");
    assert.equal(got.headers["client-cert"], `:${derBase64(alicePem[0] as string)}:`);
    assert.equal(
      got.headers["client-cert-chain"],
      alicePem
        .slice(1)
        .map((p) => `:${derBase64(p)}:`)
        .join(", "),
    );
    const id = JSON.parse(got.headers["x-client-identity"] as string) as {
      subject: string;
      sans: string[];
      serial: string;
      fingerprint: string;
    };
    assert.match(id.subject, /CN=alice/);
    assert.deepEqual(id.sans, ["uri:spiffe://acme.test/user/alice"]);
    assert.equal(id.fingerprint, sha256(Buffer.from(derBase64(alicePem[0] as string), "base64")));
    assert.equal(got.headers["x-forwarded-for"], "127.0.0.1");
    assert.equal(got.headers["x-forwarded-proto"], "https");
    assert.equal(got.headers["x-forwarded-host"], `localhost:${gw.port}`);
    assert.equal(got.headers.host, `localhost:${gw.port}`);
    assert.equal(
      got.headers["x-forwarded-client-cert"],
      undefined,
      "xfcc only with --identity-headers xfcc|both",
    );
  });

  it("strips identity headers forged by the client, in any case and repeated", async () => {
    const got = await echo("alice", "/forged", [
      "-H",
      "Client-Cert: :Zm9yZ2Vk:",
      "-H",
      "CLIENT-CERT-CHAIN: :Zm9yZ2Vk:",
      "-H",
      'x-client-identity: {"subject":"CN=root"}',
      "-H",
      'X-Forwarded-Client-Cert: Hash=00;Subject="CN=root"',
      "-H",
      "X-Forwarded-For: 203.0.113.9",
    ]);
    const names = got.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
    assert.equal(names.filter((n) => n === "client-cert").length, 1);
    assert.equal(names.filter((n) => n === "client-cert-chain").length, 1);
    assert.equal(names.filter((n) => n === "x-client-identity").length, 1);
    assert.equal(names.filter((n) => n === "x-forwarded-client-cert").length, 0);
    assert.notEqual(got.headers["client-cert"], ":Zm9yZ2Vk:");
    assert.match(got.headers["x-client-identity"] as string, /CN=alice/);
    assert.equal(got.headers["x-forwarded-for"], "127.0.0.1");

    // Without a certificate on an optional route: every forged header gone, none added.
    const anon = await echo(undefined, "/public/page", [
      "-H",
      "Client-Cert: :Zm9yZ2Vk:",
      "-H",
      "client-cert: :Zm9yZ2Vk:",
      "-H",
      "X-Client-Identity: {}",
    ]);
    for (const h of ["client-cert", "client-cert-chain", "x-client-identity", "x-forwarded-client-cert"]) {
      assert.equal(anon.headers[h], undefined, h);
    }
  });

  it("no certificate on a require route: 401 JSON for curl, an HTML page for a browser", async () => {
    const json = await request(undefined, "/secret");
    assert.equal(json.status, 401);
    assert.deepEqual(JSON.parse(json.body), {
      error: {
        code: "E_NOT_AUTHENTICATED",
        message: "This address admits only clients with a certificate, and none was presented.",
      },
    });
    const page = await gwCurl(undefined, [
      "--http1.1",
      "-i",
      "-H",
      "Accept: text/html,application/xhtml+xml;q=0.9,*/*;q=0.8",
      url("/secret"),
    ]);
    assert.match(page.stdout, /^HTTP\/1\.1 401 /);
    assert.match(page.stdout, /\r\ncontent-type: text\/html; charset=utf-8\r\n/i);
    assert.match(page.stdout, /A client certificate is needed/);
    // The enrollment link, HTML-escaped.
    assert.match(page.stdout, /href="https:\/\/ca\.acme\.test\/enroll\?from=%3Cgateway%3E"/);
    assert.doesNotMatch(page.stdout, /<gateway>/);
  });

  it("a valid certificate that the route does not allow: 403", async () => {
    const bob = await request("bob", "/secret");
    assert.equal(bob.status, 403);
    assert.equal((JSON.parse(bob.body) as { error: { code: string } }).error.code, "E_NOT_AUTHORIZED");
    const aliceAdmin = await request("alice", "/admin/users");
    assert.equal(aliceAdmin.status, 403);
    const bobAdmin = await echo("bob", "/admin/users");
    assert.match(bobAdmin.headers["x-client-identity"] as string, /user\/bob/);
    // Dot segments are resolved before routing: /open/../admin/ is the admin route.
    const sneaky = await request("alice", "/open/%2e%2e/admin/users", ["--path-as-is"]);
    assert.equal(sneaky.status, 403);
    // Methods in rules: the read-only route lets alice GET, not POST.
    assert.equal((await request("alice", "/ro/doc")).status, 200);
    const post = await request("alice", "/ro/doc", ["-X", "POST", "--data", "x"]);
    assert.equal(post.status, 403);
    const html = await gwCurl("bob", ["-H", "Accept: text/html", url("/secret")]);
    assert.match(html.stdout, /does not give access here/);
    assert.match(html.stdout, /CN=bob/);
  });

  it("a revoked certificate (CRL) and one from an unknown CA are refused with a page", async () => {
    const revoked = await request("carol", "/secret");
    assert.equal(revoked.status, 401);
    assert.equal((JSON.parse(revoked.body) as { error: { code: string } }).error.code, "E_REVOKED");
    const page = await gwCurl("carol", ["-H", "Accept: text/html", url("/secret")]);
    assert.match(page.stdout, /Your certificate has been revoked/);
    assert.match(page.stdout, /Get a certificate/);
    const stranger = await request("evil:alice", "/secret");
    assert.equal(stranger.status, 401);
    assert.equal((JSON.parse(stranger.body) as { error: { code: string } }).error.code, "E_UNTRUSTED");
  });

  it("an optional route sees the identity only when a valid certificate was presented; none never", async () => {
    const anon = await echo(undefined, "/public/x");
    assert.equal(anon.headers["client-cert"], undefined);
    assert.equal(anon.headers["x-client-identity"], undefined);
    const alice = await echo("alice", "/public/x");
    assert.match(alice.headers["x-client-identity"] as string, /CN=alice/);
    const carol = await echo("carol", "/public/x");
    assert.equal(carol.headers["client-cert"], undefined, "a revoked certificate proves nothing");
    const none = await echo("alice", "/open/x");
    assert.equal(none.headers["client-cert"], undefined);
    assert.equal(none.headers["x-client-identity"], undefined);
  });

  it("maps a route prefix onto the upstream's base path; a route without a host serves every host", async () => {
    const got = await echo("alice", "/mapped/a/b?q=1");
    assert.equal(got.url, "/base/a/b?q=1");
    const none = await gwCurl("alice", ["-w", "\n%{http_code}", "-H", "Host: other.test", url("/x")]);
    assert.equal(split(none.stdout).status, 200, "a route without a host serves every host");
  });

  it("streams a large upload and download through, and refuses a body beyond --max-body", async () => {
    const blob = randomBytes(24 * 1024 * 1024);
    const file = join(dir, "upload.bin");
    writeFileSync(file, blob);
    const up = await echo("alice", "/upload", [
      "--data-binary",
      `@${file}`,
      "-H",
      "Content-Type: application/octet-stream",
    ]);
    assert.equal(up.method, "POST");
    assert.equal(up.bytes, blob.length);
    assert.equal(up.sha256, sha256(blob));
    // Chunked (no Content-Length) too.
    const chunked = await echo("alice", "/upload", [
      "--http1.1",
      "--data-binary",
      `@${file}`,
      "-H",
      "Transfer-Encoding: chunked",
    ]);
    assert.equal(chunked.bytes, blob.length);

    // HTTP/1.1: curl says "Expect: 100-continue" and sends the body only once the request is admitted.
    const h1 = await echo("alice", "/upload", ["--http1.1", "--data-binary", `@${file}`]);
    assert.equal(h1.sha256, sha256(blob));
    const refusedUpload = await request(undefined, "/upload", ["--http1.1", "--data-binary", `@${file}`]);
    assert.equal(refusedUpload.status, 401);

    // A GET with a chunked body: framed as chunked upstream too (never sent unframed).
    const getBody = await echo("alice", "/upload", [
      "--http1.1",
      "-X",
      "GET",
      "--data-binary",
      "smuggled?",
      "-H",
      "Transfer-Encoding: chunked",
    ]);
    assert.equal(getBody.method, "GET");
    assert.equal(getBody.bytes, 9);
    assert.equal(getBody.headers["transfer-encoding"], "chunked");

    const down = join(dir, "down.bin");
    const n = 40 * 1024 * 1024;
    const res = await gwCurl("alice", [
      "-o",
      down,
      "-w",
      "%{http_code} %{size_download}",
      url(`/download?bytes=${n}`),
    ]);
    assert.equal(res.stdout, `200 ${n}`);

    const big = join(dir, "big.bin");
    writeFileSync(big, Buffer.alloc(MAX_BODY + 1024 * 1024, 1));
    const refused = await request("alice", "/upload", ["--data-binary", `@${big}`]);
    assert.equal(refused.status, 413);
    assert.equal((JSON.parse(refused.body) as { error: { code: string } }).error.code, "E_TOO_LARGE");
    const chunkedBig = await gwCurl("alice", [
      "--http1.1",
      "-w",
      "\n%{http_code}",
      "--data-binary",
      `@${big}`,
      "-H",
      "Transfer-Encoding: chunked",
      url("/upload"),
    ]);
    // Cut after the limit: a 413 when the upstream had not answered yet, else a reset.
    assert.ok(chunkedBig.code !== 0 || split(chunkedBig.stdout).status === 413, chunkedBig.stdout);
  });

  it("speaks HTTP/2 (ALPN h2) and HTTP/1.1 on the same port", async () => {
    const h2 = await gwCurl("alice", ["-w", "\n%{http_version} %{http_code}", url("/v")]);
    assert.match(h2.stdout, /\n2 200$/);
    const got = JSON.parse(h2.stdout.slice(0, h2.stdout.lastIndexOf("\n"))) as Echo;
    assert.equal(got.headers.host, `localhost:${gw.port}`, "the :authority becomes the upstream's Host");
    assert.match(got.headers["x-client-identity"] as string, /CN=alice/);
    assert.ok(!Object.keys(got.headers).some((h) => h.startsWith(":")));
    const h1 = await gwCurl("alice", [
      "--http1.1",
      "-o",
      "/dev/null",
      "-w",
      "%{http_version} %{http_code}",
      url("/v"),
    ]);
    assert.equal(h1.stdout, "1.1 200");
    const anon = await gwCurl(undefined, ["-w", "\n%{http_version} %{http_code}", url("/v")]);
    assert.match(anon.stdout, /E_NOT_AUTHENTICATED[\s\S]*\n2 401$/);
    // Several streams on one HTTP/2 connection, one verification.
    const many = await gwCurl("alice", [
      "-w",
      "%{http_code}\n",
      "-o",
      "/dev/null",
      "-o",
      "/dev/null",
      "-o",
      "/dev/null",
      url("/a"),
      url("/b"),
      url("/c"),
    ]);
    assert.equal(many.stdout, "200\n200\n200\n");
  });

  it("passes WebSocket upgrades through with the identity, and refuses them like requests", async () => {
    const ws = upgradeAs("alice", "/ws/chat");
    await waitFor(
      () => ws.received().includes("}\n"),
      5_000,
      "the 101 and the upstream's greeting",
      ws.received,
    );
    assert.match(ws.received(), /^HTTP\/1\.1 101 Switching Protocols\r\n/);
    const greeting = JSON.parse(ws.received().split("\r\n\r\n")[1] as string) as {
      url: string;
      identity: string;
    };
    assert.equal(greeting.url, "/ws/chat");
    assert.match(greeting.identity, /CN=alice/);
    const before = ws.received().length;
    ws.socket.write("ping through the gateway");
    await waitFor(() => ws.received().length >= before + 24, 5_000, "the echo", ws.received);
    assert.ok(ws.received().endsWith("ping through the gateway"));
    ws.socket.end();
    await ws.closed;

    const anon = upgradeAs(undefined, "/ws/chat");
    await anon.closed;
    assert.match(anon.received(), /^HTTP\/1\.1 401 Unauthorized\r\n/);
    assert.match(anon.received(), /E_NOT_AUTHENTICATED/);
    const bob = upgradeAs("bob", "/ws/chat");
    await bob.closed;
    assert.match(bob.received(), /^HTTP\/1\.1 403 Forbidden\r\n/);
  });

  it("counts requests and refusals in /metrics and writes an audit line per request", async () => {
    await waitFor(
      () => auditRequests().some((l) => l.reason === "revoked"),
      5_000,
      "audit of a revoked request",
    );
    const text = await metricsOf(gw);
    const label = `gateway="127.0.0.1:0"`;
    assert.ok(
      metricValue(text, `mtls_gateway_refusals_total{${label},route="*/",reason="revoked"}`) >= 2,
      text,
    );
    assert.ok(
      metricValue(text, `mtls_gateway_refusals_total{${label},route="*/",reason="no_certificate"}`) >= 2,
    );
    assert.ok(metricValue(text, `mtls_gateway_requests_total{${label},route="*/",status="200"}`) >= 2);
    assert.match(text, /mtls_gateway_request_duration_seconds_bucket\{/);
    const allowed = auditRequests().find((l) => l.allowed && l.route === "*/");
    assert.ok(allowed?.identity?.sans.includes("uri:spiffe://acme.test/user/alice"), JSON.stringify(allowed));
  });

  it("runs from mtls.yaml under `mtls up` (gateways: section); a route change on SIGHUP keeps the listener and open connections", async () => {
    const f = ca.files("gateway");
    const yamlFile = join(dir, "mtls.yaml");
    const yaml = (mode: string) => `log:
  level: info
gateways:
  - name: web
    listen: 127.0.0.1:0
    cert: ${f.cert}
    key: ${f.key}
    ca: ${f.ca}
    crl: ${join(ca.state, "ca", "crl.pem")}
    identity_headers: both
    enroll_url: https://ca.acme.test/enroll
    allow:
      - uri: spiffe://acme.test/user/*
    routes:
      - path: /
        upstream: http://127.0.0.1:${upstreamPort}
      - path: /ro/
        upstream: http://127.0.0.1:${upstreamPort}
        mode: ${mode}
        allow:
          - uri: spiffe://acme.test/user/alice
            methods: [GET]
`;
    writeFileSync(yamlFile, yaml("require"));
    const check = assertOk(await mtls(["up", "--check", "-c", yamlFile], { cwd: dir }), "mtls up --check");
    assert.match(check.stdout, /: ok \(1 gateway: web\)\n$/);

    const up = await startBackground(process.execPath, [CLI, "up", "-c", yamlFile], {
      cwd: dir,
      ready: /mtls: up: 0 tunnels, 1 gateway from/,
      timeoutMs: 15_000,
    });
    running.push({ stop: () => stopChild(up.child, 0, "SIGKILL") });
    const portOf = (after: number) => {
      const all = [...up.output().matchAll(/mtls: gateway web listening on 127\.0\.0\.1:(\d+)/g)];
      return all.length > after ? Number(all[after]?.[1]) : undefined;
    };
    const first = portOf(0) as number;
    const via = (p: number, who: string | undefined, path: string, extra: string[] = []) =>
      curl([
        "--cacert",
        f.ca,
        ...(who ? ca.curlFlags(who).slice(0, 4) : []),
        "--resolve",
        `localhost:${p}:127.0.0.1`,
        "-w",
        "\n%{http_code}",
        ...extra,
        `https://localhost:${p}${path}`,
      ]);
    const ok = split((await via(first, "alice", "/x")).stdout);
    assert.equal(ok.status, 200);
    const h = (JSON.parse(ok.body) as Echo).headers;
    assert.ok(h["client-cert"] && h["x-forwarded-client-cert"], "identity_headers: both");
    assert.equal(split((await via(first, "bob", "/ro/x")).stdout).status, 403);
    assert.equal(split((await via(first, "alice", "/ro/x", ["-X", "POST"])).stdout).status, 403);
    assert.equal(split((await via(first, undefined, "/ro/x")).stdout).status, 401);

    // A WebSocket open across the reload.
    const ws = upgradeAs("alice", "/ws", first);
    await waitFor(() => ws.received().includes("\n{"), 5_000, "the upstream's greeting", ws.received);
    ws.socket.write("before reload\n");
    await waitFor(() => ws.received().includes("before reload\n"), 5_000, "the echo", ws.received);

    // A route's mode and rules changed: in force in place on SIGHUP, same listener, same port.
    writeFileSync(yamlFile, yaml("none"));
    up.child.kill("SIGHUP");
    await waitFor(
      async () => split((await via(first, undefined, "/ro/x")).stdout).status === 200,
      10_000,
      "the new rule on the same port",
      up.output,
    );
    assert.match(up.output(), /"updated":\["web"\]/);
    assert.equal(portOf(1), undefined, "no restart");
    ws.socket.write("after reload\n");
    await waitFor(
      () => ws.received().includes("after reload\n"),
      5_000,
      "the echo after the reload",
      ws.received,
    );
    ws.socket.destroy();
    await ws.closed;

    // A listener setting changed (HTTP/2 off): that gateway restarts, on a new port 0.
    writeFileSync(
      yamlFile,
      yaml("none").replace("identity_headers: both", "identity_headers: both\n    http2: false"),
    );
    up.child.kill("SIGHUP");
    await waitFor(() => portOf(1) !== undefined, 10_000, "the restarted gateway", up.output);
    assert.equal(split((await via(portOf(1) as number, undefined, "/ro/x")).stdout).status, 200);
  });

  it("proxies to an https upstream that requires a client certificate (--upstream-ca, --upstream-identity)", async () => {
    await ca.issue("server", "upstream", ["--dns", "localhost", "--ip", "127.0.0.1"]);
    await ca.issue("client", "gw-client", ["--uri", "spiffe://acme.test/svc/gateway"]);
    const uf = ca.files("upstream");
    const { createServer: createHttpsServer } = await import("node:https");
    const tlsUp = createHttpsServer(
      {
        cert: readFileSync(uf.cert),
        key: readFileSync(uf.key),
        ca: readFileSync(uf.ca),
        requestCert: true,
        rejectUnauthorized: true,
      },
      (req, res) => {
        const peer = (req.socket as import("node:tls").TLSSocket).getPeerCertificate();
        res.writeHead(200, { "content-type": "application/json" });
        res.end(
          JSON.stringify({
            url: req.url,
            peer: peer.subject?.CN,
            servername: (req.socket as import("node:tls").TLSSocket).servername,
          }),
        );
      },
    );
    await new Promise<void>((r) => tlsUp.listen(0, "127.0.0.1", () => r()));
    running.push({ stop: () => new Promise<void>((r) => tlsUp.close(() => r())) });
    const upPort = (tlsUp.address() as AddressInfo).port;
    // upstream-cert= without upstream-key=: refused before anything starts, naming the route.
    const bad = await mtls(
      [
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--state",
        ca.state,
        "--name",
        "gateway",
        "--route",
        `/=https://localhost:${upPort};mode=none;upstream-cert=${ca.files("alice").cert}`,
      ],
      { cwd: dir },
    );
    assertCliError(bad, 2, /route \*\/: .*certificate and its key together/);

    const good = await startBackground(
      process.execPath,
      [
        CLI,
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--state",
        ca.state,
        "--name",
        "gateway",
        "--allow-uri",
        "spiffe://acme.test/user/alice",
        "--route",
        `/=https://127.0.0.1:${upPort}/in/;upstream-servername=localhost`,
        "--upstream-ca",
        uf.ca,
        "--upstream-identity",
        "gw-client",
        "--status",
        "127.0.0.1:0",
      ],
      { cwd: dir, ready: /mtls: gateway listening on .*\n/, timeoutMs: 15_000 },
    );
    running.push({ stop: () => stopChild(good.child, 0, "SIGKILL") });
    const m = /listening on 127\.0\.0\.1:(\d+):.*?; status on 127\.0\.0\.1:(\d+)/.exec(good.output());
    assert.ok(m, good.output());
    const p = Number(m[1]);
    const res = await curl([
      ...ca.curlFlags("alice"),
      "--resolve",
      `localhost:${p}:127.0.0.1`,
      "-w",
      "\n%{http_code}",
      `https://localhost:${p}/x`,
    ]);
    const r = split(res.stdout);
    assert.equal(r.status, 200, r.body);
    const seen = JSON.parse(r.body) as { url: string; peer: string; servername: string };
    assert.deepEqual(seen, { url: "/in/x", peer: "gw-client", servername: "localhost" });
    const ready = await curl(["-w", "\n%{http_code}", `http://127.0.0.1:${m[2]}/readyz`]);
    assert.equal(split(ready.stdout).status, 200, ready.stdout);
    assert.match(ready.stdout, /completes a TLS handshake/);
  });

  it("cuts an open WebSocket within seconds when `mtls revoke` runs in another process", async (t) => {
    await ca.issue("client", "alice-ws", ["--uri", "spiffe://acme.test/user/alice"]);
    const ws = upgradeAs("alice-ws", "/ws");
    await waitFor(() => ws.received().includes("\n{"), 5_000, "the upstream's greeting", ws.received);
    ws.socket.write("ping\n");
    await waitFor(() => ws.received().includes("ping\n"), 5_000, "the echo", ws.received);
    const before = metricValue(
      await metricsOf(gw),
      'mtls_gateway_connections_cut_total{gateway="127.0.0.1:0",reason="revoked"}',
    );
    const revokedAt = Date.now();
    await ca.revoke("alice-ws");
    await withTimeout(ws.closed, 5_000, "the WebSocket to close after `mtls revoke`");
    const took = Date.now() - revokedAt;
    assert.ok(took < 5_000, `closed after ${took} ms`);
    t.diagnostic(`the WebSocket closed ${took} ms after \`mtls revoke\` was started`);
    await waitFor(
      () => auditRequests().some((a) => a.status === 101 && a.reason === "revoked"),
      5_000,
      "the audit line",
      gw.bg.output,
    );
    assert.equal(
      metricValue(
        await metricsOf(gw),
        'mtls_gateway_connections_cut_total{gateway="127.0.0.1:0",reason="revoked"}',
      ),
      before + 1,
    );
  });
});
