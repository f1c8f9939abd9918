/**
 * Refusals of `mtls tunnel server` (issue 3, "proven end to end"): curl presents no certificate, a
 * certificate from another CA, an expired one, one revoked in the CA's CRL, one revoked by an OCSP
 * responder (OpenSSL's `openssl ocsp`, behind a small HTTP front on 127.0.0.1 at the CA's public
 * URL), a server certificate used as a client certificate, and one whose identity the rules do not
 * allow. Each is refused, counted in /metrics under its reason and audited with it, and nothing
 * reaches the target. Then a live connection through a tunnel pair is cut within 2 s of
 * `mtls revoke`. 127.0.0.1 only. Debian packages: curl, openssl.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { type AddressInfo, connect, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { requireTool, tempDir } from "./helpers.js";
import {
  type AuditLine,
  auditLines,
  curl,
  failureSeries,
  failures,
  metricsOf,
  metricValue,
  PASSPHRASE_ENV,
  sleep,
  startClientTunnel,
  startServerTunnel,
  TestCa,
  TUNNEL_LABEL,
  type Tunnel,
  waitFor,
  waitForAudit,
} from "./peers.js";

const execFileP = promisify(execFile);
const openssl = (...args: string[]) => execFileP("openssl", args, { timeout: 10_000 });

const ALLOW = ["--allow-uri", "spiffe://acme.test/user/*"];
const REASONS = ["no_certificate", "unknown_ca", "expired", "revoked", "bad_purpose", "not_allowed"];

let dir: string;
let cleanup: () => void;
let ca: TestCa;
let other: TestCa;
const running: { stop(): Promise<void> }[] = [];
const issued = new Map<string, { serial: string; notAfter: string }>();

/** The target: "/" answers at once, "/stream" sends a line every 100 ms until the client leaves. */
let target: Server;
let targetPort: number;
let targetRequests = 0;

/** The CA's public URL: POST /ocsp is answered by `openssl ocsp` reading `ocspIndex`. */
let front: Server;
let frontPort: number;
let ocspRequests = 0;
let ocspDir: string;
let ocspIndex: string;

async function listenLocal(server: Server): Promise<number> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return (server.address() as AddressInfo).port;
}

/** One line of openssl's index.txt (V or R), from what `mtls issue --json` printed. */
function indexLine(name: string, revoked: boolean): string {
  const cert = issued.get(name);
  assert.ok(cert, name);
  const t = (d: Date) => `${d.toISOString().replace(/[-:T]/g, "").slice(2, 14)}Z`;
  const notAfter = t(new Date(cert.notAfter));
  const serial = cert.serial.toUpperCase();
  return revoked
    ? `R\t${notAfter}\t${t(new Date(Date.now() - 60_000))},keyCompromise\t${serial}\tunknown\t/CN=${name}\n`
    : `V\t${notAfter}\t\t${serial}\tunknown\t/CN=${name}\n`;
}

let exchange = 0;
async function opensslOcsp(request: Buffer): Promise<Buffer> {
  const n = exchange++;
  const reqFile = join(ocspDir, `req-${n}.der`);
  const respFile = join(ocspDir, `resp-${n}.der`);
  writeFileSync(reqFile, request);
  const ca = join(dir, ".mtls", "ca", "intermediate.crt");
  await openssl(
    "ocsp",
    "-index",
    ocspIndex,
    "-CA",
    ca,
    "-rsigner",
    ca,
    "-rkey",
    join(ocspDir, "intermediate.key"),
    "-reqin",
    reqFile,
    "-respout",
    respFile,
    "-nmin",
    "5",
  );
  return readFileSync(respFile);
}

