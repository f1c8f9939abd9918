/**
 * What mtls issues, checked by tools we did not write (issue 2, "Proven by tests against tools we
 * did not write"): `openssl verify`, `openssl x509 -text`, `openssl crl -verify`, `openssl verify
 * -crl_check_all`, `openssl pkcs12 -info`, NSS `pk12util`/`certutil`, CSRs from `openssl req`, and
 * mutual TLS handshakes between Node's `tls` and `openssl s_server`/`s_client` on 127.0.0.1.
 * Missing tools fail the tests: CI installs them (.ci/run).
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import tls from "node:tls";
import {
  assertOk,
  freePort,
  mtls,
  pemBlocks,
  type RunResult,
  requireTool,
  run,
  startBackground,
  tempDir,
  withTimeout,
} from "./helpers.js";

/** `openssl ARGS` in `cwd`, never throwing; stdout and stderr together in `all`. */
async function opensslRaw(args: string[], cwd: string): Promise<RunResult & { all: string }> {
  const res = await run("openssl", args, { cwd, timeoutMs: 30_000 });
  return { ...res, all: res.stdout + res.stderr };
}

/** `openssl ARGS` in `cwd`; throws with the output when it fails. */
async function openssl(args: string[], cwd: string): Promise<string> {
  const res = await opensslRaw(args, cwd);
  assert.equal(res.code, 0, `openssl ${args.join(" ")} failed:\n${res.all}`);
  return res.all;
}

/** The DER serial's length in bytes, from `openssl x509 -text`. */
function serialBytes(text: string): number {
  const m = /Serial Number:\s*\n\s*([0-9a-f:]+)/i.exec(text);
  assert.ok(m?.[1], `a serial in:\n${text}`);
  return m[1].split(":").length;
}

/** The value lines under one extension heading of `openssl x509 -text`. */
function extension(text: string, heading: string): string {
  const lines = text.split("\n");
  const i = lines.findIndex((l) => l.trim().startsWith(heading));
  assert.ok(i >= 0, `extension "${heading}" in:\n${text}`);
  const out: string[] = [lines[i] as string];
  for (const l of lines.slice(i + 1)) {
    if (/^\s{12}\S/.test(l) && !/^\s{16}/.test(l)) break; // the next extension heading
    if (/^\s{0,8}\S/.test(l)) break; // the end of the extensions
    out.push(l.trim());
  }
  return out.join("\n");
}

/** Issues with the CLI in `cwd` and asserts success. */
async function cli(cwd: string, args: string[]): Promise<string> {
  return assertOk(await mtls(args, { cwd }), `mtls ${args.join(" ")}`).stdout;
}

