import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { isMtlsError } from "../errors.js";
import { buildCertificate, randomSerial } from "./certificate.js";
import { parseCertificate } from "./certinfo.js";
import { buildCrl, type CrlEntry, crlToPem, parseCrls } from "./crl.js";
import { crlSignedBy, indexCrl, indexCrls } from "./crl-index.js";
import {
  derBitString,
  derExplicit,
  derOctetString,
  derSequence,
  derSmallInteger,
  derTime,
  derTlv,
} from "./der.js";
import * as ext from "./extensions.js";
import { generateKeyPair } from "./keys.js";
import { buildName } from "./names.js";
import { keyObjectSigner, type Signer } from "./signer.js";

async function makeCa(cn: string) {
  const signer = keyObjectSigner(generateKeyPair("ec-p256").privateKey);
  const name = buildName({ organization: "Test", commonName: cn });
  const now = Date.now();
  const der = await buildCertificate(
    {
      serial: randomSerial(),
      issuer: name,
      subject: name,
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 86_400_000),
      spki: signer.spki,
      extensions: [
        ext.basicConstraints(true),
        ext.keyUsage(ext.KEY_USAGE.keyCertSign | ext.KEY_USAGE.cRLSign),
      ],
    },
    signer,
  );
  return { cert: parseCertificate(der), signer };
}

const crlOf = (
  ca: { cert: { subjectDer: Uint8Array; spki: Uint8Array } },
  signer: Signer,
  entries: CrlEntry[],
  n = 7,
) =>
  buildCrl(
    {
      issuer: ca.cert.subjectDer,
      issuerSpki: ca.cert.spki,
      thisUpdate: new Date("2030-01-01T00:00:00Z"),
      nextUpdate: new Date("2030-01-08T00:00:00Z"),
      crlNumber: n,
      entries,
    },
    signer,
  );

describe("CRL index", () => {
  test("reads what parseCrls reads: issuer, times, number, entries with reasons", async () => {
    const ca = await makeCa("Index CA");
    const entries: CrlEntry[] = [
      { serial: "00ff01", revokedAt: new Date("2029-12-01T10:00:00Z"), reason: "keyCompromise" },
      { serial: randomSerial(), revokedAt: new Date("2029-12-02T10:00:00Z"), reason: "unspecified" },
      { serial: randomSerial(), revokedAt: new Date("2051-01-01T00:00:00Z"), reason: "certificateHold" },
    ];
    const der = await crlOf(ca, ca.signer, entries, 300);
    const idx = indexCrl(der);
    const ref = parseCrls(der)[0];
    assert.equal(idx.issuer, ca.cert.subject);
    assert.equal(idx.issuer, ref?.issuer);
    assert.equal(idx.thisUpdate.toISOString(), "2030-01-01T00:00:00.000Z");
    assert.equal(idx.nextUpdate?.toISOString(), "2030-01-08T00:00:00.000Z");
    assert.equal(idx.crlNumber, 300n);
    assert.equal(idx.entries.size, 3);
    assert.deepEqual(idx.entries.get("ff01"), {
      revokedAt: new Date("2029-12-01T10:00:00Z"),
      reason: "keyCompromise",
    });
    for (const e of entries.slice(1)) {
      const got = idx.entries.get(e.serial.replace(/^0+/, ""));
      assert.equal(got?.reason, e.reason);
      assert.equal(got?.revokedAt.getTime(), e.revokedAt.getTime()); // GeneralizedTime from 2050 on
    }
    assert.equal(indexCrls(crlToPem(der) + crlToPem(der)).length, 2);
  });

  test("signature: by the issuer only (another key under the same name does not count)", async () => {
    const ca = await makeCa("Sig CA");
    const twin = await makeCa("Sig CA");
    const other = await makeCa("Other CA");
    const der = await crlOf(ca, ca.signer, []);
    assert.ok(crlSignedBy(indexCrl(der), ca.cert));
    assert.ok(!crlSignedBy(indexCrl(der), twin.cert));
    assert.ok(!crlSignedBy(indexCrl(der), other.cert));
    const forged = await crlOf(ca, twin.signer, []);
    assert.ok(!crlSignedBy(indexCrl(forged), ca.cert));
  });

  test("large CRLs (beyond asn1js's 10,000-node limit) are indexed", async () => {
    const ca = await makeCa("Big CA");
    const entries: CrlEntry[] = Array.from({ length: 5_000 }, (_, i) => ({
      serial: randomSerial(),
      revokedAt: new Date(1_900_000_000_000 + i * 1000),
      reason: i % 2 ? "superseded" : "keyCompromise",
    }));
    const der = await crlOf(ca, ca.signer, entries);
    // parseCrls is built on this index, so it reads large CRLs too.
    assert.equal(parseCrls(der)[0]?.entries.length, 5_000);
    const t0 = performance.now();
    const idx = indexCrl(der);
    assert.ok(performance.now() - t0 < 1_000);
    assert.equal(idx.entries.size, 5_000);
    assert.equal(idx.entries.get((entries[4_999] as CrlEntry).serial)?.reason, "superseded");
    assert.ok(crlSignedBy(idx, ca.cert));
  });

  test("garbage, truncation, delta CRLs and unknown critical extensions are E_BAD_INPUT", async () => {
    const ca = await makeCa("Bad CA");
    const der = await crlOf(ca, ca.signer, [
      { serial: "01", revokedAt: new Date(), reason: "keyCompromise" },
    ]);
    const isBad = (err: unknown) => isMtlsError(err, "E_BAD_INPUT");
    assert.throws(() => indexCrl(der.subarray(0, der.length - 3)), isBad);
    assert.throws(() => indexCrl(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00])), isBad);
    assert.throws(() => indexCrls("hello"), isBad);
    assert.throws(() => indexCrl(new Uint8Array([...der, 0])), isBad);

    // A TBSCertList with one CRL extension, signed for real, so only the extension is at fault.
    const withExtension = async (oid: number[], critical: boolean) => {
      const extension = derSequence(
        derTlv(0x06, new Uint8Array(oid)),
        ...(critical ? [derTlv(0x01, new Uint8Array([0xff]))] : []),
        derOctetString(derSmallInteger(1)),
      );
      const tbs = derSequence(
        derSmallInteger(1),
        ca.signer.algorithmDer,
        ca.cert.subjectDer,
        derTime(new Date()),
        derExplicit(0, derSequence(extension)),
      );
      return derSequence(tbs, ca.signer.algorithmDer, derBitString(await ca.signer.sign(tbs)));
    };
    const delta = await withExtension([0x55, 0x1d, 0x1b], true); // deltaCRLIndicator
    assert.throws(() => indexCrl(delta), /delta CRLs are not supported/);
    const unknownCritical = await withExtension([0x2a, 0x03, 0x04], true);
    assert.throws(() => indexCrl(unknownCritical), /unsupported critical CRL extension 1\.2\.3\.4/);
    const unknownPlain = await withExtension([0x2a, 0x03, 0x04], false);
    const ok = indexCrl(unknownPlain);
    assert.equal(ok.nextUpdate, null);
    assert.ok(crlSignedBy(ok, ca.cert));
  });
});
