/**
 * The agent's side of the CA API against a small node:https server that follows docs/api.md
 * (requestCert, JSON shapes, error bodies) on top of the real CA library: the client's TLS rules,
 * error mapping, timeouts and size limits; enroll and renew writing files, and a failed renewal
 * leaving the old files intact.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { createServer as createHttpsServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { TLSSocket } from "node:tls";
import {
  type CertificateAuthority,
  enroll as caEnroll,
  renew as caRenew,
  createToken,
  initCa,
  openCa,
} from "../ca/index.js";
import { statePaths } from "../config/state.js";
import { isMtlsError, MtlsError } from "../errors.js";
import { makeSan } from "../pki/names.js";
import { CaClient, CaHttpError, isRetryable } from "./client.js";
import { enrollCertificate as enroll } from "./enroll.js";
import { readCurrent } from "./files.js";
import { ifDue, renewCertificate } from "./renew.js";

type Mode = "normal" | "hang" | "fail500" | "rate" | "huge" | "notjson" | "wrongkey";

let dir: string;
let ca: CertificateAuthority;
let server: Server;
let url: string;
let rootFile: string;
let mode: Mode = "normal";
const requests: string[] = [];

function send(res: import("node:http").ServerResponse, status: number, body: unknown, headers = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(text);
}

function sendError(res: import("node:http").ServerResponse, err: unknown): void {
  const code = isMtlsError(err) ? err.code : "E_UNAVAILABLE";
  const status =
    {
      E_BAD_INPUT: 400,
      E_BAD_CSR: 400,
      E_NOT_AUTHENTICATED: 401,
      E_TOKEN_INVALID: 403,
      E_TOKEN_USED: 403,
      E_TOKEN_EXPIRED: 403,
      E_TOKEN_SCOPE: 403,
      E_REVOKED: 403,
      E_EXPIRED: 403,
      E_NOT_FOUND: 404,
    }[code as string] ?? 500;
  send(res, status, { error: { code, message: status === 500 ? "internal" : (err as Error).message } });
}

function issuedBody(issued: Awaited<ReturnType<CertificateAuthority["issue"]>>) {
  const r = issued.record;
  return {
    serial: r.serial,
    name: r.name,
    profile: r.profile,
    notBefore: r.notBefore.toISOString(),
    notAfter: r.notAfter.toISOString(),
    certificate: issued.chainPem.split(/(?<=-----END CERTIFICATE-----\n)/)[0],
    chain: issued.chainPem,
    ca: ca.rootPem,
  };
}

/** A CA service following docs/api.md for /v1/enroll, /v1/renew and /v1/ca, with failure modes. */
async function startFakeCa(): Promise<void> {
  const tls = await ca.issue({
    profile: "server",
    name: "ca-service",
    sans: [makeSan("ip", "127.0.0.1")],
    actor: "test",
  });
  server = createHttpsServer(
    {
      cert: tls.chainPem,
      key: tls.privateKey?.export({ format: "pem", type: "pkcs8" }),
      ca: ca.rootPem,
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: "TLSv1.2",
    },
    (req, res) => {
      requests.push(`${req.method} ${req.url}`);
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        void (async () => {
          if (mode === "hang") return;
          if (mode === "fail500") return send(res, 503, { error: { code: "E_STORE", message: "db down" } });
          if (mode === "rate")
            return send(
              res,
              429,
              { error: { code: "E_RATE_LIMITED", message: "slow down" } },
              { "retry-after": "7" },
            );
          if (mode === "huge") return send(res, 201, { pad: "x".repeat(2 * 1024 * 1024) });
          if (mode === "notjson") {
            res.writeHead(502, { "content-type": "text/html" });
            return res.end("<html>bad gateway</html>");
          }
          try {
            const body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : {};
            if (req.method === "GET" && req.url === "/v1/ca") {
              return send(res, 200, { root: ca.rootPem, intermediate: "", chain: "" });
            }
            if (req.method === "POST" && req.url === "/v1/enroll") {
              const issued = await caEnroll(ca, { token: body.token, csr: body.csr });
              return send(res, 201, issuedBody(issued));
            }
            if (req.method === "POST" && req.url === "/v1/renew") {
              const sock = req.socket as TLSSocket;
              const peer = sock.getPeerCertificate();
              if (!sock.authorized || !peer?.serialNumber) {
                throw new MtlsError("E_NOT_AUTHENTICATED", "a valid client certificate is required");
              }
              if (mode === "wrongkey") {
                const other = await ca.issue({ profile: "client", name: "other", sans: [], actor: "test" });
                return send(res, 201, issuedBody(other));
              }
              const issued = await caRenew(ca, {
                serial: peer.serialNumber,
                ...(body.csr ? { csr: body.csr } : {}),
                actor: `api:${peer.serialNumber}`,
              });
              return send(res, 201, issuedBody(issued));
            }
            throw new MtlsError("E_NOT_FOUND", "no such endpoint");
          } catch (err) {
            sendError(res, err);
          }
        })();
      });
    },
  );
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function token(
  name: string,
  ttlMs = 3_600_000,
  profile: "client" | "server" = "client",
): Promise<string> {
  const sans = profile === "server" ? [makeSan("dns", `${name}.acme.test`)] : [];
  return (await createToken(ca, { name, profile, sans, ttlMs }, { actor: "test" })).token;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "mtls-agent-client-"));
  const paths = statePaths(join(dir, "state"));
  await initCa({ paths, name: "Acme", passphrase: "test-passphrase", admin: false, actor: "test" });
  ca = await openCa(paths, { env: { MTLS_PASSPHRASE: "test-passphrase" } });
  rootFile = join(dir, "root.pem");
  writeFileSync(rootFile, ca.rootPem);
  await startFakeCa();
});