before(async () => {
  await requireTool("curl", ["--version"]);
  await requireTool("openssl", ["version"]);
  ({ dir, cleanup } = tempDir("mtls-e2e-refusals-"));

  front = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      if (req.method !== "POST" || req.url !== "/ocsp") return void res.writeHead(404).end();
      ocspRequests++;
      opensslOcsp(Buffer.concat(chunks)).then(
        (answer) => res.writeHead(200, { "content-type": "application/ocsp-response" }).end(answer),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    });
  });
  frontPort = await listenLocal(front);
  target = createServer((req, res) => {
    targetRequests++;
    if (req.url !== "/stream") return void res.end("hello from the target\n");
    res.writeHead(200, { "content-type": "text/plain" });
    const tick = setInterval(() => res.write("tick\n"), 100);
    res.write("tick\n");
    res.on("close", () => clearInterval(tick));
  });
  targetPort = await listenLocal(target);

  // The expiring certificate first, so that it has expired by the time it is used. The other CA
  // (for unknown_ca) carries the very same names, so only its keys tell it apart; it is made
  // alongside, in its own state directory.
  const otherDir = join(dir, "other");
  mkdirSync(otherDir);
  const makeOther = (async () => {
    other = await TestCa.init(otherDir);
    await other.issue("client", "mallory", ["--uri", "spiffe://acme.test/user/mallory"]);
  })();
  ca = await TestCa.init(dir, ["--public-url", `http://127.0.0.1:${frontPort}`]);
  issued.set(
    "expiring",
    await ca.issue("client", "expiring", ["--ttl", "2s", "--uri", "spiffe://acme.test/user/x"]),
  );
  issued.set("tunnel", await ca.issue("server", "tunnel", ["--dns", "localhost", "--ip", "127.0.0.1"]));
  for (const name of ["alice", "carol", "dave", "erin"]) {
    issued.set(name, await ca.issue("client", name, ["--uri", `spiffe://acme.test/user/${name}`]));
  }
  issued.set("bob", await ca.issue("client", "bob", ["--uri", "spiffe://acme.test/team/bob"]));
  await ca.revoke("carol");
  await makeOther;

  ocspDir = join(dir, "ocsp");
  mkdirSync(ocspDir);
  ocspIndex = join(ocspDir, "index.txt");
  await openssl(
    "pkey",
    "-in",
    join(dir, ".mtls", "ca", "intermediate.key"),
    "-passin",
    `pass:${PASSPHRASE_ENV.MTLS_PASSPHRASE}`,
    "-out",
    join(ocspDir, "intermediate.key"),
  );
});

after(async () => {
  for (const r of running.reverse()) await r.stop();
  front?.closeAllConnections();
  front?.close();
  target?.closeAllConnections();
  target?.close();
  cleanup?.();
});

/** curl flags presenting NAME's certificate (the server is verified against `ca`'s root in direct()). */
function present(from: TestCa, name: string): string[] {
  const f = from.files(name);
  return ["--cert", f.cert, "--key", f.key];
}

/** curl straight to the tunnel server (HTTPS, server name localhost), with `certFlags`. */
function direct(server: Tunnel, certFlags: string[]) {
  return curl([
    "--cacert",
    ca.files("alice").ca,
    ...certFlags,
    "--resolve",
    `localhost:${server.port}:127.0.0.1`,
    `https://localhost:${server.port}/`,
  ]);
}

/**
 * Presents `certFlags` to the server and checks the refusal: curl fails, nothing reaches the
 * target, the reason's counter goes up by one (and no other reason's), and the new audit line
 * carries the reason.
 */
async function expectRefused(
  server: Tunnel,
  certFlags: string[],
  reason: string,
  what: string,
): Promise<AuditLine> {
  const metricsBefore = await metricsOf(server);
  const audited = auditLines(server).length;
  const requests = targetRequests;
  const res = await direct(server, certFlags);
  assert.notEqual(res.code, 0, `${what}: curl must fail, got ${res.stdout}`);
  assert.equal(res.stdout, "", what);
  const line = await waitForAudit(server, (l) => l.allowed === false, what, audited);
  assert.equal(line.reason, reason, `${what}: ${JSON.stringify(line)}`);
  const metricsAfter = await metricsOf(server);
  for (const r of REASONS) {
    const delta = metricValue(metricsAfter, failureSeries(r)) - metricValue(metricsBefore, failureSeries(r));
    assert.equal(delta, r === reason ? 1 : 0, `${what}: mtls_tunnel_handshake_failures_total{reason="${r}"}`);
  }
  assert.equal(targetRequests, requests, `${what}: nothing may reach the target`);
  return line;
}

