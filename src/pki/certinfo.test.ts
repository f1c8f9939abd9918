import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { generateKeyPairSync, X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { isMtlsError } from "../errors.js";
import { buildCertificate, randomSerial } from "./certificate.js";
import { certToPem, parseCertificate, parseCertificates, sha256Hex } from "./certinfo.js";
import * as ext from "./extensions.js";
import { spkiOf } from "./keys.js";
import { buildName } from "./names.js";
import { pemDecodeAll } from "./pem.js";
import { keyObjectSigner } from "./signer.js";

const dir = mkdtempSync(join(tmpdir(), "mtls-certinfo-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A certificate made by openssl, so the parser is checked against something it did not write. */
function opensslCert(): Uint8Array {
  const out = join(dir, "openssl.pem");
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-384",
      "-nodes",
      "-keyout",
      join(dir, "openssl.key"),
      "-out",
      out,
      "-days",
      "30",
      "-subj",
      "/C=FR/O=Example Org/OU=Ops/CN=svc.example.test",
      "-addext",
      "subjectAltName=DNS:svc.example.test,IP:192.0.2.7,email:ops@example.test,URI:https://example.test/x,otherName:1.2.3.4;UTF8:ignored",
      "-addext",
      "basicConstraints=critical,CA:FALSE",
      "-addext",
      "keyUsage=critical,digitalSignature,keyAgreement",
      "-addext",
      "extendedKeyUsage=serverAuth,clientAuth,codeSigning,1.2.3.4.5",
      "-addext",
      "crlDistributionPoints=URI:http://example.test/a.crl,URI:http://example.test/b.crl",
      "-addext",
      "authorityInfoAccess=OCSP;URI:http://ocsp.example.test,caIssuers;URI:http://example.test/ca.crt",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  return pemDecodeAll(readFileSync(out, "utf8"))[0]?.der as Uint8Array;
}

describe("parseCertificate on an openssl certificate", () => {
  let der: Uint8Array;
  before(() => {
    der = opensslCert();
  });

  test("names, key, validity and fingerprint", () => {
    const info = parseCertificate(der);
    const node = new X509Certificate(der);
    assert.equal(info.subject, "C=FR, O=Example Org, OU=Ops, CN=svc.example.test");
    assert.equal(info.issuer, info.subject);
    assert.equal(info.selfSigned, true);
    assert.equal(info.keyType, "ec-p384");
    assert.equal(info.serial, node.serialNumber.toLowerCase());
    assert.deepEqual(info.notBefore, new Date(node.validFrom));
    assert.deepEqual(info.notAfter, new Date(node.validTo));
    assert.equal(info.fingerprint, node.fingerprint256.replace(/:/g, "").toLowerCase());
    assert.equal(info.fingerprint, sha256Hex(der));
    assert.deepEqual(Buffer.from(info.spki), node.publicKey.export({ type: "spki", format: "der" }));
    assert.equal(info.der, der);
  });

  test("extensions: SANs of the four supported types (others dropped), usages, URLs, key ids", () => {
    const info = parseCertificate(der);
    assert.deepEqual(
      [...info.sans],
      [
        { type: "dns", value: "svc.example.test" },
        { type: "ip", value: "192.0.2.7" },
        { type: "email", value: "ops@example.test" },
        { type: "uri", value: "https://example.test/x" },
      ],
    );
    assert.equal(info.isCa, false);
    assert.deepEqual([...info.keyUsage], ["digitalSignature", "keyAgreement"]);
    assert.deepEqual([...info.extKeyUsage], ["serverAuth", "clientAuth", "codeSigning", "1.2.3.4.5"]);
    assert.deepEqual([...info.crlUrls], ["http://example.test/a.crl", "http://example.test/b.crl"]);
    assert.deepEqual([...info.ocspUrls], ["http://ocsp.example.test"]);
    assert.match(info.subjectKeyId ?? "", /^[0-9a-f]{40}$/);
  });

  test("subjectDer is the exact DER of the subject Name", () => {
    const info = parseCertificate(der);
    // The subject DER is found verbatim inside the certificate (twice, since it is self-signed).
    const hay = Buffer.from(der).toString("hex");
    const needle = Buffer.from(info.subjectDer).toString("hex");
    assert.equal(hay.split(needle).length - 1, 2);
  });

  test("list fields are plain string arrays, not the ASN.1 classes they were mapped from", () => {
    const info = parseCertificate(der);
    for (const field of ["sans", "keyUsage", "extKeyUsage", "crlUrls", "ocspUrls"] as const) {
      assert.equal(
        Object.getPrototypeOf(info[field]),
        Array.prototype,
        `${field} is a ${info[field].constructor.name}`,
      );
    }
  });
});

describe("parseCertificate edge cases", () => {
  test("a certificate without extensions has empty lists and no key ids", async () => {
    const key = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    const signer = keyObjectSigner(key);
    const name = buildName({ commonName: "bare" });
    const der = await buildCertificate(
      {
        serial: randomSerial(),
        issuer: name,
        subject: name,
        notBefore: new Date("2030-01-01T00:00:00Z"),
        notAfter: new Date("2030-02-01T00:00:00Z"),
        spki: signer.spki,
        extensions: [],
      },
      signer,
    );
    const info = parseCertificate(der);
    assert.deepEqual(
      { sans: info.sans, ku: info.keyUsage, eku: info.extKeyUsage, crl: info.crlUrls, ocsp: info.ocspUrls },
      { sans: [], ku: [], eku: [], crl: [], ocsp: [] },
    );
    assert.equal(info.isCa, false);
    assert.equal(info.pathLen, undefined);
    assert.equal(info.subjectKeyId, undefined);
    assert.equal(info.authorityKeyId, undefined);
  });

  test("a key outside policy is described, not thrown", async () => {
    const caKey = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    const weak = generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey;
    const name = buildName({ commonName: "old" });
    const der = await buildCertificate(
      {
        serial: randomSerial(),
        issuer: name,
        subject: name,
        notBefore: new Date("2030-01-01T00:00:00Z"),
        notAfter: new Date("2030-02-01T00:00:00Z"),
        spki: spkiOf(weak),
        extensions: [ext.basicConstraints(false)],
      },
      keyObjectSigner(caKey),
    );
    assert.match(parseCertificate(der).keyType, /^unsupported \(RSA key of 1024 bits/);
  });

  test("garbage → E_BAD_INPUT", () => {
    assert.throws(
      () => parseCertificate(new Uint8Array([0x30, 0x03, 1, 2, 3])),
      (e) => isMtlsError(e, "E_BAD_INPUT"),
    );
    assert.throws(
      () => parseCertificates("hello"),
      (e) => isMtlsError(e, "E_BAD_INPUT"),
    );
    assert.throws(
      () => parseCertificates("-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n"),
      (e) => isMtlsError(e, "E_BAD_INPUT"),
    );
  });
});

describe("parseCertificates / certToPem", () => {
  test("a bundle yields every certificate in order; other blocks are skipped", () => {
    const a = opensslCert();
    const b = opensslCert();
    const key = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({
      type: "pkcs8",
      format: "pem",
    });
    const bundle = `${certToPem(a)}${key}${certToPem(b)}`;
    const infos = parseCertificates(bundle);
    assert.deepEqual(
      infos.map((i) => i.fingerprint),
      [sha256Hex(a), sha256Hex(b)],
    );
    assert.equal(parseCertificates(Buffer.from(bundle)).length, 2);
    assert.equal(parseCertificates(a)[0]?.fingerprint, sha256Hex(a)); // DER too
  });

  test("certToPem writes a CERTIFICATE block openssl reads", () => {
    const der = opensslCert();
    const pem = certToPem(der);
    assert.match(pem, /^-----BEGIN CERTIFICATE-----\n/);
    const out = execFileSync("openssl", ["x509", "-outform", "DER"], { input: pem });
    assert.deepEqual(new Uint8Array(out), der);
  });
});
