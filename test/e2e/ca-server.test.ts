/**
 * End-to-end tests of `mtls ca serve` (issue 4), driving the built CLI and checking it with tools we
 * did not write: curl enrolls (with a CSR from `openssl req`), renews and revokes through the API;
 * `openssl ocsp` sees good, then revoked after `mtls revoke` in another process and after
 * POST /v1/revoke; `openssl crl` parses and verifies /crl; a Node TLS server configured with the
 * served CRLs refuses a revoked client; tokens cannot be replayed, used late or widened; and a
 * SIGKILL in the middle of enrollments leaves the store consistent.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import Database from "better-sqlite3";
import {
  assertOk,
  type CaServe,
  mtls,
  type RunResult,
  requireTool,
  run,
  startCaServe,
  tempDir,
  withTimeout,
} from "./helpers.js";

/** `mtls ca serve ARGS` on free loopback ports (helpers.ts), and what it printed when ready. */
type Served = CaServe & { stdout: string };
async function serve(cwd: string, args: string[]): Promise<Served> {
  const srv = await startCaServe(cwd, args);
  return { ...srv, stdout: srv.bg.output() };
}

interface CurlResult extends RunResult {
  status: number;
  body: string;
  headers: string;
}

/** curl ARGS URL; the HTTP status and body apart, response headers in `headers`. */
async function curl(cwd: string, args: string[]): Promise<CurlResult> {
  const res = await run("curl", ["-sS", "-D", "-", "-w", "\n%{http_code}", ...args], {
    cwd,
    timeoutMs: 30_000,
  });
  const lines = res.stdout.split("\n");
  const status = Number(lines.pop());
  const text = lines.join("\n");
  const split = text.indexOf("\r\n\r\n");
  return {
    ...res,
    status,
    headers: split >= 0 ? text.slice(0, split) : "",
    body: split >= 0 ? text.slice(split + 4) : text,
  };
}

function expectError(res: CurlResult, status: number, code: string): void {
  assert.equal(res.status, status, `${res.status} ${res.body} ${res.stderr}`);
  const body = JSON.parse(res.body) as { error: { code: string; message: string } };
  assert.equal(body.error.code, code, res.body);
}

async function openssl(args: string[], cwd: string): Promise<string> {
  const res = await run("openssl", args, { cwd, timeoutMs: 30_000 });
  assert.equal(res.code, 0, `openssl ${args.join(" ")}:\n${res.stdout}${res.stderr}`);
  return res.stdout + res.stderr;
}

/** A key and CSR made by openssl: NAME.key, NAME.csr. */
async function opensslCsr(cwd: string, name: string, addext: string[] = []): Promise<string> {
  await openssl(
    [
      "req",
      "-new",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      `${name}.key`,
      "-subj",
      `/CN=${name}-ignored`,
      ...addext.flatMap((e) => ["-addext", e]),
      "-out",
      `${name}.csr`,
    ],
    cwd,
  );
  return readFileSync(join(cwd, `${name}.csr`), "utf8");
}

