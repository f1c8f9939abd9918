/**
 * End-to-end tests of the CA command line (issue 2): the user's journey from `mtls init` to a
 * tamper-evident audit log, file modes and passphrases, `init` safety, the error contract for bad
 * input (exit code, one `mtls: ` line, no partial files, no row without its file) and crash safety
 * of `issue`. Every test drives the built CLI (dist/cli/main.js) in its own temporary directory.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pathToFileURL } from "node:url";
import Database from "better-sqlite3";
import {
  assertCliError,
  assertOk,
  type ListRow,
  listFiles,
  listJson,
  modeOf,
  mtls,
  partialFiles,
  pemBlocks,
  REPO_ROOT,
  requireTool,
  run,
  tempDir,
} from "./helpers.js";

const DAY = 86_400_000;

/** `openssl ARGS` in `cwd`; throws with the output when it fails. */
async function openssl(args: string[], cwd: string): Promise<string> {
  return assertOk(await run("openssl", args, { cwd, timeoutMs: 30_000 }), `openssl ${args.join(" ")}`).stdout;
}

/** An openssl-made CSR (PEM) for `subj`, with a fresh key of `newkey` and optional -addext values. */
async function opensslCsr(
  cwd: string,
  file: string,
  opts: { subj: string; newkey?: string[]; addext?: string[] },
): Promise<string> {
  const newkey = opts.newkey ?? ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
  await openssl(
    [
      "req",
      "-new",
      ...newkey,
      "-nodes",
      "-keyout",
      `${file}.key`,
      "-subj",
      opts.subj,
      ...(opts.addext ?? []).flatMap((e) => ["-addext", e]),
      "-out",
      file,
    ],
    cwd,
  );
  return join(cwd, file);
}

