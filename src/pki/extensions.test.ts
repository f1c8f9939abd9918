import "reflect-metadata";
import assert from "node:assert/strict";
import { createHash, createPublicKey, generateKeyPairSync } from "node:crypto";
import { describe, test } from "node:test";
import {
  AuthorityInfoAccessExtension,
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  CRLDistributionPointsExtension,
  ExtendedKeyUsageExtension,
  ExtensionFactory,
  KeyUsagesExtension,
  SubjectAlternativeNameExtension,
  SubjectKeyIdentifierExtension,
} from "@peculiar/x509";
import * as ext from "./extensions.js";
import { spkiOf } from "./keys.js";

const hex = (u: Uint8Array) => Buffer.from(u).toString("hex");
const parse = <T>(der: Uint8Array, cls: abstract new (...args: never[]) => T): T => {
  const e = ExtensionFactory.create(der as BufferSource);
  assert.ok(e instanceof cls, `expected ${cls.name}, got ${e.constructor.name}`);
  return e as T;
};

describe("keyIdentifier", () => {
  test("EC: SHA-1 of the uncompressed point", () => {
    const { publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const jwk = publicKey.export({ format: "jwk" });
    const point = Buffer.concat([
      Buffer.from([4]),
      Buffer.from(jwk.x as string, "base64url"),
      Buffer.from(jwk.y as string, "base64url"),
    ]);
    assert.equal(ext.keyIdentifier(spkiOf(publicKey)), createHash("sha1").update(point).digest("hex"));
  });

  test("RSA: SHA-1 of the RSAPublicKey DER", () => {
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const pkcs1 = createPublicKey(privateKey).export({ type: "pkcs1", format: "der" });
    assert.equal(ext.keyIdentifier(spkiOf(privateKey)), createHash("sha1").update(pkcs1).digest("hex"));
  });

  test("Ed25519: SHA-1 of the 32 key bytes", () => {
    const { publicKey } = generateKeyPairSync("ed25519");
    const raw = Buffer.from(publicKey.export({ format: "jwk" }).x as string, "base64url");
    assert.equal(raw.length, 32);
    assert.equal(ext.keyIdentifier(spkiOf(publicKey)), createHash("sha1").update(raw).digest("hex"));
  });
});

describe("extension encodings", () => {
  test("basicConstraints: critical; pathLen only when given; CA:FALSE is an empty SEQUENCE", () => {
    assert.equal(hex(ext.basicConstraints(true)), "300f0603551d130101ff040530030101ff");
    assert.equal(hex(ext.basicConstraints(true, 0)), "30120603551d130101ff040830060101ff020100");
    assert.equal(hex(ext.basicConstraints(false)), "300c0603551d130101ff04023000");
    const bc = parse(ext.basicConstraints(true, 2), BasicConstraintsExtension);
    assert.equal(bc.critical, true);
    assert.equal(bc.ca, true);
    assert.equal(bc.pathLength, 2);
  });

  test("keyUsage is critical with minimal BIT STRING encoding", () => {
    assert.equal(hex(ext.keyUsage(ext.KEY_USAGE.digitalSignature)), "300e0603551d0f0101ff040403020780");
    const ku = parse(ext.keyUsage(ext.KEY_USAGE.keyCertSign | ext.KEY_USAGE.cRLSign), KeyUsagesExtension);
    assert.equal(ku.critical, true);
    assert.equal(ku.usages, ext.KEY_USAGE.keyCertSign | ext.KEY_USAGE.cRLSign);
  });

  test("extendedKeyUsage is not critical and keeps the order", () => {
    const eku = parse(
      ext.extendedKeyUsage([ext.EKU.clientAuth, ext.EKU.serverAuth]),
      ExtendedKeyUsageExtension,
    );
    assert.equal(eku.critical, false);
    assert.deepEqual([...eku.usages], ["1.3.6.1.5.5.7.3.2", "1.3.6.1.5.5.7.3.1"]);
  });

  test("SKI and AKI carry the key identifier", () => {
    const spki = spkiOf(generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey);
    const id = ext.keyIdentifier(spki);
    const ski = parse(ext.subjectKeyIdentifier(spki), SubjectKeyIdentifierExtension);
    assert.equal(ski.keyId, id);
    assert.equal(ski.critical, false);
    const aki = parse(ext.authorityKeyIdentifier(spki), AuthorityKeyIdentifierExtension);
    assert.equal(aki.keyId, id);
    assert.equal(aki.critical, false);
    assert.equal(aki.certId, undefined); // keyIdentifier only, no issuer+serial
  });

  test("subjectAltName: each type as its GeneralName; critical only for an empty subject", () => {
    const sans = [
      { type: "dns" as const, value: "web.acme.test" },
      { type: "ip" as const, value: "10.1.2.3" },
      { type: "ip" as const, value: "2001:db8::1" },
      { type: "email" as const, value: "a@acme.test" },
      { type: "uri" as const, value: "spiffe://acme.test/web" },
    ];
    const san = parse(ext.subjectAltName(sans), SubjectAlternativeNameExtension);
    assert.equal(san.critical, false);
    assert.deepEqual(san.names.toJSON(), [
      { type: "dns", value: "web.acme.test" },
      { type: "ip", value: "10.1.2.3" },
      { type: "ip", value: "2001:db8::1" },
      { type: "email", value: "a@acme.test" },
      { type: "url", value: "spiffe://acme.test/web" },
    ]);
    const der = hex(ext.subjectAltName(sans));
    assert.ok(der.includes(`8704${"0a010203"}`), "IPv4 as a 4-byte iPAddress");
    assert.ok(der.includes("871020010db8000000000000000000000001"), "IPv6 as a 16-byte iPAddress");
    assert.equal(parse(ext.subjectAltName(sans, true), SubjectAlternativeNameExtension).critical, true);
  });

  test("CRL distribution points and AIA (OCSP + caIssuers)", () => {
    const cdp = parse(ext.crlDistributionPoints(["http://ca.acme.test/crl"]), CRLDistributionPointsExtension);
    assert.deepEqual(
      [...cdp.distributionPoints].map((dp) => dp.distributionPoint?.fullName?.[0]?.uniformResourceIdentifier),
      ["http://ca.acme.test/crl"],
    );
    const aia = parse(
      ext.authorityInfoAccess(["http://ca.acme.test/ocsp"], ["http://ca.acme.test/ca/intermediate.crt"]),
      AuthorityInfoAccessExtension,
    );
    assert.equal(aia.critical, false);
    assert.deepEqual(
      aia.ocsp.map((g) => g.value),
      ["http://ca.acme.test/ocsp"],
    );
    assert.deepEqual(
      aia.caIssuers.map((g) => g.value),
      ["http://ca.acme.test/ca/intermediate.crt"],
    );
  });

  test("id-pkix-ocsp-nocheck is a non-critical NULL", () => {
    assert.equal(hex(ext.ocspNoCheck()), "300f06092b060105050730010504020500");
  });
});