const derToPem = (der: Buffer, label: string) =>
  `-----BEGIN ${label}-----\n${der.toString("base64").replace(/.{1,64}/g, "$&\n")}-----END ${label}-----\n`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("mtls ca serve end to end", { concurrency: true }, () => {
  describe("the service against curl and openssl", { concurrency: 1, timeout: 240_000 }, () => {
    let dir = "";
    let cleanup = () => {};
    let srv: Served | undefined;
    let admin: string[] = [];
    let cacert: string[] = [];
    const serials: Record<string, string> = {};

    before(async () => {
      await requireTool("openssl", ["version"]);
      await requireTool("curl", ["--version"]);
      ({ dir, cleanup } = tempDir("mtls-e2e-serve-"));
      srv = await serve(dir, ["--init"]);
      cacert = ["--cacert", ".mtls/ca/root.crt"];
      admin = [...cacert, "--cert", ".mtls/admin/admin.crt", "--key", ".mtls/admin/admin.key"];
    });
    after(async () => {
      await srv?.bg.stop();
      cleanup();
    });

    /** A token from POST /v1/tokens, as the admin, through curl. */
    const token = async (grant: Record<string, unknown>) => {
      writeFileSync(join(dir, "grant.json"), JSON.stringify(grant));
      const res = await curl(dir, [
        ...admin,
        "-H",
        "content-type: application/json",
        "--data-binary",
        "@grant.json",
        `${srv?.api}/v1/tokens`,
      ]);
      assert.equal(res.status, 201, res.body + res.stderr);
      return JSON.parse(res.body) as { token: string; id: string };
    };

    /** POST /v1/enroll through curl, without a client certificate. */
    const enroll = async (body: Record<string, unknown>) => {
      writeFileSync(join(dir, "enroll.json"), JSON.stringify(body));
      return curl(dir, [
        ...cacert,
        "-H",
        "content-type: application/json",
        "--data-binary",
        "@enroll.json",
        `${srv?.api}/v1/enroll`,
      ]);
    };

    const ocspStatus = async (cert: string) => {
      const out = await openssl(
        [
          "ocsp",
          "-issuer",
          ".mtls/ca/intermediate.crt",
          "-cert",
          cert,
          "-url",
          `${srv?.pub}/ocsp`,
          "-CAfile",
          ".mtls/ca/root.crt",
        ],
        dir,
      );
      assert.match(out, /Response verify OK/, out);
      return /: (good|revoked|unknown)/.exec(out)?.[1];
    };

    it("--init creates the CA and the admin and prints a curl line that works as printed", async () => {
      const out = srv?.stdout ?? "";
      assert.match(out, /created a CA in \.mtls/);
      const line =
        /^\s*(curl --cacert \S+ --cert \S+ --key \S+ https:\/\/127\.0\.0\.1:\d+\/v1\/certificates)$/m.exec(
          out,
        )?.[1];
      assert.ok(line, out);
      const res = assertOk(await run("sh", ["-c", `${line} -sS`], { cwd: dir }), "the printed curl line");
      const body = JSON.parse(res.stdout) as { certificates: { name: string }[]; total: number };
      assert.ok(
        body.certificates.some((c) => c.name === "admin"),
        res.stdout,
      );
    });

    it("refuses admin endpoints without a client certificate (401)", async () => {
      expectError(await curl(dir, [...cacert, `${srv?.api}/v1/certificates`]), 401, "E_NOT_AUTHENTICATED");
      expectError(
        await curl(dir, [
          ...cacert,
          "-H",
          "content-type: application/json",
          "-d",
          "{}",
          `${srv?.api}/v1/tokens`,
        ]),
        401,
        "E_NOT_AUTHENTICATED",
      );
      expectError(await curl(dir, [...cacert, `${srv?.api}/v1/audit`]), 401, "E_NOT_AUTHENTICATED");
    });

    it("curl enrolls an openssl CSR with a one-time token", async () => {
      for (const name of ["alice", "bob", "carol"]) {
        const t = await token({ name, profile: "client", sans: [`email:${name}@acme.test`] });
        const csr = await opensslCsr(dir, name);
        const res = await enroll({ token: t.token, csr });
        assert.equal(res.status, 201, res.body);
        const issued = JSON.parse(res.body) as { serial: string; chain: string; name: string };
        assert.equal(issued.name, name);
        writeFileSync(join(dir, `${name}.crt`), issued.chain);
        serials[name] = issued.serial;
        const leaf = new X509Certificate(issued.chain);
        assert.match(leaf.subject, new RegExp(`CN=${name}$`, "m"));
        assert.equal(leaf.subjectAltName, `email:${name}@acme.test`);
        assert.equal(leaf.serialNumber.toLowerCase(), issued.serial);
        // openssl agrees the chain is good for a TLS client.
        await openssl(
          [
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            ".mtls/ca/root.crt",
            "-untrusted",
            `${name}.crt`,
            `${name}.crt`,
          ],
          dir,
        );
      }
    });

    it("a holder's certificate is not an admin's (403)", async () => {
      const alice = [...cacert, "--cert", "alice.crt", "--key", "alice.key"];
      expectError(await curl(dir, [...alice, `${srv?.api}/v1/certificates`]), 403, "E_NOT_AUTHORIZED");
      expectError(
        await curl(dir, [
          ...alice,
          "-H",
          "content-type: application/json",
          "-d",
          '{"name":"x","profile":"client"}',
          `${srv?.api}/v1/tokens`,
        ]),
        403,
        "E_NOT_AUTHORIZED",
      );
      const own = await curl(dir, [...alice, `${srv?.api}/v1/certificates/${serials.alice}?format=pem`]);
      assert.equal(own.status, 200);
      assert.match(own.body, /^-----BEGIN CERTIFICATE-----/);
    });

    it("a token replayed, expired or used for another name fails", async () => {
      const t = await token({ name: "dave", profile: "client", sans: ["email:dave@acme.test"] });
      const csr = await opensslCsr(dir, "dave");
      assert.equal((await enroll({ token: t.token, csr })).status, 201);
      expectError(await enroll({ token: t.token, csr }), 403, "E_TOKEN_USED");

      const short = await token({ name: "erin", profile: "client", validFor: "1s" });
      await sleep(1500);
      expectError(
        await enroll({ token: short.token, csr: await opensslCsr(dir, "erin") }),
        403,
        "E_TOKEN_EXPIRED",
      );

      const scoped = await token({ name: "frank", profile: "client", sans: ["email:frank@acme.test"] });
      const wider = await opensslCsr(dir, "frank", ["subjectAltName=email:mallory@acme.test"]);
      expectError(await enroll({ token: scoped.token, csr: wider }), 403, "E_TOKEN_SCOPE");
      expectError(
        await enroll({ token: scoped.token, csr: await opensslCsr(dir, "frank2"), name: "mallory" }),
        403,
        "E_TOKEN_SCOPE",
      );
      expectError(await enroll({ token: scoped.token, csr: "not a csr" }), 400, "E_BAD_CSR");
      expectError(
        await enroll({ token: `${scoped.token.slice(0, -2)}AA`, csr: wider }),
        403,
        "E_TOKEN_INVALID",
      );
      // Malformed JSON and oversized bodies get JSON errors too.
      const raw = await curl(dir, [
        ...cacert,
        "-H",
        "content-type: application/json",
        "-d",
        "{oops",
        `${srv?.api}/v1/enroll`,
      ]);
      expectError(raw, 400, "E_BAD_INPUT");
      writeFileSync(join(dir, "big.json"), JSON.stringify({ token: "x", csr: "A".repeat(100_000) }));
      const big = await curl(dir, [
        ...cacert,
        "-H",
        "content-type: application/json",
        "--data-binary",
        "@big.json",
        `${srv?.api}/v1/enroll`,
      ]);
      expectError(big, 413, "E_TOO_LARGE");
    });

    it("curl renews with the current certificate (same name, new serial)", async () => {
      const res = await curl(dir, [
        ...cacert,
        "--cert",
        "bob.crt",
        "--key",
        "bob.key",
        "-X",
        "POST",
        `${srv?.api}/v1/renew`,
      ]);
      assert.equal(res.status, 201, res.body);
      const issued = JSON.parse(res.body) as { serial: string; name: string; chain: string };
      assert.equal(issued.name, "bob");
      assert.notEqual(issued.serial, serials.bob);
      writeFileSync(join(dir, "bob2.crt"), issued.chain);
      serials.bob2 = issued.serial;
    });

    it("openssl ocsp: good, then revoked within seconds of `mtls revoke` in another process", async () => {
      assert.equal(await ocspStatus("alice.crt"), "good");
      assertOk(
        await mtls(["revoke", serials.alice as string, "--reason", "keyCompromise"], { cwd: dir }),
        "mtls revoke",
      );
      const start = Date.now();
      let status: string | undefined;
      while (Date.now() - start < 10_000) {
        status = await ocspStatus("alice.crt");
        if (status === "revoked") break;
        await sleep(200);
      }
      assert.equal(status, "revoked");
      assert.ok(Date.now() - start < 5_000, `took ${Date.now() - start} ms`);
    });

    it("renewal with a revoked certificate fails", async () => {
      const res = await curl(dir, [
        ...cacert,
        "--cert",
        "alice.crt",
        "--key",
        "alice.key",
        "-X",
        "POST",
        `${srv?.api}/v1/renew`,
      ]);
      expectError(res, 401, "E_NOT_AUTHENTICATED");
      assert.match(res.body, /revoked/);
    });

    it("curl revokes through the API: a holder itself, the admin anyone; OCSP says revoked at once", async () => {
      assert.equal(await ocspStatus("bob2.crt"), "good");
      const self = await curl(dir, [
        ...cacert,
        "--cert",
        "bob2.crt",
        "--key",
        "bob.key",
        "-H",
        "content-type: application/json",
        "-d",
        '{"reason":"superseded"}',
        `${srv?.api}/v1/revoke`,
      ]);
      assert.equal(self.status, 200, self.body);
      assert.deepEqual(
        { ...JSON.parse(self.body), revokedAt: undefined },
        { serial: serials.bob2, reason: "superseded", revokedAt: undefined },
      );
      assert.equal(await ocspStatus("bob2.crt"), "revoked");
      const byAdmin = await curl(dir, [
        ...admin,
        "-H",
        "content-type: application/json",
        "-d",
        JSON.stringify({ serial: serials.bob, reason: "cessationOfOperation" }),
        `${srv?.api}/v1/revoke`,
      ]);
      assert.equal(byAdmin.status, 200, byAdmin.body);
      assert.equal(await ocspStatus("bob.crt"), "revoked");
      assert.equal(await ocspStatus("carol.crt"), "good");
    });

    it("openssl crl parses and verifies /crl (intermediate) and /crl/root, with the revocations", async () => {
      for (const [path, file] of [
        ["/crl", "crl.der"],
        ["/crl/root", "root-crl.der"],
      ] as const) {
        const res = await run(
          "curl",
          ["-sS", "-o", file, "-w", "%{http_code} %{content_type}", `${srv?.pub}${path}`],
          { cwd: dir },
        );
        assert.equal(res.stdout, "200 application/pkix-crl");
      }
      const text = await openssl(["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"], dir);
      for (const name of ["alice", "bob", "bob2"])
        assert.match(text, new RegExp(`Serial Number: ${(serials[name] as string).toUpperCase()}`), name);
      assert.doesNotMatch(text, new RegExp((serials.carol as string).toUpperCase()));
      const verified = await openssl(
        [
          "crl",
          "-inform",
          "DER",
          "-in",
          "crl.der",
          "-noout",
          "-verify",
          "-CAfile",
          ".mtls/ca/intermediate.crt",
        ],
        dir,
      );
      assert.match(verified, /verify OK/);
      const rootOk = await openssl(
        ["crl", "-inform", "DER", "-in", "root-crl.der", "-noout", "-verify", "-CAfile", ".mtls/ca/root.crt"],
        dir,
      );
      assert.match(rootOk, /verify OK/);
    });

    it("a Node TLS server configured with the CRLs from /crl and /crl/root refuses a revoked client", async () => {
      const crl = [
        derToPem(readFileSync(join(dir, "crl.der")), "X509 CRL"),
        derToPem(readFileSync(join(dir, "root-crl.der")), "X509 CRL"),
      ];
      const caPem = readFileSync(join(dir, ".mtls/ca/root.crt"), "utf8");
      const server = tls.createServer(
        {
          cert: readFileSync(join(dir, ".mtls/server/ca-server.crt")),
          key: readFileSync(join(dir, ".mtls/server/ca-server.key")),
          ca: caPem,
          crl,
          requestCert: true,
          rejectUnauthorized: false,
        },
        (socket) => {
          socket.end(socket.authorized ? "ok" : `refused ${String(socket.authorizationError)}`);
        },
      );
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      const port = (server.address() as { port: number }).port;
      const attempt = (cert: string, key: string) =>
        withTimeout(
          new Promise<string>((resolve, reject) => {
            let data = "";
            const s = tls.connect({
              host: "127.0.0.1",
              port,
              servername: "localhost",
              ca: caPem,
              cert: readFileSync(join(dir, cert)),
              key: readFileSync(join(dir, key)),
            });
            s.on("data", (d) => {
              data += d;
            });
            s.on("end", () => resolve(data));
            s.on("error", reject);
          }),
          10_000,
          "TLS client",
        );
      try {
        assert.equal(await attempt("carol.crt", "carol.key"), "ok");
        assert.equal(await attempt("alice.crt", "alice.key"), "refused CERT_REVOKED");
        assert.equal(await attempt("bob2.crt", "bob.key"), "refused CERT_REVOKED");
      } finally {
        server.close();
      }
    });

    it("GET /v1/audit exports CSV with a verified hash chain; `mtls audit export` reads the same log", async () => {
      const res = await curl(dir, [...admin, `${srv?.api}/v1/audit?format=csv`]);
      assert.equal(res.status, 200);
      assert.match(res.headers, /x-audit-verified: true/i);
      assert.match(res.headers, /content-type: text\/csv/i);
      const rows = res.body.trimEnd().split("\r\n");
      assert.equal(rows[0], "seq,at,actor,action,subject,details,prevHash,hash");
      const actions = rows.slice(1).map((r) => r.split(",")[3]);
      for (const a of [
        "ca.init",
        "token.create",
        "token.use",
        "cert.issue",
        "cert.renew",
        "cert.revoke",
        "api.denied",
      ])
        assert.ok(actions.includes(a), `${a} in ${[...new Set(actions)].join(" ")}`);
      const exp = assertOk(
        await mtls(["audit", "export", "--format", "jsonl", "--out", "audit.jsonl"], { cwd: dir }),
        "audit export",
      );
      assert.match(exp.stderr, /hash chain intact/);
      const lines = readFileSync(join(dir, "audit.jsonl"), "utf8").trimEnd().split("\n");
      assert.ok(lines.length >= rows.length - 1);
      assert.equal(JSON.parse(lines[0] as string).action, "ca.init");
    });

    it("stops gracefully on SIGTERM", async () => {
      const bg = srv?.bg;
      assert.ok(bg);
      bg.child.kill("SIGTERM");
      const code = await withTimeout(bg.exited, 15_000, "shutdown");
      assert.equal(code, 0, bg.output());
      srv = undefined;
    });
  });

  describe("a SIGKILL during enrollments", { concurrency: 1, timeout: 240_000 }, () => {
    let dir = "";
    let cleanup = () => {};
    before(async () => {
      await requireTool("openssl", ["version"]);
      ({ dir, cleanup } = tempDir("mtls-e2e-serve-kill-"));
      assertOk(await mtls(["init", "--name", "Crash"], { cwd: dir }), "init");
    });
    after(() => cleanup());

    it("leaves neither a used token without its certificate nor a certificate without its row", async (t) => {
      const srv = await serve(dir, ["--rate-limit", "0"]);
      const ca = readFileSync(join(dir, ".mtls/ca/root.crt"));
      const adminId = {
        cert: readFileSync(join(dir, ".mtls/admin/admin.crt")),
        key: readFileSync(join(dir, ".mtls/admin/admin.key")),
      };
      const post = (path: string, body: unknown, id?: typeof adminId) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const req = httpsRequest(
            `${srv.api}${path}`,
            {
              method: "POST",
              ca,
              ...(id ?? {}),
              agent: false,
              headers: { "content-type": "application/json" },
            },
            (res) => {
              let data = "";
              res.on("data", (d) => {
                data += d;
              });
              res.on("end", () => resolve({ status: res.statusCode ?? 0, body: data }));
              res.on("error", reject);
            },
          );
          req.on("error", reject);
          req.end(JSON.stringify(body));
        });
      const N = 60;
      const tokens: string[] = [];
      for (let i = 0; i < N; i++) {
        const res = await post("/v1/tokens", { name: `crash-${i}`, profile: "client" }, adminId);
        assert.equal(res.status, 201, res.body);
        tokens.push((JSON.parse(res.body) as { token: string }).token);
      }
      const csr = await opensslCsr(dir, "crash");
      const done: string[] = [];
      const results = tokens.map((token) =>
        post("/v1/enroll", { token, csr }).then(
          (r) => {
            if (r.status === 201) done.push((JSON.parse(r.body) as { serial: string }).serial);
            return r.status;
          },
          () => -1,
        ),
      );
      // Kill it once a few have finished: the rest are in flight (or not yet read).
      const t0 = Date.now();
      while (done.length < 5 && Date.now() - t0 < 20_000) await sleep(5);
      srv.bg.child.kill("SIGKILL");
      const statuses = await Promise.all(results);
      await srv.bg.stop();
      assert.ok(done.length >= 5, `enrollments before the kill: ${statuses.join(",")}`);
      t.diagnostic(
        `${done.length} enrolled before the kill, ${statuses.filter((s) => s === -1).length} cut off by it`,
      );

      const db = new Database(join(dir, ".mtls/mtls.db"), { readonly: true });
      try {
        const used = db
          .prepare("SELECT id, name, used_by_serial FROM enrollment_tokens WHERE used_at IS NOT NULL")
          .all() as { id: string; name: string; used_by_serial: string }[];
        const certs = db
          .prepare("SELECT serial, name, status FROM certificates WHERE name LIKE 'crash-%'")
          .all() as { serial: string; name: string; status: string }[];
        const bySerial = new Map(certs.map((c) => [c.serial, c]));
        for (const t of used) {
          const c = bySerial.get(t.used_by_serial);
          assert.ok(c, `token ${t.id} is used but certificate ${t.used_by_serial} has no row`);
          assert.equal(c.name, t.name);
          assert.equal(c.status, "valid");
        }
        const usedSerials = new Set(used.map((t) => t.used_by_serial));
        for (const c of certs)
          assert.ok(usedSerials.has(c.serial), `certificate ${c.serial} without a used token`);
        for (const s of done) assert.ok(bySerial.has(s), `answered 201 with ${s}, but it has no row`);
        assert.equal(used.length, certs.length);
        const unused = db
          .prepare("SELECT count(*) AS n FROM enrollment_tokens WHERE used_at IS NULL")
          .get() as {
          n: number;
        };
        assert.equal(used.length + unused.n, N);
      } finally {
        db.close();
      }
      assertOk(await mtls(["audit", "verify"], { cwd: dir }), "audit verify after the crash");
      // And the service starts again on the same store.
      const again = await serve(dir, []);
      try {
        const res = await run("curl", ["-sS", `${again.pub}/healthz`], { cwd: dir });
        assert.equal(res.stdout, '{"ok":true}');
      } finally {
        again.bg.child.kill("SIGTERM");
        await withTimeout(again.bg.exited, 15_000, "shutdown");
      }
    });
  });
});
