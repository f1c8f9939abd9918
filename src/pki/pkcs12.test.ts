import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { createHash, createPrivateKey, X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { createSecureContext } from "node:tls";
import { fileURLToPath, pathToFileURL } from "node:url";
import { isMtlsError } from "../errors.js";
import { buildPkcs12, parsePkcs12 } from "./pkcs12.js";

// External tools are required, not optional: if one is missing these tests fail (CI installs
// openssl and libnss3-tools).
const dir = mkdtempSync(join(tmpdir(), "mtls-p12-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string) => join(dir, name);

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: "utf8" });
  if (r.error) throw r.error; // e.g. ENOENT: the binary is not installed
  assert.equal(r.status, 0, `${cmd} ${args.join(" ")} failed:\n${r.stdout}${r.stderr}`);
  return r.stdout + r.stderr; // `openssl pkcs12 -info` prints its summary on stderr
}
const openssl = (...args: string[]) => run("openssl", args);

// A CA and two leaves it signed (EC P-256 and RSA-2048), each with a chain of two.
openssl(
  ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"],
  ...["-subj", "/CN=Test CA", "-keyout", file("ca.key"), "-out", file("ca.crt")],
  ...["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
);
function leafFixture(name: string, newkey: string[]) {
  openssl(
    "req",
    "-newkey",
    ...newkey,
    "-nodes",
    "-subj",
    `/CN=${name}`,
    "-keyout",
    file(`${name}.key`),
    "-out",
    file(`${name}.csr`),
  );
  openssl(
    ...["x509", "-req", "-in", file(`${name}.csr`), "-CA", file("ca.crt"), "-CAkey", file("ca.key")],
    ...["-set_serial", "0x1234", "-days", "1", "-out", file(`${name}.crt`)],
  );
  return {
    name,
    key: createPrivateKey(readFileSync(file(`${name}.key`))).export({ type: "pkcs8", format: "der" }),
    certificates: [
      new X509Certificate(readFileSync(file(`${name}.crt`))).raw,
      new X509Certificate(readFileSync(file("ca.crt"))).raw,
    ],
  };
}
const fixtures = [
  leafFixture("ec-leaf", ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
  leafFixture("rsa-leaf", ["rsa:2048"]),
];
const [ec, rsa] = fixtures as [(typeof fixtures)[0], (typeof fixtures)[0]];

function build(f: typeof ec, legacy: boolean, password = "pässword 1"): Uint8Array {
  return buildPkcs12({
    privateKey: f.key,
    certificates: f.certificates,
    friendlyName: f.name,
    password,
    legacy,
  });
}

/** `openssl pkcs12 -export` of the EC leaf and its CA, password "pw". */
function opensslExport(name: string, ...extra: string[]): Buffer {
  openssl(
    ...[
      "pkcs12",
      "-export",
      "-in",
      file("ec-leaf.crt"),
      "-inkey",
      file("ec-leaf.key"),
      "-certfile",
      file("ca.crt"),
    ],
    ...["-name", "from openssl", "-passout", "pass:pw", "-out", file(name), ...extra],
  );
  return readFileSync(file(name));
}

/** A fresh NSS database with `p12` imported into it; returns the database directory. */
function nssImport(name: string, p12: Uint8Array, password: string): string {
  const db = file(name);
  mkdirSync(db);
  writeFileSync(`${db}.p12`, p12);
  run("certutil", ["-N", "-d", `sql:${db}`, "--empty-password"]);
  assert.match(run("pk12util", ["-i", `${db}.p12`, "-d", `sql:${db}`, "-W", password]), /IMPORT SUCCESSFUL/);
  return db;
}

const isPassphraseError = (err: unknown) =>
  isMtlsError(err, "E_PASSPHRASE") && err.message === "wrong PKCS#12 password";
const isBadInput = (pattern: RegExp) => (err: unknown) =>
  isMtlsError(err, "E_BAD_INPUT") && pattern.test(err.message);

describe("buildPkcs12 / parsePkcs12", () => {
  for (const legacy of [false, true]) {
    for (const f of fixtures) {
      test(`round trip ${legacy ? "legacy" : "modern"} ${f.name}`, () => {
        const parsed = parsePkcs12(build(f, legacy), "pässword 1");
        assert.deepEqual(Buffer.from(parsed.privateKey ?? []), f.key);
        assert.deepEqual(
          parsed.certificates.map((c) => Buffer.from(c)),
          f.certificates,
        );
        assert.equal(parsed.friendlyName, f.name);
        assert.equal(parsed.macAlgorithm, legacy ? "SHA-1" : "SHA-256");
        assert.equal(
          parsed.encryption,
          legacy ? "pbeWithSHAAnd3-KeyTripleDES-CBC" : "PBES2 (PBKDF2-SHA256, AES-256-CBC)",
        );
      });
    }
  }

  test("a wrong password is E_PASSPHRASE (MAC checked first)", () => {
    for (const legacy of [false, true]) {
      const p12 = build(ec, legacy);
      assert.throws(() => parsePkcs12(p12, "pässword 2"), isPassphraseError);
      assert.throws(() => parsePkcs12(p12, ""), isPassphraseError);
    }
  });

  test("malformed input is E_BAD_INPUT", () => {
    const p12 = build(ec, false);
    assert.throws(() => parsePkcs12(new Uint8Array([1, 2, 3, 4]), "x"), isBadInput(/malformed/));
    assert.throws(() => parsePkcs12(p12.subarray(0, 200), "x"), isBadInput(/malformed/));
    assert.throws(() => parsePkcs12(ec.certificates[0] ?? new Uint8Array(), "x"), isBadInput(/./));
    const opts = { privateKey: ec.key, certificates: ec.certificates, friendlyName: "x", password: "x" };
    assert.throws(() => buildPkcs12({ ...opts, privateKey: rsa.key }), isBadInput(/does not belong/));
    assert.throws(() => buildPkcs12({ ...opts, certificates: [] }), isBadInput(/leaf/));
    assert.throws(
      () => buildPkcs12({ ...opts, privateKey: new Uint8Array([0x30, 0]) }),
      isBadInput(/PKCS#8/),
    );
    assert.throws(() => buildPkcs12({ ...opts, iterations: 0 }), isBadInput(/iterations/));
  });

  test("openssl pkcs12 -info reads the modern file", () => {
    writeFileSync(file("modern.p12"), build(ec, false, "pw"));
    const out = openssl("pkcs12", "-info", "-in", file("modern.p12"), "-passin", "pass:pw", "-noenc");
    assert.match(out, /^MAC: sha256, Iteration 2048$/m);
    assert.match(
      out,
      /^PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC, Iteration 2048, PRF hmacWithSHA256$/m,
    );
    assert.match(out, /^Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 2048, PRF hmacWithSHA256$/m);
    checkOpensslInfo(out, ec);
  });

  test("openssl pkcs12 -info reads the legacy file (no -legacy flag needed: 3DES is in the default provider)", () => {
    writeFileSync(file("legacy.p12"), build(rsa, true, "pw"));
    const out = openssl("pkcs12", "-info", "-in", file("legacy.p12"), "-passin", "pass:pw", "-noenc");
    assert.match(out, /^MAC: sha1, Iteration 2048$/m);
    assert.match(out, /^PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2048$/m);
    assert.match(out, /^Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2048$/m);
    checkOpensslInfo(out, rsa);
  });

  test("parses files made by openssl pkcs12 -export", () => {
    const exp = (name: string, ...extra: string[]) => parsePkcs12(opensslExport(name, ...extra), "pw");
    const check = (parsed: ReturnType<typeof parsePkcs12>) => {
      assert.deepEqual(Buffer.from(parsed.privateKey ?? []), ec.key);
      assert.deepEqual(
        parsed.certificates.map((c) => Buffer.from(c)),
        ec.certificates,
      );
      assert.equal(parsed.friendlyName, "from openssl");
    };
    const modern = exp("ossl-modern.p12");
    check(modern);
    assert.equal(modern.macAlgorithm, "SHA-256");
    assert.equal(modern.encryption, "PBES2 (PBKDF2-SHA256, AES-256-CBC)");

    const plainCerts = exp("ossl-plain-certs.p12", "-certpbe", "NONE");
    check(plainCerts);
    assert.equal(plainCerts.encryption, "key: PBES2 (PBKDF2-SHA256, AES-256-CBC); certificates: none");

    const legacy3des = exp("ossl-legacy-3des.p12", "-legacy", "-certpbe", "PBE-SHA1-3DES");
    check(legacy3des);
    assert.equal(legacy3des.macAlgorithm, "SHA-1");
    assert.equal(legacy3des.encryption, "pbeWithSHAAnd3-KeyTripleDES-CBC");

    // Plain `-legacy` encrypts the certificates with RC2-40, which Node's OpenSSL lacks by default.
    assert.throws(() => exp("ossl-legacy.p12", "-legacy"), isBadInput(/^unsupported encryption rc2-40-cbc/));
  });

  test("with --openssl-legacy-provider, the RC2-40 certificates of openssl -legacy files decrypt", () => {
    opensslExport("ossl-legacy-rc2.p12", "-legacy");
    const script = file("rc2.mjs");
    const module = pathToFileURL(fileURLToPath(new URL("./pkcs12.ts", import.meta.url))).href;
    writeFileSync(
      script,
      `import { readFileSync } from "node:fs";
       import { parsePkcs12 } from ${JSON.stringify(module)};
       const p = parsePkcs12(readFileSync(${JSON.stringify(file("ossl-legacy-rc2.p12"))}), "pw");
       console.log(JSON.stringify({ encryption: p.encryption, certs: p.certificates.length, key: !!p.privateKey }));`,
    );
    const out = execFileSync(process.execPath, ["--openssl-legacy-provider", "--import", "tsx", script], {
      encoding: "utf8",
      cwd: fileURLToPath(new URL("../..", import.meta.url)),
    });
    assert.deepEqual(JSON.parse(out), {
      encryption: "key: pbeWithSHAAnd3-KeyTripleDES-CBC; certificates: pbeWithSHAAnd40BitRC2-CBC",
      certs: 2,
      key: true,
    });
  });

  for (const legacy of [false, true]) {
    test(`NSS pk12util imports the ${legacy ? "legacy" : "modern"} file`, () => {
      const db = nssImport(`nss-${legacy ? "legacy" : "modern"}`, build(ec, legacy, "nss pw"), "nss pw");
      const certs = run("certutil", ["-L", "-d", `sql:${db}`]);
      assert.match(certs, /^ec-leaf +u,u,u$/m); // "u": NSS holds the matching private key
      assert.match(certs, /^Test CA /m);
      assert.match(run("certutil", ["-K", "-d", `sql:${db}`]), /^<\s*0> ec +[0-9a-f]{40} +ec-leaf$/m);
    });
  }

  test("parses what NSS pk12util exports (BER, 600000 iterations, CA before leaf)", () => {
    const db = nssImport("nss-export", build(ec, false, "pw"), "pw");
    const out = file("nss-exported.p12");
    run("pk12util", ["-o", out, "-n", "ec-leaf", "-d", `sql:${db}`, "-W", "pw", "-K", ""]);
    const parsed = parsePkcs12(readFileSync(out), "pw");
    assert.deepEqual(Buffer.from(parsed.privateKey ?? []), ec.key);
    assert.deepEqual(
      parsed.certificates.map((c) => Buffer.from(c)),
      ec.certificates,
    ); // leaf moved first
    assert.equal(parsed.friendlyName, "ec-leaf");
    assert.equal(parsed.macAlgorithm, "SHA-256");
  });

  test("Node's tls.createSecureContext accepts both variants", () => {
    for (const f of fixtures) {
      for (const legacy of [false, true]) {
        assert.doesNotThrow(() =>
          createSecureContext({ pfx: Buffer.from(build(f, legacy, "tls")), passphrase: "tls" }),
        );
      }
    }
  });
});

/** Checks `openssl pkcs12 -info -noenc` output: attributes, both certificates, the same key. */
function checkOpensslInfo(out: string, f: typeof ec) {
  const leaf = f.certificates[0] ?? new Uint8Array();
  const keyId = createHash("sha1").update(leaf).digest("hex").toUpperCase().replace(/../g, "$& ");
  // Key bag and leaf cert bag carry the same friendlyName and localKeyID; the CA cert none.
  assert.equal(out.split(`friendlyName: ${f.name}\n`).length - 1, 2);
  assert.equal(out.split(`localKeyID: ${keyId}\n`).length - 1, 2);
  assert.match(out, /Bag Attributes: <No Attributes>\nsubject=CN = Test CA/);
  assert.equal(out.split("-----BEGIN CERTIFICATE-----").length - 1, 2);
  const pem = /-----BEGIN PRIVATE KEY-----[^-]+-----END PRIVATE KEY-----/.exec(out)?.[0] ?? "";
  assert.deepEqual(createPrivateKey(pem).export({ type: "pkcs8", format: "der" }), f.key);
}