describe("interop with tools we did not write", { concurrency: true, timeout: 240_000 }, () => {
  before(async () => {
    await requireTool("openssl", ["version"]);
    await requireTool("pk12util", ["-h"]);
    await requireTool("certutil", ["-H"]);
    await requireTool("curl", ["--version"]);
  });

  it("`mtls quickstart` (npm start) on a fresh folder, then its printed s_server and curl recipe works", async () => {
    const { dir, cleanup } = tempDir("mtls-e2e-quickstart-");
    let bg: Awaited<ReturnType<typeof startBackground>> | undefined;
    try {
      const res = assertOk(await mtls(["quickstart"], { cwd: dir }), "mtls quickstart");
      assert.match(res.stdout, /issued server certificate "localhost"/);
      assert.match(res.stdout, /issued client certificate "demo-client"/);
      assert.match(res.stdout, /\nlocalhost\s+server\s+valid/);
      // A second run keeps what is there.
      assert.match(assertOk(await mtls(["quickstart"], { cwd: dir })).stdout, /using the CA in/);
      const recipe = (prefix: string) => {
        const line = res.stdout.split("\n").find((l) => l.trim().startsWith(prefix));
        assert.ok(line, `the quickstart prints a "${prefix}" line:\n${res.stdout}`);
        return line.trim().split(/\s+/);
      };
      const port = await freePort();
      const [server, ...serverArgs] = recipe("openssl s_server").map((a) =>
        a.replace("127.0.0.1:8443", `127.0.0.1:${port}`),
      );
      const [client, ...clientArgs] = recipe("curl").map((a) =>
        a.replace("localhost:8443", `localhost:${port}`),
      );
      bg = await startBackground(server as string, serverArgs, {
        cwd: dir,
        ready: /ACCEPT/,
        timeoutMs: 10_000,
      });
      const got = await run(client as string, [...clientArgs, "--max-time", "10"], {
        cwd: dir,
        timeoutMs: 20_000,
      });
      assert.equal(
        got.code,
        0,
        `curl as printed by quickstart:\n${got.stdout}${got.stderr}\ns_server:\n${bg.output()}`,
      );
      assert.match(got.stdout, /Protocol\s*: TLSv1\.3/);
    } finally {
      await bg?.stop();
      cleanup();
    }
  });

  describe("openssl verify accepts every leaf, for every CA and leaf key type", { concurrency: true }, () => {
    const signatureOf: Record<string, RegExp> = {
      "ec-p256": /ecdsa-with-SHA256/,
      "ec-p384": /ecdsa-with-SHA384/,
      "rsa-2048": /sha256WithRSAEncryption/,
      "rsa-3072": /sha256WithRSAEncryption/,
      ed25519: /ED25519/i,
    };
    const publicKeyOf: Record<string, { type: string; detail?: string | number }> = {
      "ec-p256": { type: "ec", detail: "prime256v1" },
      "ec-p384": { type: "ec", detail: "secp384r1" },
      "rsa-2048": { type: "rsa", detail: 2048 },
      "rsa-3072": { type: "rsa", detail: 3072 },
      "rsa-4096": { type: "rsa", detail: 4096 },
      ed25519: { type: "ed25519" },
    };
    // Every CA key type signs a leaf of its own type and an ec-p256 leaf; the ec-p256 CA signs every
    // leaf type (rsa-4096 only as a leaf: a 4096-bit CA adds seconds and nothing new).
    const matrix: [string, string[]][] = [
      ["ec-p256", ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"]],
      ["ec-p384", ["ec-p384", "ec-p256"]],
      ["rsa-2048", ["rsa-2048", "ec-p256"]],
      ["rsa-3072", ["rsa-3072", "ec-p256"]],
      ["ed25519", ["ed25519", "ec-p256"]],
    ];
    for (const [caType, leafTypes] of matrix) {
      it(`${caType} CA: leaves ${leafTypes.join(", ")}`, async () => {
        const { dir, cleanup } = tempDir(`mtls-e2e-matrix-${caType}-`);
        try {
          await cli(dir, ["init", "--state", "st", "--key-type", caType]);
          const caText = await openssl(["x509", "-in", "st/ca/intermediate.crt", "-noout", "-text"], dir);
          assert.match(
            caText,
            signatureOf[caType] as RegExp,
            "the intermediate is signed with the root's algorithm",
          );
          for (const leafType of leafTypes) {
            const name = `leaf-${leafType}`;
            await cli(dir, [
              "issue",
              "peer",
              name,
              "--dns",
              `${name}.test`,
              "--key-type",
              leafType,
              "--state",
              "st",
              "--out",
              "out",
            ]);
            const verified = await opensslRaw(
              ["verify", "-CAfile", "out/ca.crt", "-untrusted", `out/${name}.crt`, `out/${name}.crt`],
              dir,
            );
            assert.equal(
              verified.code,
              0,
              `openssl verify of a ${leafType} leaf from a ${caType} CA:\n${verified.all}`,
            );
            assert.match(verified.stdout, new RegExp(`out/${name}\\.crt: OK`));
            // The same with the purposes the profile promises.
            for (const purpose of ["sslserver", "sslclient"]) {
              const p = await opensslRaw(
                [
                  "verify",
                  "-purpose",
                  purpose,
                  "-CAfile",
                  "out/ca.crt",
                  "-untrusted",
                  `out/${name}.crt`,
                  `out/${name}.crt`,
                ],
                dir,
              );
              assert.equal(p.code, 0, `${purpose}: ${p.all}`);
            }
            const leaf = new X509Certificate(readFileSync(join(dir, `out/${name}.crt`)));
            const want = publicKeyOf[leafType] as { type: string; detail?: string | number };
            assert.equal(leaf.publicKey.asymmetricKeyType, want.type);
            const details = leaf.publicKey.asymmetricKeyDetails ?? {};
            if (want.type === "ec") assert.equal(details.namedCurve, want.detail);
            if (want.type === "rsa") assert.equal(details.modulusLength, want.detail);
            const text = await openssl(["x509", "-in", `out/${name}.crt`, "-noout", "-text"], dir);
            assert.match(text, signatureOf[caType] as RegExp, `${name} is signed with the CA's algorithm`);
          }
        } finally {
          cleanup();
        }
      });
    }
  });

  describe("openssl x509 -text shows the profile's extensions", { concurrency: 1 }, () => {
    let dir = "";
    let cleanup = () => {};
    const text: Record<string, string> = {};

    before(async () => {
      ({ dir, cleanup } = tempDir("mtls-e2e-x509-"));
      await cli(dir, ["init", "--state", "st", "--public-url", "http://127.0.0.1:8080"]);
      await cli(dir, [
        "issue",
        "server",
        "web",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--state",
        "st",
        "--out",
        "o",
      ]);
      await cli(dir, [
        "issue",
        "client",
        "alice",
        "--email",
        "alice@acme.test",
        "--uri",
        "spiffe://acme.test/user/alice",
        "--state",
        "st",
        "--out",
        "o",
      ]);
      await cli(dir, [
        "issue",
        "server",
        "rsa",
        "--key-type",
        "rsa-2048",
        "--dns",
        "rsa.test",
        "--state",
        "st",
        "--out",
        "o",
      ]);
      await cli(dir, ["issue", "peer", "both", "--dns", "both.test", "--state", "st", "--out", "o"]);
      for (const [k, f] of [
        ["web", "o/web.crt"],
        ["alice", "o/alice.crt"],
        ["rsa", "o/rsa.crt"],
        ["both", "o/both.crt"],
        ["intermediate", "st/ca/intermediate.crt"],
        ["root", "st/ca/root.crt"],
      ] as const) {
        text[k] = await openssl(["x509", "-in", f, "-noout", "-text"], dir);
      }
    });
    after(() => cleanup());

    it("a server leaf: CA:FALSE, critical Digital Signature, serverAuth, SKI, AKI = intermediate SKI, SANs", () => {
      const t = text.web as string;
      assert.match(t, /Version: 3 \(0x2\)/);
      assert.match(extension(t, "X509v3 Basic Constraints"), /critical\n?CA:FALSE/);
      const ku = extension(t, "X509v3 Key Usage");
      assert.match(ku, /critical/);
      assert.match(ku, /\nDigital Signature$/, "digitalSignature only for an EC server key");
      const eku = extension(t, "X509v3 Extended Key Usage");
      assert.match(eku, /TLS Web Server Authentication/);
      assert.doesNotMatch(eku, /Client|Any/);
      assert.match(extension(t, "X509v3 Subject Alternative Name"), /DNS:localhost, IP Address:127\.0\.0\.1/);
      const ski = /X509v3 Subject Key Identifier:\s*\n\s*([0-9A-F:]+)/.exec(text.intermediate as string)?.[1];
      assert.ok(ski, "the intermediate has an SKI");
      assert.match(t, /X509v3 Subject Key Identifier:\s*\n\s*[0-9A-F:]{59}/);
      assert.match(extension(t, "X509v3 Authority Key Identifier"), new RegExp(ski.replace(/:/g, ":")));
      assert.equal(serialBytes(t), 16, "a 128-bit serial, 16 bytes");
    });

    it("with --public-url: CRL Distribution Point URL/crl and OCSP URL/ocsp", () => {
      for (const k of ["web", "alice", "rsa"]) {
        const t = text[k] as string;
        assert.match(extension(t, "X509v3 CRL Distribution Points"), /URI:http:\/\/127\.0\.0\.1:8080\/crl$/m);
        assert.match(
          extension(t, "Authority Information Access"),
          /OCSP - URI:http:\/\/127\.0\.0\.1:8080\/ocsp/,
        );
      }
    });

    it("a client leaf: clientAuth, e-mail and URI SANs", () => {
      const t = text.alice as string;
      const eku = extension(t, "X509v3 Extended Key Usage");
      assert.match(eku, /TLS Web Client Authentication/);
      assert.doesNotMatch(eku, /Server/);
      assert.match(
        extension(t, "X509v3 Subject Alternative Name"),
        /email:alice@acme\.test, URI:spiffe:\/\/acme\.test\/user\/alice/,
      );
      assert.match(extension(t, "X509v3 Basic Constraints"), /CA:FALSE/);
      assert.equal(serialBytes(t), 16);
    });

    it("an rsa-2048 server leaf: Key Encipherment too; a peer: both purposes", () => {
      assert.match(extension(text.rsa as string, "X509v3 Key Usage"), /Digital Signature, Key Encipherment/);
      assert.match(text.rsa as string, /Public-Key: \(2048 bit\)/);
      const eku = extension(text.both as string, "X509v3 Extended Key Usage");
      assert.match(eku, /TLS Web Server Authentication/);
      assert.match(eku, /TLS Web Client Authentication/);
    });

    it("the intermediate: critical CA:TRUE, pathlen:0, Certificate Sign, CRL Sign, AKI = root SKI", () => {
      const t = text.intermediate as string;
      assert.match(extension(t, "X509v3 Basic Constraints"), /critical\n?CA:TRUE, pathlen:0/);
      assert.match(extension(t, "X509v3 Key Usage"), /critical\n?Certificate Sign, CRL Sign$/);
      const rootSki = /X509v3 Subject Key Identifier:\s*\n\s*([0-9A-F:]+)/.exec(text.root as string)?.[1];
      assert.ok(rootSki);
      assert.match(extension(t, "X509v3 Authority Key Identifier"), new RegExp(rootSki));
      assert.equal(serialBytes(t), 16);
    });

    it("the root: self-signed, critical CA:TRUE, Certificate Sign, CRL Sign", () => {
      const t = text.root as string;
      const subject = /Subject: (.*)/.exec(t)?.[1];
      assert.equal(/Issuer: (.*)/.exec(t)?.[1], subject);
      assert.match(extension(t, "X509v3 Basic Constraints"), /critical\n?CA:TRUE$/m);
      assert.match(extension(t, "X509v3 Key Usage"), /critical\n?Certificate Sign, CRL Sign$/);
    });
  });

  describe("CRLs: openssl crl -verify accepts them, openssl verify -crl_check_all uses them", {
    concurrency: 1,
  }, () => {
    let dir = "";
    let cleanup = () => {};
    const crlNumbers: number[] = [];
    const crlNumber = async (file: string, inform = "PEM") => {
      const out = await openssl(["crl", "-inform", inform, "-in", file, "-noout", "-crlnumber"], dir);
      const m = /crlNumber=0x([0-9A-F]+)/i.exec(out);
      assert.ok(m?.[1], out);
      return Number.parseInt(m[1], 16);
    };
    const splitBundle = (file: string) => {
      const [intermediate, root] = pemBlocks(readFileSync(join(dir, file), "utf8"), "X509 CRL");
      assert.ok(intermediate && root, `${file} holds two CRLs`);
      writeFileSync(join(dir, `${file}.int.pem`), intermediate);
      writeFileSync(join(dir, `${file}.root.pem`), root);
    };

    before(async () => {
      ({ dir, cleanup } = tempDir("mtls-e2e-crl-"));
      await cli(dir, ["init", "--state", "st"]);
      await cli(dir, ["issue", "client", "good", "--state", "st", "--out", "o"]);
      await cli(dir, ["issue", "client", "bad", "--state", "st", "--out", "o"]);
      writeFileSync(
        join(dir, "chain.pem"),
        readFileSync(join(dir, "st/ca/root.crt"), "utf8") +
          readFileSync(join(dir, "st/ca/intermediate.crt"), "utf8"),
      );
    });
    after(() => cleanup());

    it("before any revocation: the bundle verifies and both leaves pass -crl_check_all", async () => {
      await cli(dir, ["crl", "--state", "st", "--out", "first.crl"]);
      splitBundle("first.crl");
      crlNumbers.push(await crlNumber("first.crl.int.pem"));
      for (const name of ["good", "bad"]) {
        const res = await opensslRaw(
          ["verify", "-crl_check_all", "-CRLfile", "first.crl", "-CAfile", "chain.pem", `o/${name}.crt`],
          dir,
        );
        assert.equal(res.code, 0, res.all);
      }
    });

    it("after revoke: each CRL verifies with its issuer; the revoked leaf is rejected, the good one accepted", async () => {
      const bad = new X509Certificate(readFileSync(join(dir, "o/bad.crt"))).serialNumber.toUpperCase();
      await cli(dir, ["revoke", "bad", "--reason", "keyCompromise", "--state", "st"]);
      await cli(dir, ["crl", "--state", "st", "--out", "bundle.crl"]);
      splitBundle("bundle.crl");
      crlNumbers.push(await crlNumber("bundle.crl.int.pem"));
      const intOk = await opensslRaw(
        ["crl", "-in", "bundle.crl.int.pem", "-noout", "-verify", "-CAfile", "st/ca/intermediate.crt"],
        dir,
      );
      assert.equal(intOk.code, 0, intOk.all);
      assert.match(intOk.all, /verify OK/);
      const rootOk = await opensslRaw(
        ["crl", "-in", "bundle.crl.root.pem", "-noout", "-verify", "-CAfile", "st/ca/root.crt"],
        dir,
      );
      assert.equal(rootOk.code, 0, rootOk.all);
      assert.match(rootOk.all, /verify OK/);
      // The wrong issuer does not verify it (the check is real).
      const wrong = await opensslRaw(
        ["crl", "-in", "bundle.crl.int.pem", "-noout", "-verify", "-CAfile", "st/ca/root.crt"],
        dir,
      );
      assert.doesNotMatch(wrong.all, /verify OK/);

      const t = await openssl(["crl", "-in", "bundle.crl.int.pem", "-noout", "-text"], dir);
      assert.match(t, /Version 2/);
      assert.match(t, /X509v3 Authority Key Identifier/);
      assert.match(t, /X509v3 CRL Number/);
      assert.match(
        t,
        new RegExp(
          `Serial Number: ${bad}\\s+Revocation Date: .*\\s+CRL entry extensions:\\s+X509v3 CRL Reason Code:\\s+Key Compromise`,
        ),
      );
      assert.match(t, /Next Update: /);

      const revoked = await opensslRaw(
        ["verify", "-crl_check_all", "-CRLfile", "bundle.crl", "-CAfile", "chain.pem", "o/bad.crt"],
        dir,
      );
      assert.notEqual(revoked.code, 0, revoked.all);
      assert.match(revoked.all, /certificate revoked/);
      const good = await opensslRaw(
        ["verify", "-crl_check_all", "-CRLfile", "bundle.crl", "-CAfile", "chain.pem", "o/good.crt"],
        dir,
      );
      assert.equal(good.code, 0, good.all);
      assert.match(good.stdout, /o\/good\.crt: OK/);
      // -crl_check (the leaf only) with the intermediate as untrusted, as a server would have it.
      const leafOnly = await opensslRaw(
        [
          "verify",
          "-crl_check",
          "-CRLfile",
          "bundle.crl",
          "-CAfile",
          "st/ca/root.crt",
          "-untrusted",
          "o/bad.crt",
          "o/bad.crt",
        ],
        dir,
      );
      assert.match(leafOnly.all, /certificate revoked/);
    });

    it("crl --der: the intermediate's CRL in DER verifies and lists the revoked serial", async () => {
      await cli(dir, ["crl", "--der", "--state", "st", "--out", "int.crl.der"]);
      crlNumbers.push(await crlNumber("int.crl.der", "DER"));
      const res = await opensslRaw(
        [
          "crl",
          "-inform",
          "DER",
          "-in",
          "int.crl.der",
          "-noout",
          "-verify",
          "-CAfile",
          "st/ca/intermediate.crt",
        ],
        dir,
      );
      assert.match(res.all, /verify OK/);
      const bad = new X509Certificate(readFileSync(join(dir, "o/bad.crt"))).serialNumber.toUpperCase();
      assert.match(
        await openssl(["crl", "-inform", "DER", "-in", "int.crl.der", "-noout", "-text"], dir),
        new RegExp(bad),
      );
    });

    it("CRL numbers strictly increase across `mtls crl` runs", async () => {
      await cli(dir, ["crl", "--state", "st", "--out", "last.crl"]);
      splitBundle("last.crl");
      crlNumbers.push(await crlNumber("last.crl.int.pem"));
      for (let i = 1; i < crlNumbers.length; i++)
        assert.ok(
          (crlNumbers[i] as number) > (crlNumbers[i - 1] as number),
          `CRL numbers increase: ${crlNumbers}`,
        );
      assert.equal(new Set(crlNumbers).size, crlNumbers.length);
    });
  });

  describe("PKCS#12: openssl pkcs12 and NSS pk12util import both forms", { concurrency: 1 }, () => {
    let dir = "";
    let cleanup = () => {};

    before(async () => {
      ({ dir, cleanup } = tempDir("mtls-e2e-p12-"));
      writeFileSync(join(dir, "pw"), "p12-secret\n");
      await cli(dir, ["init", "--state", "st"]);
      await cli(dir, [
        "issue",
        "client",
        "modern",
        "--p12",
        "--p12-password-file",
        "pw",
        "--state",
        "st",
        "--out",
        "o",
      ]);
      await cli(dir, [
        "issue",
        "client",
        "legacy",
        "--p12-legacy",
        "--p12-password-file",
        "pw",
        "--state",
        "st",
        "--out",
        "o",
      ]);
    });
    after(() => cleanup());

    for (const [name, encryption, mac] of [
      ["modern", /PBES2, PBKDF2, AES-256-CBC/, /MAC: sha256/],
      ["legacy", /pbeWithSHA1And3-KeyTripleDES-CBC/, /MAC: sha1/],
    ] as const) {
      it(`openssl pkcs12 -info reads the ${name} .p12: key, leaf, intermediate, friendlyName`, async () => {
        const info = await openssl(
          ["pkcs12", "-info", "-noenc", "-in", `o/${name}.p12`, "-passin", "file:pw"],
          dir,
        );
        assert.match(info, encryption);
        assert.match(info, mac);
        assert.match(info, new RegExp(`friendlyName: ${name}`));
        assert.match(info, /localKeyID:/);
        assert.match(info, new RegExp(`subject=O = mtls, CN = ${name}`));
        assert.match(info, /subject=O = mtls, CN = mtls Intermediate CA/);
        assert.equal(pemBlocks(info, "CERTIFICATE").length, 2);
        assert.equal(pemBlocks(info, "PRIVATE KEY").length, 1);
        // The key in the .p12 is the key in NAME.key.
        writeFileSync(join(dir, `${name}.p12key.pem`), pemBlocks(info, "PRIVATE KEY")[0] as string);
        const fromP12 = await openssl(["pkey", "-in", `${name}.p12key.pem`, "-pubout"], dir);
        const fromKey = await openssl(["pkey", "-in", `o/${name}.key`, "-pubout"], dir);
        assert.equal(fromP12, fromKey);
        // A wrong password is refused.
        const wrong = await opensslRaw(
          ["pkcs12", "-info", "-noenc", "-in", `o/${name}.p12`, "-passin", "pass:wrong"],
          dir,
        );
        assert.notEqual(wrong.code, 0);
      });

      it(`pk12util imports the ${name} .p12 into a fresh NSS database; certutil lists the leaf and key`, async () => {
        const db = join(dir, `nss-${name}`);
        mkdirSync(db);
        assertOk(
          await run("certutil", ["-N", "-d", `sql:${db}`, "--empty-password"], { timeoutMs: 30_000 }),
          "certutil -N",
        );
        const imported = assertOk(
          await run("pk12util", ["-i", join(dir, `o/${name}.p12`), "-d", `sql:${db}`, "-W", "p12-secret"], {
            timeoutMs: 30_000,
          }),
          "pk12util -i",
        );
        assert.match(imported.stdout + imported.stderr, /PKCS12 IMPORT SUCCESSFUL/);
        const listed = assertOk(
          await run("certutil", ["-L", "-d", `sql:${db}`], { timeoutMs: 30_000 }),
          "certutil -L",
        );
        assert.match(listed.stdout, new RegExp(`^${name}\\s+u,u,u`, "m"));
        assert.match(listed.stdout, /mtls Intermediate CA/);
        const keys = assertOk(
          await run("certutil", ["-K", "-d", `sql:${db}`], { timeoutMs: 30_000 }),
          "certutil -K",
        );
        assert.match(keys.stdout, new RegExp(`ec\\s+[0-9a-f]+\\s+${name}`));
        // A wrong password is refused by NSS too.
        const db2 = join(dir, `nss-${name}-wrong`);
        mkdirSync(db2);
        assertOk(
          await run("certutil", ["-N", "-d", `sql:${db2}`, "--empty-password"], { timeoutMs: 30_000 }),
        );
        const wrong = await run(
          "pk12util",
          ["-i", join(dir, `o/${name}.p12`), "-d", `sql:${db2}`, "-W", "nope"],
          {
            timeoutMs: 30_000,
          },
        );
        assert.notEqual(wrong.code, 0);
      });
    }
  });

  it("an `openssl req` CSR is signed by `mtls sign`: openssl verifies it, the SAN is kept, the key matches", async () => {
    const { dir, cleanup } = tempDir("mtls-e2e-sign-");
    try {
      await cli(dir, ["init", "--state", "st"]);
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
          "bob.key",
          "-subj",
          "/CN=bob",
          "-addext",
          "subjectAltName=DNS:bob.acme.test",
          "-out",
          "req.csr",
        ],
        dir,
      );
      mkdirSync(join(dir, "certs"));
      const res = await cli(dir, [
        "sign",
        "req.csr",
        "--profile",
        "client",
        "--state",
        "st",
        "--out",
        "certs/bob.crt",
      ]);
      assert.match(res, /signed client certificate "bob"/);
      const verified = await opensslRaw(
        [
          "verify",
          "-purpose",
          "sslclient",
          "-CAfile",
          "certs/ca.crt",
          "-untrusted",
          "certs/bob.crt",
          "certs/bob.crt",
        ],
        dir,
      );
      assert.equal(verified.code, 0, verified.all);
      const text = await openssl(["x509", "-in", "certs/bob.crt", "-noout", "-text"], dir);
      assert.match(extension(text, "X509v3 Subject Alternative Name"), /DNS:bob\.acme\.test/);
      assert.match(extension(text, "X509v3 Extended Key Usage"), /TLS Web Client Authentication/);
      assert.match(text, /Subject: O = mtls, CN = bob/);
      const certKey = await openssl(["x509", "-in", "certs/bob.crt", "-noout", "-pubkey"], dir);
      const ownKey = await openssl(["pkey", "-in", "bob.key", "-pubout"], dir);
      assert.equal(certKey, ownKey, "the certificate carries the CSR's key");
      // The key is the requester's: mtls wrote no key file.
      const listed = JSON.parse(await cli(dir, ["list", "--json", "--state", "st"])) as {
        name: string;
        keyPath: string | null;
      }[];
      // (init's admin certificate is listed too, with the key file init wrote for it)
      assert.equal(listed.find((r) => r.name === "bob")?.keyPath, null);
    } finally {
      cleanup();
    }
  });

  describe("mutual TLS handshakes on 127.0.0.1", { concurrency: 1 }, () => {
    let dir = "";
    let cleanup = () => {};
    const file = (f: string) => readFileSync(join(dir, f));

    before(async () => {
      ({ dir, cleanup } = tempDir("mtls-e2e-tls-"));
      await cli(dir, ["init", "--state", "st", "--name", "Acme Corp"]);
      await cli(dir, [
        "issue",
        "server",
        "srv",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--state",
        "st",
        "--out",
        "c",
      ]);
      await cli(dir, [
        "issue",
        "client",
        "alice",
        "--uri",
        "spiffe://acme.test/user/alice",
        "--state",
        "st",
        "--out",
        "c",
      ]);
      await cli(dir, ["init", "--state", "other", "--name", "Other Corp"]);
      await cli(dir, [
        "issue",
        "server",
        "osrv",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--state",
        "other",
        "--out",
        "x",
      ]);
      await cli(dir, ["issue", "client", "eve", "--state", "other", "--out", "x"]);
      // s_server's -cert reads only the leaf of NAME.crt; the intermediate after it goes to -cert_chain.
      const blocks = pemBlocks(readFileSync(join(dir, "c/srv.crt"), "utf8"), "CERTIFICATE");
      assert.equal(blocks.length, 2);
      writeFileSync(join(dir, "c/srv.chain.pem"), blocks[1] as string);
    });
    after(() => cleanup());

    interface NodeServer {
      port: number;
      peers: string[];
      clientErrors: string[];
      close(): Promise<void>;
    }

    /** A Node mTLS server that demands a client certificate from our CA and greets each peer by CN. */
    function nodeServer(certFile: string, keyFile: string): Promise<NodeServer> {
      const peers: string[] = [];
      const clientErrors: string[] = [];
      const server = tls.createServer(
        {
          cert: file(certFile),
          key: file(keyFile),
          ca: file("st/ca/root.crt"),
          requestCert: true,
          rejectUnauthorized: true,
        },
        (socket) => {
          const cn = socket.getPeerCertificate().subject?.CN;
          peers.push(String(cn));
          socket.end(`hello ${cn}\n`);
        },
      );
      server.on("tlsClientError", (err) => clientErrors.push(err.message));
      return new Promise((resolvePromise, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => {
          const addr = server.address();
          resolvePromise({
            port: typeof addr === "object" && addr ? addr.port : 0,
            peers,
            clientErrors,
            close: () =>
              withTimeout(
                new Promise<void>((r) => {
                  server.close(() => r());
                }),
                5_000,
                "server close",
              ),
          });
        });
      });
    }

    interface ClientResult {
      data: string;
      authorized: boolean;
      error?: string;
    }

    /** A Node TLS client: resolves when the connection closes, with what it read and any error. */
    function nodeClient(
      port: number,
      opts: { cert?: string; key?: string; ca: string },
    ): Promise<ClientResult> {
      return withTimeout(
        new Promise<ClientResult>((resolvePromise) => {
          const result: ClientResult = { data: "", authorized: false };
          const socket = tls.connect({
            host: "127.0.0.1",
            port,
            servername: "localhost",
            ca: file(opts.ca),
            ...(opts.cert ? { cert: file(opts.cert) } : {}),
            ...(opts.key ? { key: file(opts.key) } : {}),
          });
          socket.on("secureConnect", () => {
            result.authorized = socket.authorized;
          });
          socket.on("data", (d) => {
            result.data += d.toString();
          });
          socket.on("error", (err: NodeJS.ErrnoException) => {
            result.error = `${err.code ?? ""} ${err.message}`;
          });
          socket.on("close", () => resolvePromise(result));
        }),
        15_000,
        "TLS client",
      );
    }

    it("Node server and Node client complete an mTLS handshake; the server sees the client's subject", async () => {
      const server = await nodeServer("c/srv.crt", "c/srv.key");
      try {
        const res = await nodeClient(server.port, {
          cert: "c/alice.crt",
          key: "c/alice.key",
          ca: "st/ca/root.crt",
        });
        assert.equal(res.error, undefined);
        assert.equal(res.authorized, true, "the client trusts the server");
        assert.equal(res.data, "hello alice\n");
        assert.deepEqual(server.peers, ["alice"]);
        assert.deepEqual(server.clientErrors, []);
      } finally {
        await server.close();
      }
    });

    it("the Node server refuses a client certificate from another CA, and one without a certificate", async () => {
      const server = await nodeServer("c/srv.crt", "c/srv.key");
      try {
        const foreign = await nodeClient(server.port, {
          cert: "x/eve.crt",
          key: "x/eve.key",
          ca: "st/ca/root.crt",
        });
        assert.equal(foreign.data, "", "no greeting for a foreign client");
        const none = await nodeClient(server.port, { ca: "st/ca/root.crt" });
        assert.equal(none.data, "");
        assert.deepEqual(server.peers, [], "no connection was accepted");
        // Both refusals happen in the handshake, as TLS errors on the server.
        await withTimeout(
          (async () => {
            while (server.clientErrors.length < 2) await new Promise((r) => setTimeout(r, 20));
          })(),
          5_000,
          "the server's tlsClientError events",
        );
      } finally {
        await server.close();
      }
    });

    it("a Node client refuses a server certificate from another CA", async () => {
      // The other CA's server, which would accept our client (it trusts our root).
      const { port, close, peers } = await nodeServer("x/osrv.crt", "x/osrv.key");
      try {
        const res = await nodeClient(port, { cert: "c/alice.crt", key: "c/alice.key", ca: "st/ca/root.crt" });
        assert.equal(res.data, "");
        assert.match(
          res.error ?? "",
          /UNABLE_TO_GET_ISSUER_CERT_LOCALLY|unable to get local issuer|UNABLE_TO_VERIFY/i,
        );
        assert.deepEqual(peers, []);
      } finally {
        await close();
      }
    });

    /** Starts `openssl s_server` for one connection with our server certificate, on a free port. */
    async function sServer() {
      let lastError: unknown;
      for (let attempt = 0; attempt < 3; attempt++) {
        const port = await freePort();
        try {
          const bg = await startBackground(
            "openssl",
            [
              "s_server",
              "-accept",
              `127.0.0.1:${port}`,
              "-cert",
              "c/srv.crt",
              "-cert_chain",
              "c/srv.chain.pem",
              "-key",
              "c/srv.key",
              "-CAfile",
              "st/ca/root.crt",
              "-Verify",
              "2",
              "-verify_return_error",
              "-naccept",
              "1",
            ],
            { cwd: dir, ready: /ACCEPT/, timeoutMs: 10_000 },
          );
          return { port, bg };
        } catch (err) {
          lastError = err; // the port was taken in between: try another
        }
      }
      throw lastError;
    }

    /**
     * `openssl s_client` to PORT with a client certificate (NAME.crt holds the leaf, then the
     * intermediate, which `-cert_chain` sends along). Closes after the handshake, or with `waitForClose`
     * only when the server closes (to see a refusal's alert, which TLS 1.3 sends after the client's
     * side of the handshake is done).
     */
    function sClient(port: number, name: string, opts: { waitForClose?: boolean } = {}) {
      const blocks = pemBlocks(readFileSync(join(dir, `${name}.crt`), "utf8"), "CERTIFICATE");
      writeFileSync(join(dir, `${name}.chain.pem`), blocks.slice(1).join(""));
      return opensslRaw(
        [
          "s_client",
          "-connect",
          `127.0.0.1:${port}`,
          "-servername",
          "localhost",
          "-verify_hostname",
          "localhost",
          "-cert",
          `${name}.crt`,
          "-cert_chain",
          `${name}.chain.pem`,
          "-key",
          `${name}.key`,
          "-CAfile",
          "st/ca/root.crt",
          "-verify_return_error",
          ...(opts.waitForClose ? ["-ign_eof"] : []),
        ],
        dir,
      );
    }

    it("openssl s_server and s_client complete an mTLS handshake with the issued certificates", async () => {
      const { port, bg } = await sServer();
      try {
        const client = await sClient(port, "c/alice");
        assert.match(client.all, /Verification: OK/);
        assert.match(client.all, /Verify return code: 0 \(ok\)/);
        assert.match(client.all, /depth=0 O = Acme Corp, CN = srv/);
        const code = await withTimeout(bg.exited, 10_000, "s_server exit");
        const out = bg.output();
        assert.match(out, /Client certificate/);
        assert.match(out, /subject=O = Acme Corp, CN = alice/);
        assert.doesNotMatch(out, /verify error/);
        assert.equal(code, 0, out);
      } finally {
        await bg.stop();
      }
    });

    it("openssl s_server refuses a client certificate from another CA", async () => {
      const { port, bg } = await sServer();
      try {
        const client = await sClient(port, "x/eve", { waitForClose: true });
        assert.match(
          client.all,
          /alert unknown ca|alert certificate unknown|alert bad certificate/,
          client.all,
        );
        await withTimeout(bg.exited, 10_000, "s_server exit");
        const out = bg.output();
        assert.match(out, /verify error|certificate verify failed/);
        assert.doesNotMatch(out, /subject=O = Other Corp, CN = eve/);
      } finally {
        await bg.stop();
      }
    });

    it("openssl s_client completes an mTLS handshake with the Node server, and a Node client with s_server", async () => {
      const server = await nodeServer("c/srv.crt", "c/srv.key");
      try {
        const client = await sClient(server.port, "c/alice");
        assert.match(client.all, /Verify return code: 0 \(ok\)/);
        assert.deepEqual(server.peers, ["alice"]);
      } finally {
        await server.close();
      }
      const { port, bg } = await sServer();
      try {
        const res = await withTimeout(
          new Promise<{ authorized: boolean; error?: string }>((resolvePromise) => {
            const socket = tls.connect({
              host: "127.0.0.1",
              port,
              servername: "localhost",
              ca: file("st/ca/root.crt"),
              cert: file("c/alice.crt"),
              key: file("c/alice.key"),
            });
            socket.on("secureConnect", () => {
              const authorized = socket.authorized;
              socket.end();
              resolvePromise({ authorized });
            });
            socket.on("error", (err) => resolvePromise({ authorized: false, error: err.message }));
          }),
          15_000,
          "Node client to s_server",
        );
        assert.deepEqual(res, { authorized: true });
        await withTimeout(bg.exited, 10_000, "s_server exit");
        assert.match(bg.output(), /subject=O = Acme Corp, CN = alice/);
      } finally {
        await bg.stop();
      }
    });
  });
});
