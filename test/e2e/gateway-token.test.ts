/**
 * Certificate-bound access tokens (RFC 8705) end to end: the built `mtls gateway` in front of a
 * Node upstream that echoes the headers it received, driven by `curl --cert --key`. The CA and the
 * client certificates of alice and mallory come from the CLI (`mtls init`, `mtls issue client`);
 * the test plays the authorization server: it publishes a JWKS file and signs access tokens with
 * jose. Route /bound/ requires a token bound to the client certificate, /bearer/ a plain bearer
 * token, both behind the same certificate check (any certificate of the CA).
 *
 * The point: mallory holds a valid certificate of her own and a copy of alice's token. On /bound/
 * the copy is useless without alice's private key; on /bearer/ it works. 127.0.0.1 only.
 * Debian packages: curl, openssl, coreutils (basenc).
 */
import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { CLI, pemBlocks, requireTool, run, startBackground, tempDir } from "./helpers.js";
import { curl, metricsOf, metricValue, stopChild, TestCa, type Tunnel, waitFor } from "./peers.js";

const ISSUER = "https://as.acme.test";
const AUDIENCE = "https://api.acme.test";

let dir: string;
let cleanup: () => void;
let ca: TestCa;
let upstream: Server;
let gw: Tunnel;
let signingKey: Awaited<ReturnType<typeof generateKeyPair>>["privateKey"];
const running: { stop(): Promise<void> }[] = [];

/** alice's certificate-bound token, as the authorization server issued it to her. */
let aliceToken: string;
let aliceJti: string;
let aliceThumbprint: string;