describe("refusals of mtls tunnel server, each with its metric and audit reason", () => {
  it("no certificate, another CA, expired, revoked (CRL), wrong purpose, not allowed", async () => {
    const server = await startServerTunnel(
      ca,
      `127.0.0.1:${targetPort}`,
      [...ALLOW, "--crl", join(ca.state, "ca", "crl.pem")],
      running,
    );
    const ok = await direct(server, present(ca, "alice"));
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, "hello from the target\n");
    const metrics = await metricsOf(server);
    for (const r of REASONS) assert.match(metrics, new RegExp(`reason="${r}"} 0\\n`), `${r} starts at 0`);

    await expectRefused(server, [], "no_certificate", "no certificate");
    const mallory = await expectRefused(server, present(other, "mallory"), "unknown_ca", "another CA");
    assert.match(mallory.identity?.subject ?? "", /mallory/, JSON.stringify(mallory));

    const expiring = issued.get("expiring");
    assert.ok(expiring);
    const expiresAt = new Date(expiring.notAfter).getTime();
    assert.ok(expiresAt - Date.now() < 10_000, `notAfter ${expiring.notAfter} is not seconds away`);
    await waitFor(() => Date.now() > expiresAt + 1_000, 10_000, "the 2s certificate to expire");
    const expired = await expectRefused(server, present(ca, "expiring"), "expired", "expired");
    assert.equal(expired.identity?.serial, expiring.serial);

    const carol = await expectRefused(server, present(ca, "carol"), "revoked", "revoked in the CRL");
    assert.equal(carol.identity?.serial, issued.get("carol")?.serial);
    await expectRefused(server, present(ca, "tunnel"), "bad_purpose", "server certificate as client");
    const bob = await expectRefused(server, present(ca, "bob"), "not_allowed", "identity not in the rules");
    assert.ok(bob.identity?.sans.includes("uri:spiffe://acme.test/team/bob"), JSON.stringify(bob));

    // The allowed peer still gets through after all of that.
    assert.equal((await direct(server, present(ca, "alice"))).stdout, "hello from the target\n");
  });

  it("revoked via OCSP: openssl's responder says good, then revoked", async () => {
    writeFileSync(ocspIndex, indexLine("erin", false) + indexLine("alice", false));
    const start = () => startServerTunnel(ca, `127.0.0.1:${targetPort}`, [...ALLOW, "--ocsp"], running);
    const first = await start();
    const asked = ocspRequests;
    const ok = await direct(first, present(ca, "erin"));
    assert.equal(ok.code, 0, `erin (good in OCSP) must pass: ${ok.stderr}\n${first.bg.output()}`);
    assert.equal(ok.stdout, "hello from the target\n");
    assert.equal(ocspRequests - asked, 1, "the responder in erin's AIA was asked once");
    assert.equal(await failures(first, "revoked"), 0);

    // The responder now says revoked. A fresh server (no cached "good") refuses erin.
    writeFileSync(ocspIndex, indexLine("erin", true) + indexLine("alice", false));
    const second = await start();
    const line = await expectRefused(second, present(ca, "erin"), "revoked", "revoked in OCSP");
    assert.equal(line.identity?.serial, issued.get("erin")?.serial);
    assert.match(line.detail ?? "", /ocsp/i);
    assert.equal((await direct(second, present(ca, "alice"))).code, 0, "alice is still good");
  });

  it("a live connection through a tunnel pair is cut within 2 s of `mtls revoke`", async (t) => {
    const server = await startServerTunnel(
      ca,
      `127.0.0.1:${targetPort}`,
      [...ALLOW, "--crl", join(ca.state, "ca", "crl.pem")],
      running,
    );
    const client = await startClientTunnel(ca, server, "dave", running);

    const socket: Socket = connect(client.port, "127.0.0.1");
    let received = "";
    let closedAt = 0;
    socket.on("data", (d) => {
      received += d;
    });
    socket.on("error", () => undefined);
    socket.on("close", () => {
      closedAt = Date.now();
    });
    try {
      socket.write("GET /stream HTTP/1.1\r\nHost: target\r\n\r\n");
      await waitFor(() => (received.match(/tick/g) ?? []).length >= 3, 5_000, "the stream to flow");
      await sleep(200);
      assert.equal(closedAt, 0, "still open before the revocation");

      await ca.revoke("dave");
      const revokedAt = Date.now();
      await waitFor(
        () => closedAt > 0,
        2_000,
        "the connection to be cut",
        () => server.bg.output(),
      );
      assert.ok(closedAt - revokedAt <= 2_000);
      t.diagnostic(`cut ${closedAt - revokedAt} ms after \`mtls revoke dave\` returned`);

      const line = await waitForAudit(server, (l) => l.allowed === true && l.reason === "revoked", "the cut");
      assert.equal(line.identity?.serial, issued.get("dave")?.serial);
      assert.ok((line.bytesOut ?? 0) > 0, JSON.stringify(line));
      const metrics = await metricsOf(server);
      assert.equal(metricValue(metrics, `mtls_tunnel_revocations_closed_total{${TUNNEL_LABEL}}`), 1);
      assert.equal(metricValue(metrics, `mtls_tunnel_connections_open{${TUNNEL_LABEL}}`), 0);

      // And dave cannot come back.
      await expectRefused(server, present(ca, "dave"), "revoked", "dave after the revocation");
    } finally {
      socket.destroy();
    }
  });
});