after(async () => {
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r));
  await ca?.store.close();
  rmSync(dir, { recursive: true, force: true });
});

const rejectsWith = (p: Promise<unknown>, code: string, re?: RegExp) =>
  assert.rejects(p, (err) => {
    assert.ok(isMtlsError(err), `an MtlsError, got ${err}`);
    assert.equal(err.code, code, err.message);
    if (re) assert.match(err.message, re);
    return true;
  });

describe("CaClient", () => {
  test("refuses anything but https, and a cert without its key", () => {
    assert.throws(() => new CaClient({ url: "http://127.0.0.1:1", ca: ca.rootPem }), /must be https/);
    assert.throws(() => new CaClient({ url: "not a url", ca: ca.rootPem }), /invalid CA URL/);
    assert.throws(() => new CaClient({ url, ca: ca.rootPem, cert: "x" }), /go together/);
    assert.throws(() => new CaClient({ url, ca: "not pem" }), /must be PEM/);
  });

  test("GET /v1/ca over TLS with the root as the only anchor", async () => {
    const c = new CaClient({ url, ca: ca.rootPem });
    const r = await c.caCertificates();
    assert.equal(r.root, ca.rootPem);
  });

  test("another root is E_UNTRUSTED, and a name the certificate lacks too", async () => {
    const other = mkdtempSync(join(dir, "other-"));
    const paths = statePaths(other);
    const o = await initCa({ paths, name: "Other", passphrase: "x", admin: false, actor: "test" });
    const otherRoot = readFileSync(paths.rootCert, "utf8");
    assert.ok(o.root);
    await rejectsWith(new CaClient({ url, ca: otherRoot }).caCertificates(), "E_UNTRUSTED", /does not trust/);
    const byName = url.replace("127.0.0.1", "localhost");
    await rejectsWith(new CaClient({ url: byName, ca: ca.rootPem }).caCertificates(), "E_UNTRUSTED");
  });

  test("nothing listening is E_UNAVAILABLE, and retryable", async () => {
    const closed = new CaClient({ url: "https://127.0.0.1:1", ca: ca.rootPem, timeoutMs: 2000 });
    const err = await closed.caCertificates().catch((e: unknown) => e);
    assert.ok(isMtlsError(err, "E_UNAVAILABLE"), String(err));
    assert.match((err as Error).message, /cannot reach the CA at https:\/\/127\.0\.0\.1:1: ECONNREFUSED/);
    assert.equal(isRetryable(err), true);
  });

  test("a CA that does not answer is E_UNAVAILABLE after the timeout", async () => {
    mode = "hang";
    try {
      const started = Date.now();
      await rejectsWith(
        new CaClient({ url, ca: ca.rootPem, timeoutMs: 300 }).caCertificates(),
        "E_UNAVAILABLE",
        /did not answer within 300 ms/,
      );
      assert.ok(Date.now() - started < 3000);
    } finally {
      mode = "normal";
    }
  });

  test("an error body becomes E_HTTP with the server's code and message", async () => {
    const c = new CaClient({ url, ca: ca.rootPem });
    const err = await c.request("GET", "/v1/nothing").catch((e: unknown) => e);
    assert.ok(err instanceof CaHttpError);
    assert.equal(err.code, "E_HTTP");
    assert.equal(err.serverCode, "E_NOT_FOUND");
    assert.equal(err.status, 404);
    assert.equal(err.message, "the CA refused GET /v1/nothing: E_NOT_FOUND: no such endpoint (HTTP 404)");
    assert.equal(isRetryable(err), false);
  });

  test("503 and 429 are retryable; 429 carries Retry-After", async () => {
    const c = new CaClient({ url, ca: ca.rootPem });
    mode = "fail500";
    try {
      const e1 = await c.caCertificates().catch((e: unknown) => e);
      assert.ok(e1 instanceof CaHttpError && e1.serverCode === "E_STORE" && isRetryable(e1));
      mode = "rate";
      const e2 = await c.caCertificates().catch((e: unknown) => e);
      assert.ok(e2 instanceof CaHttpError);
      assert.equal(e2.retryAfterMs, 7000);
      assert.equal(isRetryable(e2), true);
    } finally {
      mode = "normal";
    }
  });

  test("an answer over the size limit is refused; a non-JSON error still says its status", async () => {
    const c = new CaClient({ url, ca: ca.rootPem, maxResponseBytes: 64 * 1024 });
    mode = "huge";
    try {
      await rejectsWith(c.caCertificates(), "E_TOO_LARGE");
      mode = "notjson";
      await rejectsWith(c.caCertificates(), "E_HTTP", /GET \/v1\/ca: HTTP 502/);
    } finally {
      mode = "normal";
    }
  });
});