/** An upstream that answers every request with the headers it received. */
function startUpstream(): Promise<Server> {
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ url: req.url, headers: req.headers }));
    });
  });
  server.on("upgrade", (_req, socket) => {
    socket.end(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nupgraded\n",
    );
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

/** An access token signed by the test's authorization server key. */
function issueToken(claims: Record<string, unknown>, opts: { sub: string; jti: string; expiresIn?: number }) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(claims)
    .setProtectedHeader({ alg: "ES256", kid: "as-key-1", typ: "at+jwt" })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject(opts.sub)
    .setJti(opts.jti)
    .setIssuedAt(now - 60)
    .setExpirationTime(now + (opts.expiresIn ?? 600))
    .sign(signingKey);
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** curl to the gateway as `who` (a client certificate name, or none), with `token` as a Bearer token. */
async function call(who: string | undefined, path: string, token?: string): Promise<Answer> {
  const f = ca.files("gateway");
  const id = who === undefined ? [] : ca.curlFlags(who).slice(0, 4);
  const res = await curl(
    [
      "--cacert",
      f.ca,
      ...id,
      "--resolve",
      `localhost:${gw.port}:127.0.0.1`,
      "-i",
      ...(token ? ["-H", `Authorization: Bearer ${token}`] : []),
      `https://localhost:${gw.port}${path}`,
    ],
    20,
  );
  assert.equal(res.code, 0, `curl failed: ${res.stderr}`);
  const end = res.stdout.indexOf("\r\n\r\n");
  const head = res.stdout.slice(0, end).split("\r\n");
  const headers: Record<string, string> = {};
  for (const line of head.slice(1)) {
    const i = line.indexOf(":");
    headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
  }
  return {
    status: Number((head[0] ?? "").split(" ")[1]),
    headers,
    body: res.stdout.slice(end + 4),
  };
}

const errorCode = (a: Answer): string => (JSON.parse(a.body) as { error: { code: string } }).error.code;

interface AuditRequest {
  event: string;
  route: string;
  status: number;
  allowed: boolean;
  reason: string;
  detail?: string;
  identity?: { subject: string };
  tokenClaims?: { sub?: string; iss?: string; jti?: string; bound: boolean };
}

function auditRequests(): AuditRequest[] {
  return gw.bg
    .output()
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as AuditRequest)
    .filter((l) => l.event === "request");
}

before(async () => {
  await requireTool("curl", ["--version"]);
  await requireTool("openssl", ["version"]);
  ({ dir, cleanup } = tempDir("mtls-e2e-gateway-token-"));
  ca = await TestCa.init(dir);
  await ca.issue("server", "gateway", ["--dns", "localhost", "--ip", "127.0.0.1"]);
  await ca.issue("client", "alice", ["--uri", "spiffe://acme.test/user/alice"]);
  await ca.issue("client", "mallory", ["--uri", "spiffe://acme.test/user/mallory"]);

  // The authorization server: a signing key, its public half published as a JWKS file.
  const pair = await generateKeyPair("ES256", { extractable: true });
  signingKey = pair.privateKey;
  const jwksFile = join(dir, "jwks.json");
  const jwk = { ...(await exportJWK(pair.publicKey)), kid: "as-key-1", alg: "ES256", use: "sig" };
  writeFileSync(jwksFile, JSON.stringify({ keys: [jwk] }));

  // alice's token is bound to her certificate: x5t#S256 of its DER, as docs/gateway.md shows with openssl.
  const leafPem = pemBlocks(readFileSync(ca.files("alice").cert, "utf8"), "CERTIFICATE")[0] as string;
  const der = Buffer.from(leafPem.replace(/-----(BEGIN|END) CERTIFICATE-----|\s+/g, ""), "base64");
  aliceThumbprint = createHash("sha256").update(der).digest("base64url");
  const viaOpenssl = await run("sh", [
    "-c",
    "openssl x509 -in \"$1\" -outform DER | openssl dgst -sha256 -binary | basenc --base64url | tr -d '='",
    "sh",
    ca.files("alice").cert,
  ]);
  assert.equal(viaOpenssl.code, 0, viaOpenssl.stderr);
  assert.equal(viaOpenssl.stdout.trim(), aliceThumbprint, "the documented openssl pipeline gives x5t#S256");
  aliceJti = randomUUID();
  aliceToken = await issueToken({ cnf: { "x5t#S256": aliceThumbprint } }, { sub: "alice", jti: aliceJti });

  upstream = await startUpstream();
  const up = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  const f = ca.files("gateway");
  const tokenOptions = `jwks=${jwksFile};issuer=${ISSUER};audience=${AUDIENCE}`;
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
      "--allow-all",
      "--route",
      `/bound/=${up};token=bound;${tokenOptions}`,
      "--route",
      `/bearer/=${up};token=bearer;${tokenOptions}`,
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

describe("mtls gateway: certificate-bound access tokens (RFC 8705)", () => {
  it("alice with her certificate and her bound token reaches the upstream, which sees the token", async () => {
    const a = await call("alice", "/bound/orders", aliceToken);
    assert.equal(a.status, 200, a.body);
    const echo = JSON.parse(a.body) as { url: string; headers: Record<string, string> };
    assert.equal(echo.url, "/bound/orders");
    // The upstream is the resource server: it gets the token (to read its claims) and the certificate.
    assert.equal(echo.headers.authorization, `Bearer ${aliceToken}`);
    assert.match(echo.headers["x-client-identity"] ?? "", /CN=alice/);
  });

  it("mallory, with a valid certificate of her own, replaying alice's bound token: 401", async () => {
    const a = await call("mallory", "/bound/orders", aliceToken);
    assert.equal(a.status, 401, a.body);
    assert.equal(errorCode(a), "E_ACCESS_TOKEN_BINDING");
    assert.equal(
      a.headers["www-authenticate"],
      'Bearer realm="mtls", error="invalid_token", error_description="the access token is bound to another client certificate"',
    );
    await waitFor(
      () => auditRequests().some((l) => l.reason === "token_binding"),
      5000,
      "the audit line of the refused replay",
      () => gw.bg.output(),
    );
    const line = auditRequests().find((l) => l.reason === "token_binding") as AuditRequest;
    assert.equal(line.allowed, false);
    assert.equal(line.status, 401);
    assert.match(line.identity?.subject ?? "", /CN=mallory/);
    // Whose token was replayed, by whom: sub/iss/jti recorded, never the token itself.
    assert.deepEqual(line.tokenClaims, { sub: "alice", iss: ISSUER, jti: aliceJti, bound: true });
    assert.match(line.detail ?? "", new RegExp(`bound to the certificate with x5t#S256 ${aliceThumbprint}`));
  });

  it("alice's bound token without any client certificate: 401", async () => {
    const a = await call(undefined, "/bound/orders", aliceToken);
    assert.equal(a.status, 401, a.body);
    // The certificate is checked first: no certificate, no entry, whatever the token.
    assert.equal(errorCode(a), "E_NOT_AUTHENTICATED");
  });

  it("on /bearer/ mallory replaying alice's token gets in: the replay a plain bearer token allows", async () => {
    // Same certificate check, same token, same verifier options: only the binding differs. A
    // bearer token is good for whoever holds it, which is exactly what RFC 8705 binding prevents.
    const a = await call("mallory", "/bearer/orders", aliceToken);
    assert.equal(a.status, 200, a.body);
    const echo = JSON.parse(a.body) as { headers: Record<string, string> };
    assert.equal(echo.headers.authorization, `Bearer ${aliceToken}`);
    assert.match(echo.headers["x-client-identity"] ?? "", /CN=mallory/);
    // And alice herself, of course.
    assert.equal((await call("alice", "/bearer/orders", aliceToken)).status, 200);
  });

  it("an expired token, a token signed by someone else and no token at all: 401", async () => {
    const expired = await issueToken(
      { cnf: { "x5t#S256": aliceThumbprint } },
      { sub: "alice", jti: randomUUID(), expiresIn: -120 },
    );
    for (const path of ["/bound/x", "/bearer/x"]) {
      const a = await call("alice", path, expired);
      assert.equal(a.status, 401, a.body);
      assert.equal(errorCode(a), "E_BAD_ACCESS_TOKEN");
      assert.match(a.headers["www-authenticate"] ?? "", /^Bearer realm="mtls", error="invalid_token"/);
    }
    const forger = await generateKeyPair("ES256");
    const forged = await new SignJWT({ cnf: { "x5t#S256": aliceThumbprint } })
      .setProtectedHeader({ alg: "ES256", kid: "as-key-1" })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject("alice")
      .setExpirationTime("10m")
      .sign(forger.privateKey);
    const f = await call("alice", "/bound/x", forged);
    assert.equal(f.status, 401, f.body);
    assert.equal(errorCode(f), "E_BAD_ACCESS_TOKEN");
    // RFC 6750 §3.1: a request without a token gets a challenge without an error code.
    const none = await call("alice", "/bound/x");
    assert.equal(none.status, 401, none.body);
    assert.equal(errorCode(none), "E_NO_ACCESS_TOKEN");
    assert.equal(none.headers["www-authenticate"], 'Bearer realm="mtls"');
  });

  it("a WebSocket upgrade with the stolen token is refused the same way", async () => {
    const upgrade = (who: string) =>
      new Promise<string>((resolve, reject) => {
        const files = ca.files(who);
        const socket = tlsConnect({
          host: "127.0.0.1",
          port: gw.port,
          servername: "localhost",
          ca: readFileSync(files.ca),
          cert: readFileSync(files.cert),
          key: readFileSync(files.key),
          ALPNProtocols: ["http/1.1"],
        });
        let got = "";
        const timer = setTimeout(() => {
          socket.destroy();
          reject(new Error(`no answer to the upgrade; got ${got}`));
        }, 10_000);
        socket.on("data", (d: Buffer) => {
          got += d.toString("latin1");
        });
        socket.on("error", () => undefined);
        socket.once("close", () => {
          clearTimeout(timer);
          resolve(got);
        });
        socket.write(
          `GET /bound/ws HTTP/1.1\r\nHost: localhost:${gw.port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer ${aliceToken}\r\n\r\n`,
        );
      });
    assert.match(await upgrade("alice"), /^HTTP\/1\.1 101 /);
    const stolen = await upgrade("mallory");
    assert.match(stolen, /^HTTP\/1\.1 401 /);
    assert.match(stolen, /E_ACCESS_TOKEN_BINDING/);
  });

  it("counts the refusals by reason, and never logs a token", async () => {
    const metrics = await metricsOf(gw);
    const series = (reason: string) =>
      `mtls_gateway_refusals_total{gateway="127.0.0.1:0",route="*/bound/",reason="${reason}"}`;
    assert.ok(metricValue(metrics, series("token_binding")) >= 2, metrics);
    assert.ok(metricValue(metrics, series("token_invalid")) >= 2, metrics);
    assert.ok(metricValue(metrics, series("token_missing")) >= 1, metrics);
    assert.ok(!gw.bg.output().includes(aliceToken.split(".")[2] as string), "a token signature in the logs");
  });
});