// The groups below are independent (each has its own directories and CA), so they run side by side;
// inside a group the order is the order written, unless the group says otherwise.
describe("mtls CLI end to end", { concurrency: true }, () => {
  describe("mtls CLI: the user's journey", { concurrency: 1, timeout: 180_000 }, () => {
    let dir = "";
    let cleanup = () => {};
    const inDir = (args: string[]) => mtls(args, { cwd: dir });
    let p12Password = "";
    let aliceSerial = "";

    before(async () => {
      await requireTool("openssl", ["version"]);
      ({ dir, cleanup } = tempDir("mtls-e2e-journey-"));
    });
    after(() => cleanup());

    it("init creates a CA in ./.mtls, generates a 0600 passphrase file and says so on stderr", async () => {
      const res = assertOk(await inDir(["init", "--name", "Acme Corp"]), "init");
      assert.match(res.stdout, /CA "Acme Corp" created in /);
      assert.match(res.stderr, /generated a passphrase for the CA keys in .*\.mtls\/passphrase/);
      assert.equal(modeOf(join(dir, ".mtls/passphrase")), 0o600);
      for (const f of ["root.crt", "intermediate.crt", "intermediate.key", "root.key", "crl.pem"])
        assert.ok(existsSync(join(dir, ".mtls/ca", f)), `${f} in .mtls/ca`);
      assert.equal(modeOf(join(dir, ".mtls/ca/intermediate.key")), 0o600);
      assert.equal(modeOf(join(dir, ".mtls/ca/root.key")), 0o600);
      assert.match(readFileSync(join(dir, ".mtls/ca/intermediate.key"), "utf8"), /ENCRYPTED PRIVATE KEY/);
      // and the first admin of the CA service: a client certificate with its PKCS#12 and password
      assert.match(res.stdout, /admin: .*\.mtls\/admin\/admin\.crt/);
      assert.match(res.stdout, /\.mtls\/admin\/admin\.p12 \(password in .*admin\.p12\.password\)/);
      for (const f of ["admin.key", "admin.p12", "admin.p12.password"])
        assert.equal(modeOf(join(dir, ".mtls/admin", f)), 0o600, f);
      assert.equal(
        pemBlocks(readFileSync(join(dir, ".mtls/admin/admin.crt"), "utf8"), "CERTIFICATE").length,
        2,
      );
      assert.equal(assertOk(await inDir(["ca", "get", "admins"]), "ca get").stdout, "admin\n");
    });

    it("token create prints a one-time token; ca set/get change and show settings", async () => {
      const res = assertOk(
        await inDir([
          "token",
          "create",
          "db",
          "--profile",
          "server",
          "--dns",
          "db.acme.test",
          "--valid-for",
          "1h",
        ]),
        "token create",
      );
      assert.match(res.stdout, /^mtls_[0-9a-f]{16}\.[A-Za-z0-9_-]{43}\n$/);
      assert.match(res.stderr, /enrolls one server certificate "db" \(dns:db\.acme\.test\)/);
      const json = JSON.parse(
        assertOk(await inDir(["token", "create", "bob", "--profile", "client", "--json"]), "token --json")
          .stdout,
      ) as { token: string; id: string; expiresAt: string };
      assert.equal(json.token.slice(5, 21), json.id);
      const listed = assertOk(await inDir(["token", "list"]), "token list").stdout;
      assert.match(listed, new RegExp(`${json.id}\\s+bob\\s+client\\s+unused`));
      assert.doesNotMatch(listed, new RegExp(json.token.slice(22)));
      assertCliError(await inDir(["token", "create", "x", "--profile", "server"]), 1, /DNS name or IP/);
      assertCliError(
        await inDir(["token", "create", "x", "--profile", "client", "--valid-for", "8d"]),
        1,
        /7 days/,
      );
      assertCliError(await inDir(["ca", "set", "public-url", "ftp://x"]), 2, /invalid public URL/);
      assertOk(await inDir(["ca", "set", "public-url", "http://127.0.0.1:8080"]), "ca set public-url");
      assert.equal(assertOk(await inDir(["ca", "get", "public-url"])).stdout, "http://127.0.0.1:8080\n");
      assertOk(await inDir(["ca", "set", "public-url", "none"]), "ca set public-url none");
      assert.match(assertOk(await inDir(["ca", "get"])).stdout, /public-url: \(not set\)\nadmins: admin\n/);
    });

    it("issue server writes web.crt (leaf + intermediate), web.key 0600 and ca.crt", async () => {
      const res = assertOk(
        await inDir(["issue", "server", "web", "--dns", "localhost", "--ip", "127.0.0.1", "--out", "certs/"]),
        "issue server",
      );
      assert.match(res.stdout, /issued server certificate "web"/);
      const crt = readFileSync(join(dir, "certs/web.crt"), "utf8");
      assert.equal(pemBlocks(crt, "CERTIFICATE").length, 2, "leaf then intermediate");
      const leaf = new X509Certificate(crt);
      assert.match(leaf.subject, /CN=web/);
      assert.equal(leaf.subjectAltName, "DNS:localhost, IP Address:127.0.0.1");
      assert.ok(leaf.checkHost("localhost"));
      assert.ok(leaf.checkIP("127.0.0.1"));
      assert.equal(modeOf(join(dir, "certs/web.key")), 0o600);
      assert.match(readFileSync(join(dir, "certs/web.key"), "utf8"), /^-----BEGIN PRIVATE KEY-----/);
      assert.equal(
        readFileSync(join(dir, "certs/ca.crt"), "utf8"),
        readFileSync(join(dir, ".mtls/ca/root.crt"), "utf8"),
      );
    });

    it("issue client with e-mail, SPIFFE URI, 30d and --p12 prints the generated password once", async () => {
      const res = assertOk(
        await inDir([
          "issue",
          "client",
          "alice",
          "--email",
          "alice@acme.test",
          "--uri",
          "spiffe://acme.test/user/alice",
          "--ttl",
          "30d",
          "--p12",
          "--out",
          "certs/",
        ]),
        "issue client",
      );
      const m = /PKCS#12 password \(shown once\): (\S+)/.exec(res.stdout);
      assert.ok(m?.[1], `password printed: ${res.stdout}`);
      p12Password = m[1];
      assert.equal(modeOf(join(dir, "certs/alice.key")), 0o600);
      assert.equal(modeOf(join(dir, "certs/alice.p12")), 0o600);
      const leaf = new X509Certificate(readFileSync(join(dir, "certs/alice.crt")));
      aliceSerial = leaf.serialNumber.toLowerCase();
      const days = (new Date(leaf.validTo).getTime() - Date.now()) / DAY;
      assert.ok(days > 29.9 && days <= 30.01, `30 days, got ${days}`);
    });

    it("list shows both as a table and as JSON", async () => {
      const table = assertOk(await inDir(["list"]), "list").stdout;
      assert.match(table, /^NAME\s+PROFILE\s+STATUS\s+NOT AFTER\s+SERIAL\s+SANS/);
      assert.match(
        table,
        /\nalice\s+client\s+valid\s.*email:alice@acme\.test, uri:spiffe:\/\/acme\.test\/user\/alice/,
      );
      assert.match(table, /\nweb\s+server\s+valid\s.*dns:localhost, ip:127\.0\.0\.1/);
      const rows = await listJson(dir);
      assert.deepEqual(rows.map((r) => r.name).sort(), ["admin", "alice", "web"]);
      const alice = rows.find((r) => r.name === "alice") as ListRow;
      assert.equal(alice.serial, aliceSerial);
      assert.equal(alice.profile, "client");
      assert.equal(alice.keyType, "ec-p256");
      assert.equal(alice.status, "valid");
      assert.deepEqual(alice.sans, ["email:alice@acme.test", "uri:spiffe://acme.test/user/alice"]);
      assert.match(alice.fingerprint, /^[0-9a-f]{64}$/);
      assert.equal(alice.certPath, join(dir, "certs/alice.crt"));
    });

    it("list --expiring 14d shows none, --expiring 60d shows the 30-day clients, --revoked none", async () => {
      assert.deepEqual(await listJson(dir, ["--expiring", "14d"]), []);
      const soon = await listJson(dir, ["--expiring", "60d"]);
      assert.deepEqual(
        soon.map((r) => r.name),
        ["admin", "alice"],
      );
      assert.deepEqual(await listJson(dir, ["--revoked"]), []);
    });

    it("inspect reads a certificate file, PEM and DER", async () => {
      const pem = assertOk(await inDir(["inspect", "certs/alice.crt"]), "inspect crt").stdout;
      assert.match(pem, /Subject:\s+O=Acme Corp, CN=alice/);
      assert.match(pem, /SANs:\s+email:alice@acme\.test, uri:spiffe:\/\/acme\.test\/user\/alice/);
      assert.match(pem, /Ext key use:\s+clientAuth/);
      assert.match(pem, /Certificate #2 \(CA\)/);
      await openssl(["x509", "-in", "certs/alice.crt", "-outform", "DER", "-out", "alice.der"], dir);
      const der = assertOk(await inDir(["inspect", "alice.der", "--json"]), "inspect der").stdout;
      const parsed = JSON.parse(der) as { type: string; certificates: { serial: string; sans: string[] }[] };
      assert.equal(parsed.type, "certificates");
      assert.equal(parsed.certificates[0]?.serial, aliceSerial);
      assert.deepEqual(parsed.certificates[0]?.sans, [
        "email:alice@acme.test",
        "uri:spiffe://acme.test/user/alice",
      ]);
    });

    it("inspect reads an openssl-made CSR, PEM and DER, and checks its signature", async () => {
      await opensslCsr(dir, "bob.csr", { subj: "/CN=bob", addext: ["subjectAltName=DNS:bob.acme.test"] });
      await openssl(["req", "-in", "bob.csr", "-outform", "DER", "-out", "bob.csr.der"], dir);
      for (const f of ["bob.csr", "bob.csr.der"]) {
        const res = assertOk(await inDir(["inspect", f]), `inspect ${f}`).stdout;
        assert.match(res, /signing request \(signature verified\)/);
        assert.match(res, /Subject:\s+CN=bob/);
        assert.match(res, /SANs:\s+dns:bob\.acme\.test/);
      }
    });

    it("inspect reads the CRL bundle (PEM) and a DER CRL", async () => {
      const pem = assertOk(await inDir(["inspect", ".mtls/ca/crl.pem"]), "inspect crl").stdout;
      assert.match(pem, /CRL #1 of O=Acme Corp, CN=Acme Corp Intermediate CA/);
      assert.match(pem, /CRL #1 of O=Acme Corp, CN=Acme Corp Root CA/);
      await openssl(["crl", "-in", ".mtls/ca/root.crl", "-outform", "DER", "-out", "root.crl.der"], dir);
      const der = assertOk(await inDir(["inspect", "root.crl.der"]), "inspect crl der").stdout;
      assert.match(der, /CRL #1 of O=Acme Corp, CN=Acme Corp Root CA/);
      assert.match(der, /Revoked:\s+0/);
    });

    it("inspect reads the .p12 with --password-file, and refuses a wrong password", async () => {
      writeFileSync(join(dir, "p12.pass"), `${p12Password}\n`);
      const res = assertOk(await inDir(["inspect", "certs/alice.p12", "--password-file", "p12.pass"]), "p12");
      assert.match(res.stdout, /PKCS#12 "alice": .*AES-256/);
      assert.match(res.stdout, /Private key:\s+ec-p256/);
      assert.match(res.stdout, /Subject:\s+O=Acme Corp, CN=alice/);
      writeFileSync(join(dir, "wrong.pass"), "not-the-password\n");
      assertCliError(
        await inDir(["inspect", "certs/alice.p12", "--password-file", "wrong.pass"]),
        1,
        /password/,
      );
    });

    it("verify --purpose client passes; --purpose server fails with exit 1", async () => {
      const ok = assertOk(await inDir(["verify", "certs/alice.crt", "--purpose", "client"]), "verify");
      assert.match(ok.stdout, /^OK: O=Acme Corp, CN=alice/);
      assert.match(ok.stdout, /chain: .*alice <- .*Intermediate CA <- .*Root CA/);
      assertCliError(await inDir(["verify", "certs/alice.crt", "--purpose", "server"]), 1, /server/);
      assertOk(await inDir(["verify", "certs/web.crt", "--purpose", "server"]), "verify server");
    });

    it("revoke alice --reason keyCompromise; verify then fails with 'revoked'", async () => {
      const res = assertOk(await inDir(["revoke", "alice", "--reason", "keyCompromise"]), "revoke");
      assert.match(res.stdout, new RegExp(`revoked "alice" serial ${aliceSerial} \\(keyCompromise\\)`));
      const revoked = await listJson(dir, ["--revoked"]);
      assert.deepEqual(
        revoked.map((r) => [r.name, r.status, r.revocationReason]),
        [["alice", "revoked", "keyCompromise"]],
      );
      assertCliError(await inDir(["verify", "certs/alice.crt", "--purpose", "client"]), 1, /revoked/);
    });

    it("crl --out writes both CRLs (PEM) listing alice; crl --der --out writes the intermediate's", async () => {
      const res = assertOk(await inDir(["crl", "--out", "ca.crl"]), "crl");
      assert.match(res.stdout, /wrote the intermediate and root CRLs/);
      assert.equal(pemBlocks(readFileSync(join(dir, "ca.crl"), "utf8"), "X509 CRL").length, 2);
      const shown = assertOk(await inDir(["inspect", "ca.crl"]), "inspect ca.crl").stdout;
      assert.match(shown, new RegExp(`${aliceSerial}\\s+\\S+\\s+keyCompromise`));
      // Publishing again over our own CRL is the normal case and needs no --force.
      assertOk(await inDir(["crl", "--out", "ca.crl"]), "crl again");
      assertOk(await inDir(["crl", "--der", "--out", "ca.crl.der"]), "crl --der");
      const der = readFileSync(join(dir, "ca.crl.der"));
      assert.equal(der[0], 0x30, "DER SEQUENCE");
      assert.ok(!der.includes("-----BEGIN"), "not PEM");
      const shownDer = assertOk(await inDir(["inspect", "ca.crl.der"]), "inspect der crl").stdout;
      assert.match(shownDer, /of O=Acme Corp, CN=Acme Corp Intermediate CA/);
      assert.doesNotMatch(shownDer, /Root CA/);
      assert.match(shownDer, /Revoked:\s+1/);
      // Over a file that is not our CRL: refused without --force.
      writeFileSync(join(dir, "notes.txt"), "keep me\n");
      assertCliError(await inDir(["crl", "--out", "notes.txt"]), 1, /already exists/);
      assert.equal(readFileSync(join(dir, "notes.txt"), "utf8"), "keep me\n");
    });

    it("export alice as p12, pem, der and chain", async () => {
      writeFileSync(join(dir, "exp.pass"), "export-pass\n");
      mkdirSync(join(dir, "exp"));
      assertOk(
        await inDir([
          "export",
          "alice",
          "--format",
          "p12",
          "--out",
          "exp/alice.p12",
          "--p12-password-file",
          "exp.pass",
        ]),
        "export p12",
      );
      assert.equal(modeOf(join(dir, "exp/alice.p12")), 0o600);
      const inspected = assertOk(
        await inDir(["inspect", "exp/alice.p12", "--password-file", "exp.pass"]),
        "inspect exported p12",
      ).stdout;
      assert.match(inspected, /Private key:\s+ec-p256/);
      assert.match(inspected, new RegExp(`Serial:\\s+${aliceSerial}`));
      for (const format of ["pem", "der", "chain"]) {
        const res = assertOk(
          await inDir(["export", "alice", "--format", format, "--out", `exp/alice.${format}`]),
        );
        assert.match(res.stdout, new RegExp(`as ${format} to`));
        assert.match(res.stderr, /warning: "alice" .* is revoked/);
      }
      const pem = readFileSync(join(dir, "exp/alice.pem"), "utf8");
      assert.equal(pemBlocks(pem, "CERTIFICATE").length, 2);
      const chain = readFileSync(join(dir, "exp/alice.chain"), "utf8");
      assert.equal(pemBlocks(chain, "CERTIFICATE").length, 3);
      assert.ok(
        chain.endsWith(readFileSync(join(dir, ".mtls/ca/root.crt"), "utf8")),
        "chain ends at the root",
      );
      const der = new X509Certificate(readFileSync(join(dir, "exp/alice.der")));
      assert.equal(der.serialNumber.toLowerCase(), aliceSerial);
    });

    it("audit verify passes, then fails with one line after the database is tampered with", async () => {
      const ok = assertOk(await inDir(["audit", "verify"]), "audit verify");
      assert.match(ok.stdout, /audit log OK: \d+ events, hash chain intact/);
      const db = new Database(join(dir, ".mtls/mtls.db"));
      try {
        const changed = db
          .prepare(
            "UPDATE audit_events SET details = replace(details, 'alice', 'mallory') WHERE action = 'cert.issue' AND subject = ?",
          )
          .run(aliceSerial);
        assert.equal(changed.changes, 1);
      } finally {
        db.close();
      }
      assertCliError(await inDir(["audit", "verify"]), 1, /audit log tampered: event \d+ does not verify/);
    });
  });

  describe("mtls CLI: passphrases and file modes", { concurrency: 2, timeout: 120_000 }, () => {
    it("with MTLS_PASSPHRASE no passphrase file is written, and the keys need that passphrase", async () => {
      const { dir, cleanup } = tempDir();
      try {
        const env = { MTLS_PASSPHRASE: "correct horse battery staple" };
        const init = assertOk(await mtls(["init", "--state", "st"], { cwd: dir, env }), "init");
        assert.doesNotMatch(init.stderr, /generated a passphrase/);
        assert.ok(!existsSync(join(dir, "st/passphrase")), "no STATE/passphrase");
        assertCliError(
          await mtls(["issue", "client", "a", "--state", "st", "--out", "out"], { cwd: dir }),
          1,
          /passphrase/,
        );
        assert.deepEqual(partialFiles(join(dir, "out")), []);
        assert.deepEqual(listFiles(join(dir, "out")), []);
        assertOk(
          await mtls(["issue", "client", "a", "--state", "st", "--out", "out"], { cwd: dir, env }),
          "issue",
        );
        assert.equal(modeOf(join(dir, "out/a.key")), 0o600);
      } finally {
        cleanup();
      }
    });

    it("--passphrase-file works for init and issue; no passphrase file lands in the state", async () => {
      const { dir, cleanup } = tempDir();
      try {
        writeFileSync(join(dir, "pass"), "hunter2-hunter2\n", { mode: 0o600 });
        const init = assertOk(
          await mtls(["init", "--state", "st", "--passphrase-file", "pass"], { cwd: dir }),
          "init",
        );
        assert.doesNotMatch(init.stderr, /generated a passphrase/);
        assert.ok(!existsSync(join(dir, "st/passphrase")));
        assertOk(
          await mtls(
            [
              "issue",
              "peer",
              "p",
              "--dns",
              "p.test",
              "--p12",
              "--state",
              "st",
              "--passphrase-file",
              "pass",
              "--out",
              "o",
            ],
            { cwd: dir },
          ),
          "issue",
        );
        assert.equal(modeOf(join(dir, "o/p.key")), 0o600);
        assert.equal(modeOf(join(dir, "o/p.p12")), 0o600);
        // The same passphrase through the environment works too.
        assertOk(
          await mtls(["issue", "client", "q", "--state", "st", "--out", "o"], {
            cwd: dir,
            env: { MTLS_PASSPHRASE: "hunter2-hunter2" },
          }),
          "issue with env",
        );
      } finally {
        cleanup();
      }
    });

    it("a wrong passphrase makes issue fail: exit 1, one line, no files, no new row", async () => {
      const { dir, cleanup } = tempDir();
      try {
        assertOk(await mtls(["init", "--state", "st"], { cwd: dir }), "init");
        assertOk(await mtls(["issue", "client", "first", "--state", "st", "--out", "out"], { cwd: dir }));
        const before = await listJson(dir, ["--all", "--state", "st"]);
        const filesBefore = listFiles(join(dir, "out"));
        writeFileSync(join(dir, "wrong"), "not-the-passphrase\n");
        assertCliError(
          await mtls(
            [
              "issue",
              "client",
              "second",
              "--p12",
              "--state",
              "st",
              "--passphrase-file",
              "wrong",
              "--out",
              "out",
            ],
            { cwd: dir },
          ),
          1,
          /^mtls: wrong passphrase/,
        );
        assertCliError(
          await mtls(["issue", "client", "third", "--state", "st", "--out", "out"], {
            cwd: dir,
            env: { MTLS_PASSPHRASE: "also wrong" },
          }),
          1,
          /^mtls: wrong passphrase/,
        );
        assert.deepEqual(listFiles(join(dir, "out")), filesBefore, "no new files");
        const afterRows = await listJson(dir, ["--all", "--state", "st"]);
        assert.deepEqual(
          afterRows.map((r) => r.serial).sort(),
          before.map((r) => r.serial).sort(),
          "no new row",
        );
      } finally {
        cleanup();
      }
    });

    it("a wrong passphrase makes revoke fail without revoking anything", async () => {
      const { dir, cleanup } = tempDir();
      try {
        assertOk(await mtls(["init", "--state", "st"], { cwd: dir }), "init");
        assertOk(await mtls(["issue", "client", "keep", "--state", "st", "--out", "out"], { cwd: dir }));
        const crlBefore = readFileSync(join(dir, "st/ca/crl.pem"), "utf8");
        writeFileSync(join(dir, "wrong"), "not-the-passphrase\n");
        assertCliError(
          await mtls(["revoke", "keep", "--state", "st", "--passphrase-file", "wrong"], { cwd: dir }),
          1,
          /wrong passphrase/,
        );
        assert.equal(readFileSync(join(dir, "st/ca/crl.pem"), "utf8"), crlBefore, "no CRL published");
        // The command failed, so the certificate must still be valid: a revocation nobody could sign
        // a CRL for, made without the CA passphrase, is not one the operator asked for.
        const rows = await listJson(dir, ["--all", "--state", "st", "--name", "keep"]);
        assert.deepEqual(
          rows.map((r) => r.status),
          ["valid"],
          "revoke failed with a wrong passphrase but the certificate is marked revoked anyway",
        );
      } finally {
        cleanup();
      }
    });
  });

  describe("mtls init: refuses to overwrite, --force keeps a backup, --root-key-out", {
    concurrency: 2,
    timeout: 120_000,
  }, () => {
    it("a second init is refused (exit 1, 'already exists'); --force replaces it and keeps a backup", async () => {
      const { dir, cleanup } = tempDir();
      try {
        assertOk(await mtls(["init", "--name", "First"], { cwd: dir }), "init");
        const oldRoot = readFileSync(join(dir, ".mtls/ca/root.crt"), "utf8");
        const oldPass = readFileSync(join(dir, ".mtls/passphrase"), "utf8");
        assertCliError(await mtls(["init", "--name", "Second"], { cwd: dir }), 1, /already exists/);
        assert.equal(readFileSync(join(dir, ".mtls/ca/root.crt"), "utf8"), oldRoot, "untouched");
        const forced = assertOk(
          await mtls(["init", "--name", "Second", "--force"], { cwd: dir }),
          "init --force",
        );
        assert.match(forced.stderr, /the previous CA was moved to .*backup-/);
        const newRoot = readFileSync(join(dir, ".mtls/ca/root.crt"), "utf8");
        assert.notEqual(newRoot, oldRoot);
        assert.match(new X509Certificate(newRoot).subject, /CN=Second Root CA/);
        const backups = readdirSync(join(dir, ".mtls")).filter((n) => n.startsWith("backup-"));
        assert.equal(backups.length, 1, `one backup dir: ${readdirSync(join(dir, ".mtls"))}`);
        const backup = join(dir, ".mtls", backups[0] as string);
        assert.equal(readFileSync(join(backup, "ca/root.crt"), "utf8"), oldRoot);
        assert.ok(existsSync(join(backup, "ca/intermediate.key")));
        assert.ok(existsSync(join(backup, "mtls.db")));
        assert.equal(readFileSync(join(backup, "passphrase"), "utf8"), oldPass);
        assert.notEqual(readFileSync(join(dir, ".mtls/passphrase"), "utf8"), oldPass, "a new passphrase");
        assert.equal(modeOf(join(dir, ".mtls/passphrase")), 0o600);
        // The new CA works.
        assertOk(await mtls(["issue", "client", "x", "--out", "o"], { cwd: dir }), "issue on the new CA");
        assertOk(await mtls(["verify", "o/x.crt"], { cwd: dir }), "verify on the new CA");
      } finally {
        cleanup();
      }
    });

    it("--root-key-out keeps root.key out of STATE/ca; issue and crl still work", async () => {
      const { dir, cleanup } = tempDir();
      try {
        mkdirSync(join(dir, "offline"));
        const init = assertOk(
          await mtls(["init", "--state", "st", "--root-key-out", "offline/root.key"], { cwd: dir }),
          "init",
        );
        assert.match(init.stdout, /root key:\s+.*offline\/root\.key \(offline/);
        assert.ok(!existsSync(join(dir, "st/ca/root.key")), "no root.key in the state");
        assert.ok(!listFiles(join(dir, "st")).some((f) => /root\.key/.test(f)), "nowhere in the state");
        assert.equal(modeOf(join(dir, "offline/root.key")), 0o600);
        assert.match(readFileSync(join(dir, "offline/root.key"), "utf8"), /ENCRYPTED PRIVATE KEY/);
        assertOk(await mtls(["issue", "client", "c", "--state", "st", "--out", "o"], { cwd: dir }), "issue");
        assertOk(await mtls(["revoke", "c", "--state", "st"], { cwd: dir }), "revoke");
        assertOk(await mtls(["crl", "--state", "st", "--out", "bundle.crl"], { cwd: dir }), "crl");
        const crls = pemBlocks(readFileSync(join(dir, "bundle.crl"), "utf8"), "X509 CRL");
        assert.equal(crls.length, 2);
        // The root's CRL is the stored one (the root key is offline).
        assert.equal(crls[1], readFileSync(join(dir, "st/ca/root.crl"), "utf8"));
        const shown = assertOk(await mtls(["inspect", "bundle.crl"], { cwd: dir })).stdout;
        assert.match(shown, /CRL #1 of O=mtls, CN=mtls Root CA/);
        assert.match(shown, /CRL #\d+ of O=mtls, CN=mtls Intermediate CA[\s\S]*Revoked:\s+1/);
        // With the offline key at hand, the root CRL is re-signed with the next number.
        assertOk(
          await mtls(["crl", "--state", "st", "--root-key", "offline/root.key", "--out", "bundle.crl"], {
            cwd: dir,
          }),
          "crl --root-key",
        );
        assert.match(
          assertOk(await mtls(["inspect", "bundle.crl"], { cwd: dir })).stdout,
          /CRL #2 of O=mtls, CN=mtls Root CA/,
        );
      } finally {
        cleanup();
      }
    });
  });

  describe("mtls CLI: bad input gets one clear line and loses nothing", {
    concurrency: 1,
    timeout: 180_000,
  }, () => {
    let dir = "";
    let cleanup = () => {};
    let case_ = 0;
    /** A fresh, empty output folder for one case. */
    const outDir = () => {
      const d = join(dir, `out${++case_}`);
      mkdirSync(d);
      return d;
    };
    const inDir = (args: string[]) => mtls(args, { cwd: dir });
    const clean = (d: string) => assert.deepEqual(partialFiles(d), [], `partial files in ${d}`);

    before(async () => {
      await requireTool("openssl", ["version"]);
      ({ dir, cleanup } = tempDir("mtls-e2e-bad-"));
      assertOk(await inDir(["init"]), "init");
      assertOk(await inDir(["init", "--state", "other", "--name", "Other Corp"]), "init other");
    });
    after(() => cleanup());

    describe("each case", { concurrency: 2 }, () => {
      it("an unknown option is a usage error: exit 2", async () => {
        const out = outDir();
        assertCliError(
          await inDir(["issue", "client", "x", "--out", out, "--bogus"]),
          2,
          /unknown option '--bogus'/,
        );
        assertCliError(await inDir(["--bogus"]), 2, /unknown option/);
        assert.deepEqual(listFiles(out), []);
      });

      it("malformed PEM as a CSR", async () => {
        const out = outDir();
        writeFileSync(
          join(dir, "bad.csr"),
          "-----BEGIN CERTIFICATE REQUEST-----\nnot*base64!!\n-----END CERTIFICATE REQUEST-----\n",
        );
        assertCliError(await inDir(["sign", "bad.csr", "--out", `${out}/`]), 1, /malformed|base64/);
        assert.deepEqual(listFiles(out), []);
      });

      it("a CSR whose signature is broken", async () => {
        const out = outDir();
        await opensslCsr(dir, "good.csr", { subj: "/CN=broken" });
        await openssl(["req", "-in", "good.csr", "-outform", "DER", "-out", "good.csr.der"], dir);
        const der = readFileSync(join(dir, "good.csr.der"));
        // The last bytes are the ECDSA signature's s value: flip one.
        const flipped = Buffer.from(der);
        flipped[flipped.length - 3] = (flipped[flipped.length - 3] as number) ^ 0xff;
        writeFileSync(join(dir, "broken.csr.der"), flipped);
        assertOk(await inDir(["inspect", "good.csr.der"]), "the unbroken CSR is fine");
        assertCliError(
          await inDir(["sign", "broken.csr.der", "--out", `${out}/`]),
          1,
          /signature does not verify/,
        );
        assertCliError(await inDir(["inspect", "broken.csr.der"]), 1, /signature/);
        assert.deepEqual(listFiles(out), []);
      });

      it("an unknown profile", async () => {
        const out = outDir();
        assertCliError(await inDir(["issue", "bogus", "x", "--out", out]), 1, /unknown profile "bogus"/);
        await opensslCsr(dir, "p.csr", { subj: "/CN=p" });
        assertCliError(
          await inDir(["sign", "p.csr", "--profile", "root", "--out", `${out}/`]),
          1,
          /unknown profile/,
        );
        assert.deepEqual(listFiles(out), []);
      });

      it('a bad SAN: --dns "a b", an invalid IP, two SPIFFE URIs', async () => {
        const out = outDir();
        assertCliError(
          await inDir(["issue", "server", "x", "--dns", "a b", "--out", out]),
          1,
          /invalid DNS name "a b"/,
        );
        assertCliError(
          await inDir(["issue", "server", "x", "--ip", "999.1.1.1", "--out", out]),
          1,
          /invalid IP/,
        );
        assertCliError(
          await inDir([
            "issue",
            "client",
            "x",
            "--uri",
            "spiffe://a/b",
            "--uri",
            "spiffe://a/c",
            "--out",
            out,
          ]),
          1,
          /SPIFFE/,
        );
        assert.deepEqual(listFiles(out), []);
      });

      it("--ttl 20y, beyond the intermediate's own validity", async () => {
        const out = outDir();
        assertCliError(
          await inDir(["issue", "client", "x", "--ttl", "20y", "--out", out]),
          1,
          /outlive the intermediate/,
        );
        assertCliError(
          await inDir(["issue", "client", "x", "--ttl", "soon", "--out", out]),
          2,
          /invalid --ttl/,
        );
        assert.deepEqual(listFiles(out), []);
      });

      it("--key-type rsa-1024 is refused as an invalid option value (exit 2)", async () => {
        const out = outDir();
        assertCliError(
          await inDir(["issue", "client", "x", "--key-type", "rsa-1024", "--out", out]),
          2,
          /unknown key type "rsa-1024"/,
        );
        assert.deepEqual(listFiles(out), []);
      });

      it("revoking an unknown name", async () => {
        assertCliError(await inDir(["revoke", "nobody"]), 1, /no certificate named or numbered "nobody"/);
        assertCliError(await inDir(["revoke", "nobody", "--state", "other"]), 1, /no certificate/);
      });

      it("issuing into an existing file is refused without --force and works with it", async () => {
        const out = outDir();
        assertOk(await inDir(["issue", "client", "dup", "--out", out]), "first issue");
        const crt = readFileSync(join(out, "dup.crt"), "utf8");
        const key = readFileSync(join(out, "dup.key"), "utf8");
        const rowsBefore = (await listJson(dir, ["--all", "--name", "dup"])).length;
        assertCliError(await inDir(["issue", "client", "dup", "--out", out]), 1, /dup\.crt already exists/);
        assertCliError(await inDir(["issue", "client", "dup", "--p12", "--out", out]), 1, /already exists/);
        assert.equal(readFileSync(join(out, "dup.crt"), "utf8"), crt, "certificate untouched");
        assert.equal(readFileSync(join(out, "dup.key"), "utf8"), key, "key untouched");
        assert.ok(!existsSync(join(out, "dup.p12")));
        clean(out);
        assert.equal((await listJson(dir, ["--all", "--name", "dup"])).length, rowsBefore, "no new row");
        assertOk(await inDir(["issue", "client", "dup", "--p12", "--out", out, "--force"]), "issue --force");
        assert.notEqual(readFileSync(join(out, "dup.crt"), "utf8"), crt);
        assert.notEqual(readFileSync(join(out, "dup.key"), "utf8"), key);
        assert.equal(modeOf(join(out, "dup.key")), 0o600);
        assert.equal(modeOf(join(out, "dup.p12")), 0o600);
        clean(out);
        // sign over an existing certificate file: the same rule.
        await opensslCsr(dir, "dup.csr", { subj: "/CN=dupcsr" });
        assertOk(await inDir(["sign", "dup.csr", "--out", join(out, "signed.crt")]), "sign");
        const signed = readFileSync(join(out, "signed.crt"), "utf8");
        assertCliError(
          await inDir(["sign", "dup.csr", "--out", join(out, "signed.crt")]),
          1,
          /already exists/,
        );
        assert.equal(readFileSync(join(out, "signed.crt"), "utf8"), signed);
        assertOk(
          await inDir(["sign", "dup.csr", "--out", join(out, "signed.crt"), "--force"]),
          "sign --force",
        );
        clean(out);
      });

      it("sign refuses a CSR with an RSA-1024 key (E_WEAK_KEY)", async () => {
        const out = outDir();
        await opensslCsr(dir, "weak.csr", { subj: "/CN=weak", newkey: ["-newkey", "rsa:1024"] });
        assertCliError(
          await inDir(["sign", "weak.csr", "--out", `${out}/`]),
          1,
          /RSA key of 1024 bits is too weak/,
        );
        assert.deepEqual(listFiles(out), []);
      });

      it("sign refuses a CSR with a key on an unsupported curve (secp256k1) as a key problem, not a bad signature", async () => {
        const out = outDir();
        await opensslCsr(dir, "k1.csr", {
          subj: "/CN=k1",
          newkey: ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"],
        });
        // openssl itself checks the CSR's signature: it is good.
        await openssl(["req", "-in", "k1.csr", "-noout", "-verify"], dir);
        const res = await inDir(["sign", "k1.csr", "--out", `${out}/`]);
        assert.deepEqual(listFiles(out), []);
        assertCliError(res, 1, /curve|secp256k1/);
      });

      it("sign refuses a CSR asking for CA:TRUE", async () => {
        const out = outDir();
        await opensslCsr(dir, "ca.csr", {
          subj: "/CN=sneaky",
          addext: ["basicConstraints=critical,CA:TRUE"],
        });
        assertCliError(await inDir(["sign", "ca.csr", "--out", `${out}/`]), 1, /CA:TRUE/);
        await opensslCsr(dir, "ku.csr", {
          subj: "/CN=sneaky2",
          addext: ["keyUsage=critical,keyCertSign,cRLSign"],
        });
        assertCliError(await inDir(["sign", "ku.csr", "--out", `${out}/`]), 1, /keyCertSign/);
        assert.deepEqual(listFiles(out), []);
      });

      it("a server profile without any SAN", async () => {
        const out = outDir();
        assertCliError(await inDir(["issue", "server", "nosan", "--out", out]), 1, /DNS name or IP address/);
        await opensslCsr(dir, "nosan.csr", { subj: "/CN=nosan" });
        assertCliError(
          await inDir(["sign", "nosan.csr", "--profile", "server", "--out", `${out}/`]),
          1,
          /DNS name or IP/,
        );
        assert.deepEqual(listFiles(out), []);
      });

      it("inspect of a garbage file, an empty file and a missing file", async () => {
        writeFileSync(
          join(dir, "garbage.bin"),
          Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 37 + 11) % 256)),
        );
        assertCliError(await inDir(["inspect", "garbage.bin"]), 1, /not a certificate, CSR, CRL or PKCS#12/);
        writeFileSync(join(dir, "empty.crt"), "");
        assertCliError(await inDir(["inspect", "empty.crt"]), 1);
        assertCliError(await inDir(["inspect", "missing.crt"]), 1, /not found/);
        writeFileSync(join(dir, "garbage.p12"), "this is no PKCS#12");
        writeFileSync(join(dir, "pw"), "pw\n");
        assertCliError(await inDir(["inspect", "garbage.p12", "--password-file", "pw"]), 1);
      });

      it("verify of a certificate from another CA", async () => {
        const out = outDir();
        assertOk(
          await inDir(["issue", "client", "foreign", "--state", "other", "--out", out]),
          "issue other",
        );
        assertCliError(
          await inDir(["verify", join(out, "foreign.crt")]),
          1,
          /not from this CA|issuer|trust/i,
        );
        assertCliError(await inDir(["revoke", join(out, "foreign.crt")]), 1, /not issued by this CA/);
        // Against its own CA it verifies.
        assertOk(await inDir(["verify", join(out, "foreign.crt"), "--state", "other"]), "verify with other");
      });
    });

    it("after all of that, no row is pending or aborted and every valid row has its certificate file", async () => {
      const rows = await listJson(dir, ["--all"]);
      assert.deepEqual(
        rows.filter((r) => r.status === "pending" || r.status === "aborted").map((r) => r.name),
        [],
      );
      const valid = rows.filter((x) => x.status === "valid");
      for (const r of valid.filter((x) => x.certPath)) {
        assert.ok(existsSync(r.certPath as string), `${r.name}: ${r.certPath} exists`);
        // `--force` re-issued some names into the same file: the file holds one of that name's certificates.
        const fp = new X509Certificate(readFileSync(r.certPath as string)).fingerprint256
          .replace(/:/g, "")
          .toLowerCase();
        assert.ok(
          valid.some((x) => x.name === r.name && x.fingerprint === fp),
          `${r.certPath} holds a valid certificate of "${r.name}"`,
        );
      }
      for (const d of readdirSync(dir).filter((n) => n.startsWith("out"))) clean(join(dir, d));
    });
  });

  describe("mtls issue: a crash in the middle leaves no key without its certificate", {
    concurrency: 1,
    timeout: 180_000,
  }, () => {
    let dir = "";
    let cleanup = () => {};
    let script = "";

    before(async () => {
      ({ dir, cleanup } = tempDir("mtls-e2e-crash-"));
      assertOk(await mtls(["init", "--state", "st"], { cwd: dir }), "init");
      // A program that uses the library the CLI uses, and dies (as if killed) at one step of delivery.
      script = join(dir, "crash.mts");
      writeFileSync(
        script,
        [
          `import { mkdirSync } from "node:fs";`,
          `import { issueToFiles, openCa } from ${JSON.stringify(pathToFileURL(join(REPO_ROOT, "src/ca/index.ts")).href)};`,
          `import { statePaths } from ${JSON.stringify(pathToFileURL(join(REPO_ROOT, "src/config/index.ts")).href)};`,
          "const [state, outDir, name, step, p12] = process.argv.slice(2);",
          "mkdirSync(outDir, { recursive: true });",
          "const ca = await openCa(statePaths(state));",
          "await issueToFiles(",
          "  ca,",
          `  { profile: "client", name, sans: [], actor: "test:crash" },`,
          "  {",
          "    outDir,",
          `    ...(p12 === "p12" ? { p12: { password: "crash-test" } } : {}),`,
          "    onStep: (s) => {",
          "      if (s === step) process.exit(137);",
          "    },",
          "  },",
          ");",
          "await ca.store.close();",
          `console.log("finished without crashing");`,
        ].join("\n"),
      );
    });
    after(() => cleanup());

    /** Runs the crash script, then a CLI command that opens the CA (and so runs recovery). */
    async function crashAt(name: string, step: string, p12: boolean): Promise<{ out: string; row: ListRow }> {
      const out = join(dir, `out-${name}`);
      const res = await run(
        process.execPath,
        ["--import", "tsx", script, join(dir, "st"), out, name, step, p12 ? "p12" : "-"],
        { cwd: REPO_ROOT, timeoutMs: 60_000 },
      );
      assert.equal(res.code, 137, `the script died at "${step}": ${res.stdout}${res.stderr}`);
      // Before recovery, the record is pending.
      const pending = await listJson(dir, ["--all", "--state", "st", "--name", name]);
      assert.deepEqual(
        pending.map((r) => r.status),
        ["pending"],
      );
      // `mtls crl` opens the CA, which finishes or undoes interrupted deliveries.
      assertOk(await mtls(["crl", "--state", "st"], { cwd: dir }), "crl (recovery)");
      const rows = await listJson(dir, ["--all", "--state", "st", "--name", name]);
      assert.equal(rows.length, 1);
      return { out, row: rows[0] as ListRow };
    }

    /** The invariants after recovery, whatever the step. */
    function assertConsistent(out: string, name: string, row: ListRow): void {
      const files = listFiles(out);
      assert.ok(
        !(files.includes(`${name}.key`) && !files.includes(`${name}.crt`)),
        `key without cert: ${files}`,
      );
      if (row.status === "valid") {
        assert.ok(files.includes(`${name}.crt`), "a valid row has its certificate file");
        const cert = new X509Certificate(readFileSync(join(out, `${name}.crt`)));
        assert.equal(cert.fingerprint256.replace(/:/g, "").toLowerCase(), row.fingerprint);
        assert.ok(files.includes(`${name}.key`), "and its key");
      } else {
        assert.equal(row.status, "aborted");
        assert.ok(!files.includes(`${name}.crt`), `an aborted row leaves no certificate file: ${files}`);
        assert.ok(!files.includes(`${name}.key`), `an aborted row leaves no key file: ${files}`);
      }
    }

    it('crash at "pending" (row inserted, no file yet): the record is aborted, no files', async () => {
      const { out, row } = await crashAt("c-pending", "pending", false);
      assert.equal(row.status, "aborted");
      assertConsistent(out, "c-pending", row);
      assert.deepEqual(listFiles(out), []);
    });

    it('crash at "cert" (certificate in place, key not): aborted, and no key is left behind, not even a temp file', async () => {
      const { out, row } = await crashAt("c-cert", "cert", false);
      assert.equal(row.status, "aborted");
      assertConsistent(out, "c-cert", row);
      assert.deepEqual(listFiles(out), [], "the staged private key must not outlive the aborted issuance");
    });

    it('crash at "key" without --p12 (every file in place): confirmed valid', async () => {
      const { out, row } = await crashAt("c-key", "key", false);
      assert.equal(row.status, "valid");
      assertConsistent(out, "c-key", row);
      assert.deepEqual(listFiles(out), ["c-key.crt", "c-key.key"]);
    });

    it('crash at "key" with --p12 (the PKCS#12 not yet in place): aborted, or valid with its .p12; no temp files', async () => {
      const { out, row } = await crashAt("c-key-p12", "key", true);
      assertConsistent(out, "c-key-p12", row);
      const files = listFiles(out);
      if (row.status === "valid")
        assert.ok(files.includes("c-key-p12.p12"), `valid but the requested PKCS#12 is missing: ${files}`);
      assert.deepEqual(partialFiles(out), [], "no staged files left");
    });

    it('crash at "files" (all written, not yet confirmed): confirmed valid with every file', async () => {
      const { out, row } = await crashAt("c-files", "files", true);
      assert.equal(row.status, "valid");
      assertConsistent(out, "c-files", row);
      assert.deepEqual(listFiles(out), ["c-files.crt", "c-files.key", "c-files.p12"]);
      assert.equal(modeOf(join(out, "c-files.key")), 0o600);
      assert.equal(modeOf(join(out, "c-files.p12")), 0o600);
      // And the recovered certificate verifies like any other.
      assertOk(await mtls(["verify", join(out, "c-files.crt"), "--state", "st"], { cwd: dir }), "verify");
    });

    it("after every crash: no pending rows; every valid row has its certificate; the audit log verifies", async () => {
      const rows = await listJson(dir, ["--all", "--state", "st"]);
      assert.deepEqual(
        rows.filter((r) => r.status === "pending").map((r) => r.name),
        [],
      );
      for (const r of rows.filter((x) => x.status === "valid" && x.certPath))
        assert.ok(existsSync(r.certPath as string), `${r.name}: ${r.certPath}`);
      assertOk(await mtls(["audit", "verify", "--state", "st"], { cwd: dir }), "audit verify");
    });
  });
});