describe("enroll", () => {
  test("writes NAME.crt (leaf + intermediate), NAME.key 0600 and ca.crt; the key never left", async () => {
    const out = join(dir, "enroll-1");
    const t = await token("alice");
    const before = requests.length;
    const res = await enroll({ caUrl: url, caCert: rootFile, token: t, name: "alice", outDir: out });
    assert.deepEqual(requests.slice(before), ["POST /v1/enroll"]);
    assert.equal(res.name, "alice");
    const chain = readFileSync(join(out, "alice.crt"), "utf8");
    assert.equal(chain.match(/BEGIN CERTIFICATE/g)?.length, 2);
    assert.equal(statSync(join(out, "alice.key")).mode & 0o777, 0o600);
    assert.equal(readFileSync(join(out, "ca.crt"), "utf8"), ca.rootPem);
    const current = readCurrent({ cert: join(out, "alice.crt"), key: join(out, "alice.key") });
    assert.equal(current.serial, res.serial);
    assert.match(new X509Certificate(chain).subject, /CN=alice/);
  });

  test("existing files are refused before the token is spent; a spent token writes nothing", async () => {
    const out = join(dir, "enroll-2");
    mkdirSync(out);
    writeFileSync(join(out, "bob.crt"), "old");
    const t = await token("bob");
    const before = requests.length;
    await rejectsWith(
      enroll({ caUrl: url, caCert: rootFile, token: t, name: "bob", outDir: out }),
      "E_EXISTS",
    );
    assert.equal(requests.length, before, "no request");
    rmSync(join(out, "bob.crt"));
    await enroll({ caUrl: url, caCert: rootFile, token: t, name: "bob", outDir: out });
    const again = join(dir, "enroll-2b");
    await rejectsWith(
      enroll({ caUrl: url, caCert: rootFile, token: t, name: "bob", outDir: again }),
      "E_HTTP",
      /E_TOKEN_USED/,
    );
    assert.equal(existsSync(join(again, "bob.key")), false);
    assert.equal(existsSync(join(again, "bob.crt")), false);
  });

  test("a CA that cannot be reached writes nothing", async () => {
    const out = join(dir, "enroll-3");
    const t = await token("carol");
    await rejectsWith(
      enroll({
        caUrl: "https://127.0.0.1:1",
        caCert: rootFile,
        token: t,
        name: "carol",
        outDir: out,
        timeoutMs: 1000,
      }),
      "E_UNAVAILABLE",
    );
    assert.equal(existsSync(join(out, "carol.key")), false);
  });
});

