import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { isMtlsError } from "../errors.js";
import { parseCsr } from "./csr.js";
import { pemDecodeAll, pemEncode } from "./pem.js";

const dir = mkdtempSync(join(tmpdir(), "mtls-csr-"));
after(() => rmSync(dir, { recursive: true, force: true }));

let counter = 0;
/** A CSR made by `openssl req` with a fresh key of `newkey` (openssl syntax) and extra -addext options. */
function opensslCsr(newkey: string[], opts: { subj?: string; addext?: string[] } = {}): string {
  const out = join(dir, `req-${++counter}.csr`);
  execFileSync(
    "openssl",
    [
      "req",
      "-new",
      "-nodes",
      ...newkey,
      "-keyout",
      join(dir, `req-${counter}.key`),
      "-out",
      out,
      "-subj",
      opts.subj ?? "/O=Acme/CN=web",
      ...(opts.addext ?? []).flatMap((e) => ["-addext", e]),
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  return readFileSync(out, "utf8");
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
const SAN =
  "subjectAltName=DNS:Web.Acme.test,IP:10.0.0.1,IP:2001:db8::1,email:ops@acme.test,URI:spiffe://acme.test/web";
const EXPECTED_SANS = [
  { type: "dns", value: "web.acme.test" }, // lowercased by validation
  { type: "ip", value: "10.0.0.1" },
  { type: "ip", value: "2001:db8::1" },
  { type: "email", value: "ops@acme.test" },
  { type: "uri", value: "spiffe://acme.test/web" },
];

const rejectsWith = (code: string, p: Promise<unknown>, message?: RegExp) =>
  assert.rejects(
    p,
    (err) => isMtlsError(err) && err.code === code && (!message || message.test(err.message)),
  );

describe("parseCsr accepts openssl requests", () => {
  const made: Record<string, string> = {};
  before(() => {
    made.ec = opensslCsr(EC, { addext: [SAN] });
    made.rsa = opensslCsr(["-newkey", "rsa:2048"], { addext: [SAN] });
    made.ed25519 = opensslCsr(["-newkey", "ed25519"], { addext: [SAN] });
    made.p384 = opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"], { subj: "/CN=svc" });
  });

  for (const [kind, keyType] of [
    ["ec", "ec-p256"],
    ["rsa", "rsa-2048"],
    ["ed25519", "ed25519"],
  ] as const) {
    test(`${keyType}: key type, subject, CN and SANs`, async () => {
      const info = await parseCsr(made[kind] as string);
      assert.equal(info.keyType, keyType);
      assert.equal(info.subject, "O=Acme, CN=web");
      assert.equal(info.commonName, "web");
      assert.deepEqual(info.sans, EXPECTED_SANS);
      assert.deepEqual([...info.ignoredExtensions], []);
      assert.deepEqual(info.der, pemDecodeAll(made[kind] as string)[0]?.der);
    });
  }

  test("the SPKI is the requester's public key", async () => {
    const info = await parseCsr(made.ec as string);
    const pub = execFileSync("openssl", [
      "pkey",
      "-in",
      join(dir, "req-1.key"),
      "-pubout",
      "-outform",
      "DER",
    ]);
    assert.deepEqual(Buffer.from(info.spki), pub);
  });

  test("no SAN extension → no SANs; P-384", async () => {
    const info = await parseCsr(made.p384 as string);
    assert.equal(info.keyType, "ec-p384");
    assert.equal(info.commonName, "svc");
    assert.deepEqual(info.sans, []);
  });

  test("DER input, bytes input and the NEW CERTIFICATE REQUEST label work", async () => {
    const pem = made.ec as string;
    const der = pemDecodeAll(pem)[0]?.der as Uint8Array;
    assert.equal((await parseCsr(der)).commonName, "web");
    assert.equal((await parseCsr(Buffer.from(pem))).commonName, "web");
    assert.equal((await parseCsr(pemEncode("NEW CERTIFICATE REQUEST", der))).commonName, "web");
  });

  test("extensions other than SAN are listed as ignored (not copied)", async () => {
    const pem = opensslCsr(EC, {
      addext: [
        "keyUsage=critical,digitalSignature",
        "extendedKeyUsage=serverAuth,codeSigning",
        "basicConstraints=CA:FALSE",
      ],
    });
    const info = await parseCsr(pem);
    assert.deepEqual([...info.ignoredExtensions].sort(), ["2.5.29.15", "2.5.29.19", "2.5.29.37"]);
  });

  test("ignoredExtensions is a plain string array (not @peculiar/x509's Extensions class)", async () => {
    const info = await parseCsr(opensslCsr(EC, { addext: ["keyUsage=digitalSignature"] }));
    assert.equal(Object.getPrototypeOf(info.ignoredExtensions), Array.prototype);
  });

  test("a request without a subject is fine (SAN only)", async () => {
    const info = await parseCsr(opensslCsr(EC, { subj: "/", addext: ["subjectAltName=DNS:a.acme.test"] }));
    assert.equal(info.commonName, undefined);
    assert.deepEqual(info.sans, [{ type: "dns", value: "a.acme.test" }]);
  });
});

describe("parseCsr refuses", () => {
  test("a flipped signature byte → E_BAD_CSR", async () => {
    const der = new Uint8Array(pemDecodeAll(opensslCsr(EC))[0]?.der as Uint8Array);
    // The last byte belongs to the ECDSA s value: the structure stays valid, the signature does not.
    der[der.length - 1] = (der.at(-1) as number) ^ 0x01;
    await rejectsWith("E_BAD_CSR", parseCsr(der), /signature/);
  });

  test("a changed subject under the old signature → E_BAD_CSR", async () => {
    const pem = opensslCsr(EC, { subj: "/CN=aaaa" });
    const der = Buffer.from(pemDecodeAll(pem)[0]?.der as Uint8Array);
    const at = der.indexOf(Buffer.from("aaaa"));
    der.write("zzzz", at, "latin1");
    await rejectsWith("E_BAD_CSR", parseCsr(der));
  });

  test("CA:TRUE → E_BAD_CSR", async () => {
    await rejectsWith(
      "E_BAD_CSR",
      parseCsr(opensslCsr(EC, { addext: ["basicConstraints=critical,CA:TRUE"] })),
      /CA:TRUE/,
    );
  });

  test("keyCertSign or cRLSign in keyUsage → E_BAD_CSR", async () => {
    await rejectsWith("E_BAD_CSR", parseCsr(opensslCsr(EC, { addext: ["keyUsage=keyCertSign"] })));
    await rejectsWith(
      "E_BAD_CSR",
      parseCsr(opensslCsr(EC, { addext: ["keyUsage=digitalSignature,cRLSign"] })),
    );
  });

  test("RSA-1024 → E_WEAK_KEY", async () => {
    await rejectsWith("E_WEAK_KEY", parseCsr(opensslCsr(["-newkey", "rsa:1024"])), /1024/);
  });

  test("secp256k1 → E_WEAK_KEY (not E_BAD_CSR: the signature is fine, the curve is refused)", async () => {
    await rejectsWith(
      "E_WEAK_KEY",
      parseCsr(opensslCsr(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"])),
      /secp256k1/,
    );
  });

  test("a SAN of an unsupported type → E_BAD_CSR", async () => {
    await rejectsWith(
      "E_BAD_CSR",
      parseCsr(opensslCsr(EC, { addext: ["subjectAltName=RID:1.2.3.4"] })),
      /RID|registeredID|unsupported/i,
    );
  });

  test("a malformed SAN value → E_BAD_SAN", async () => {
    await rejectsWith(
      "E_BAD_SAN",
      parseCsr(opensslCsr(EC, { addext: ["subjectAltName=DNS:-bad-.acme.test"] })),
    );
    await rejectsWith(
      "E_BAD_SAN",
      parseCsr(opensslCsr(EC, { addext: ["subjectAltName=URI:spiffe://acme.test/x/"] })),
    );
  });

  test("garbage → E_BAD_INPUT or E_BAD_CSR", async () => {
    await rejectsWith("E_BAD_INPUT", parseCsr("hello"));
    await rejectsWith("E_BAD_INPUT", parseCsr(""));
    await rejectsWith("E_BAD_INPUT", parseCsr(new Uint8Array([1, 2, 3])));
    await rejectsWith("E_BAD_CSR", parseCsr(new Uint8Array([0x30, 0x03, 1, 2, 3])));
    await rejectsWith("E_BAD_CSR", parseCsr(pemEncode("CERTIFICATE REQUEST", new Uint8Array([0x30, 0x00]))));
  });

  test("a certificate is not a CSR → E_BAD_INPUT", async () => {
    const cert = join(dir, "self.crt");
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        ...EC,
        "-nodes",
        "-keyout",
        join(dir, "self.key"),
        "-out",
        cert,
        "-subj",
        "/CN=x",
        "-days",
        "1",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    await rejectsWith("E_BAD_INPUT", parseCsr(readFileSync(cert, "utf8")), /CERTIFICATE REQUEST/);
  });
});
