import "reflect-metadata";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { createSecureContext } from "node:tls";
import { X509Crl } from "@peculiar/x509";
import { isMtlsError } from "../errors.js";
import { buildCertificate, randomSerial } from "./certificate.js";
import { type CertInfo, certToPem, parseCertificate } from "./certinfo.js";
import {
  buildCrl,
  type CrlEntry,
  type CrlTemplate,
  crlToPem,
  parseCrls,
  parseReason,
  REVOCATION_REASONS,
} from "./crl.js";
import * as ext from "./extensions.js";
import { buildName } from "./names.js";
import { keyObjectSigner, type Signer } from "./signer.js";

const dir = mkdtempSync(join(tmpdir(), "mtls-crl-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Minimal independent DER walker. */
function tlv(der: Uint8Array, offset = 0) {
  let len = der[offset + 1] as number;
  let head = 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (der[offset + 2 + i] as number);
    head += n;
  }
  return {
    tag: der[offset] as number,
    raw: der.subarray(offset, offset + head + len),
    content: der.subarray(offset + head, offset + head + len),
  };
}
function children(der: Uint8Array) {
  const out: ReturnType<typeof tlv>[] = [];
  for (let off = 0; off < der.length; ) {
    const t = tlv(der, off);
    out.push(t);
    off += t.raw.length;
  }
  return out;
}

function openssl(args: string[]): string {
  return execFileSync("openssl", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

const THIS_UPDATE = new Date("2030-03-01T10:00:00.750Z");
const NEXT_UPDATE = new Date("2030-03-08T10:00:00.250Z");
const second = (d: Date) => new Date(Math.floor(d.getTime() / 1000) * 1000);

let signer: Signer;
let ca: CertInfo;
let caFile: string;
const serials = { compromised: randomSerial(), plain: randomSerial(), superseded: randomSerial() };
const ENTRIES: CrlEntry[] = [
  { serial: serials.compromised, revokedAt: new Date("2030-02-01T00:00:00.900Z"), reason: "keyCompromise" },
  { serial: serials.plain, revokedAt: new Date("2030-02-02T00:00:00Z"), reason: "unspecified" },
  { serial: serials.superseded, revokedAt: new Date("2030-02-03T00:00:00Z"), reason: "superseded" },
];
const template = (over: Partial<CrlTemplate> = {}): CrlTemplate => ({
  issuer: ca.subjectDer,
  issuerSpki: ca.spki,
  thisUpdate: THIS_UPDATE,
  nextUpdate: NEXT_UPDATE,
  crlNumber: 1,
  entries: ENTRIES,
  ...over,
});

before(async () => {
  signer = keyObjectSigner(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey);
  const name = buildName({ organization: "Acme", commonName: "Acme Intermediate CA" });
  const der = await buildCertificate(
    {
      serial: randomSerial(),
      issuer: name,
      subject: name,
      notBefore: new Date("2030-01-01T00:00:00Z"),
      notAfter: new Date("2035-01-01T00:00:00Z"),
      spki: signer.spki,
      extensions: [
        ext.basicConstraints(true, 0),
        ext.keyUsage(ext.KEY_USAGE.keyCertSign | ext.KEY_USAGE.cRLSign),
        ext.subjectKeyIdentifier(signer.spki),
      ],
    },
    signer,
  );
  ca = parseCertificate(der);
  caFile = join(dir, "ca.pem");
  writeFileSync(caFile, certToPem(der));
});

describe("buildCrl → parseCrls", () => {
  test("round trip: issuer, times (whole seconds), number, entries with reasons", async () => {
    const der = await buildCrl(template({ crlNumber: 7 }), signer);
    const [info, more] = parseCrls(der);
    assert.equal(more, undefined);
    assert.ok(info);
    assert.equal(info.issuer, ca.subject);
    assert.deepEqual(info.thisUpdate, second(THIS_UPDATE));
    assert.deepEqual(info.nextUpdate, second(NEXT_UPDATE));
    assert.equal(info.crlNumber, 7);
    assert.deepEqual(
      info.entries,
      ENTRIES.map((e) => ({ ...e, revokedAt: second(e.revokedAt) })),
    );
    assert.deepEqual(info.der, der);
  });

  test("the signature verifies with the issuer's key", async () => {
    const der = await buildCrl(template(), signer);
    const crl = new X509Crl(der as BufferSource);
    const issuer = await import("@peculiar/x509").then((m) => new m.X509Certificate(ca.der as BufferSource));
    assert.ok(await crl.verify({ publicKey: issuer.publicKey }));
  });

  for (const n of [1, 127, 128, 255, 256, 300, 65535, 65536, 70000, 2 ** 31, 2 ** 40]) {
    test(`CRL number ${n} round-trips`, async () => {
      assert.equal(
        parseCrls(await buildCrl(template({ crlNumber: n, entries: [] }), signer))[0]?.crlNumber,
        n,
      );
    });
  }

  test("every named reason round-trips", async () => {
    const entries = Object.keys(REVOCATION_REASONS).map((reason, i) => ({
      serial: `4${String(i).padStart(31, "0")}`,
      revokedAt: second(THIS_UPDATE),
      reason: parseReason(reason),
    }));
    const info = parseCrls(await buildCrl(template({ entries }), signer))[0];
    assert.deepEqual(info?.entries, entries);
  });

  test("an unspecified entry carries NO reasonCode extension; the others carry exactly one", async () => {
    const der = await buildCrl(template(), signer);
    const tbs = children(tlv(der).content)[0];
    assert.ok(tbs);
    // version, signature, issuer, thisUpdate, nextUpdate, revokedCertificates, [0] extensions
    const fields = children(tbs.content);
    assert.equal(Buffer.from(fields[0]?.raw ?? []).toString("hex"), "020101"); // v2
    const revoked = children(fields[5]?.content ?? new Uint8Array());
    assert.equal(revoked.length, 3);
    const entryFields = revoked.map((r) => children(r.content));
    assert.equal(entryFields[0]?.length, 3, "keyCompromise: serial, date, extensions");
    assert.equal(entryFields[1]?.length, 2, "unspecified: serial and date only");
    assert.equal(entryFields[2]?.length, 3);
    // keyCompromise's extension is reasonCode (2.5.29.21) = ENUMERATED 1, not critical
    assert.equal(
      Buffer.from(entryFields[0]?.[2]?.raw ?? []).toString("hex"),
      "300c300a0603551d150403 0a0101".replace(" ", ""),
    );
  });

  test("no entries → no revokedCertificates field (not an empty SEQUENCE)", async () => {
    const der = await buildCrl(template({ entries: [] }), signer);
    const fields = children(children(tlv(der).content)[0]?.content ?? new Uint8Array());
    assert.equal(fields.length, 6);
    assert.equal(fields[5]?.tag, 0xa0);
    assert.deepEqual(parseCrls(der)[0]?.entries, []);
  });

  test("times from 2050 on are GeneralizedTime", async () => {
    const der = await buildCrl(
      template({
        thisUpdate: new Date("2049-12-31T23:59:59Z"),
        nextUpdate: new Date("2050-01-07T00:00:00Z"),
      }),
      signer,
    );
    const fields = children(children(tlv(der).content)[0]?.content ?? new Uint8Array());
    assert.equal(fields[3]?.tag, 0x17);
    assert.equal(fields[4]?.tag, 0x18);
    assert.deepEqual(parseCrls(der)[0]?.nextUpdate, new Date("2050-01-07T00:00:00Z"));
  });

  test("the issuer field is byte for byte the CA's subject", async () => {
    const der = await buildCrl(template(), signer);
    const fields = children(children(tlv(der).content)[0]?.content ?? new Uint8Array());
    assert.deepEqual(fields[2]?.raw, ca.subjectDer);
  });
});

describe("PEM and interoperability", () => {
  test('crlToPem uses the "X509 CRL" label; parseCrls reads it and the "CRL" label too', async () => {
    const der = await buildCrl(template(), signer);
    const pem = crlToPem(der);
    assert.match(pem, /^-----BEGIN X509 CRL-----\n[\s\S]+\n-----END X509 CRL-----\n$/);
    assert.deepEqual(parseCrls(pem)[0]?.der, der);
    assert.deepEqual(parseCrls(pem.replace(/X509 CRL/g, "CRL"))[0]?.der, der);
  });

  test("a bundle of two CRLs parses in order", async () => {
    const a = await buildCrl(template({ crlNumber: 5 }), signer);
    const b = await buildCrl(template({ crlNumber: 6, entries: [] }), signer);
    assert.deepEqual(
      parseCrls(crlToPem(a) + crlToPem(b)).map((c) => c.crlNumber),
      [5, 6],
    );
  });

  test("openssl crl -text accepts it and verifies the signature with the CA", async () => {
    const file = join(dir, "crl.pem");
    writeFileSync(file, crlToPem(await buildCrl(template({ crlNumber: 70000 }), signer)));
    const text = openssl(["crl", "-noout", "-text", "-in", file]);
    assert.match(text, /Version 2 \(0x1\)/);
    assert.match(text, /Signature Algorithm: ecdsa-with-SHA256/);
    assert.match(text, /Issuer: O = Acme, CN = Acme Intermediate CA/);
    assert.match(text, /Last Update: Mar {2}1 10:00:00 2030 GMT/);
    assert.match(text, /Next Update: Mar {2}8 10:00:00 2030 GMT/);
    assert.match(text, /X509v3 CRL Number: \n\s+70000\n/);
    assert.match(
      text,
      new RegExp(
        `Authority Key Identifier: \n\\s+(keyid:)?${ca.subjectKeyId?.toUpperCase().match(/../g)?.join(":")}\n`,
      ),
    );
    assert.match(
      text,
      new RegExp(
        `Serial Number: ${serials.compromised.toUpperCase()}\n.*\n\\s+CRL entry extensions:\n\\s+X509v3 CRL Reason Code: \n\\s+Key Compromise`,
      ),
    );
    assert.match(
      text,
      new RegExp(
        `Serial Number: ${serials.plain.toUpperCase()}\n\\s+Revocation Date: Feb  2 00:00:00 2030 GMT\n\\s+Serial Number`,
      ),
    );
    const verify = spawnSync("openssl", ["crl", "-noout", "-in", file, "-CAfile", caFile], {
      encoding: "utf8",
    });
    assert.equal(verify.status, 0, verify.stderr);
    assert.match(verify.stderr + verify.stdout, /verify OK/);
  });

  test("Node's TLS accepts it as a crl", async () => {
    const pem = crlToPem(await buildCrl(template(), signer));
    assert.doesNotThrow(() => createSecureContext({ ca: certToPem(ca.der), crl: pem }));
  });
});

describe("errors", () => {
  test("parseReason: unknown → E_USAGE listing the choices", () => {
    assert.equal(parseReason("keyCompromise"), "keyCompromise");
    assert.throws(
      () => parseReason("stolen"),
      (e) => isMtlsError(e, "E_USAGE") && /keyCompromise/.test(e.message),
    );
    assert.throws(
      () => parseReason(""),
      (e) => isMtlsError(e, "E_USAGE"),
    );
  });

  test("parseReason: names inherited from Object.prototype are not reasons", () => {
    // `name in REVOCATION_REASONS` also sees "toString", "constructor", "__proto__"...
    for (const name of ["toString", "constructor", "hasOwnProperty", "__proto__", "valueOf"]) {
      assert.throws(
        () => parseReason(name),
        (e) => isMtlsError(e, "E_USAGE"),
        name,
      );
    }
  });

  test("parseCrls: garbage → E_BAD_INPUT", () => {
    assert.throws(
      () => parseCrls(new Uint8Array([0x30, 0x03, 1, 2, 3])),
      (e) => isMtlsError(e, "E_BAD_INPUT"),
    );
    assert.throws(
      () => parseCrls("nope"),
      (e) => isMtlsError(e, "E_BAD_INPUT"),
    );
    assert.throws(
      () => parseCrls(certToPem(ca.der)),
      (e) => isMtlsError(e, "E_BAD_INPUT"),
    );
  });
});