describe("renew", () => {
  async function enrolled(name: string, ttlMs = 3_600_000) {
    const out = join(dir, `renew-${name}`);
    await enroll({ caUrl: url, caCert: rootFile, token: await token(name, ttlMs), name, outDir: out });
    return {
      name,
      files: { cert: join(out, `${name}.crt`), key: join(out, `${name}.key`) },
      caUrl: url,
      caCert: rootFile,
    };
  }

  test("same key: a new serial and validity, the key file untouched", async () => {
    const t = await enrolled("dave");
    const before = readCurrent(t.files);
    const keyBefore = readFileSync(t.files.key, "utf8");
    const res = await renewCertificate(t);
    assert.equal(res.previousSerial, before.serial);
    assert.notEqual(res.serial, before.serial);
    assert.equal(res.rekeyed, false);
    assert.equal(readFileSync(t.files.key, "utf8"), keyBefore);
    assert.equal(readCurrent(t.files).serial, res.serial);
  });

  test("--rekey: a new key of the same type, certificate and key in place together", async () => {
    const t = await enrolled("erin");
    const keyBefore = readFileSync(t.files.key, "utf8");
    const steps: string[] = [];
    const res = await renewCertificate(t, { rekey: true, onStep: (s) => steps.push(s) });
    assert.deepEqual(steps, ["cert", "key"], "certificate first, then its key");
    assert.equal(res.rekeyed, true);
    assert.notEqual(readFileSync(t.files.key, "utf8"), keyBefore);
    assert.equal(statSync(t.files.key).mode & 0o777, 0o600);
    assert.equal(readCurrent(t.files).serial, res.serial, "the pair matches");
  });

  test("a failed renewal leaves the old files intact (CA down, CA refusing, wrong answer)", async () => {
    const t = await enrolled("frank");
    const snapshot = () => [readFileSync(t.files.cert, "utf8"), readFileSync(t.files.key, "utf8")];
    const before = snapshot();
    for (const m of ["fail500", "hang", "wrongkey"] as const) {
      mode = m;
      try {
        await assert.rejects(renewCertificate(t, { rekey: true, timeoutMs: 500 }));
      } finally {
        mode = "normal";
      }
      assert.deepEqual(snapshot(), before, `files unchanged after ${m}`);
    }
    await assert.rejects(renewCertificate({ ...t, caUrl: "https://127.0.0.1:1" }, { timeoutMs: 1000 }));
    assert.deepEqual(snapshot(), before);
    const left = readdirSync(join(dir, "renew-frank"));
    assert.deepEqual(
      left.filter((f) => f.endsWith(".tmp")),
      [],
      "no temporary files left",
    );
  });

  test("a revoked certificate is refused by the CA (E_HTTP with E_REVOKED)", async () => {
    const t = await enrolled("gina");
    await ca.revoke([readCurrent(t.files).serial], "keyCompromise", "test");
    const err = await renewCertificate(t).catch((e: unknown) => e);
    assert.ok(isMtlsError(err), String(err));
    assert.match((err as Error).message, /E_REVOKED|E_NOT_AUTHENTICATED/);
  });

  test("--if-due: not due, due, expired", async () => {
    const t = await enrolled("hank", 60_000);
    const cur = readCurrent(t.files);
    const now = new Date();
    const d1 = ifDue(t.files, now);
    assert.equal(d1.action, "skip");
    if (d1.action === "skip") assert.ok(d1.dueAt.getTime() > now.getTime());
    assert.equal(ifDue(t.files, new Date(cur.notAfter.getTime() - 10_000)).action, "renew");
    assert.equal(ifDue(t.files, new Date(cur.notAfter.getTime() + 1)).action, "expired");
    await rejectsWith(
      renewCertificate(t, { clock: () => new Date(cur.notAfter.getTime() + 1) }),
      "E_EXPIRED",
      /can no longer renew itself: enroll again/,
    );
  });
});
