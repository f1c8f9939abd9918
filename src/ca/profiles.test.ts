import "reflect-metadata";
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { describe, test } from "node:test";
import { AuthorityInfoAccessExtension, X509Certificate } from "@peculiar/x509";
import { isMtlsError } from "../errors.js";
import { buildCertificate, randomSerial } from "../pki/certificate.js";
import { type CertInfo, parseCertificate } from "../pki/certinfo.js";
import { keyIdentifier } from "../pki/extensions.js";
import type { KeyType } from "../pki/keys.js";
import { buildName, type San } from "../pki/names.js";
import { keyObjectSigner } from "../pki/signer.js";
import {
  caUrls,
  DEFAULT_TTL_MS,
  LEAF_PROFILES,
  type LeafExtensionInput,
  type LeafProfile,
  leafExtensions,
  parseProfile,
  validateLeafName,
  warningsFor,
} from "./profiles.js";

const issuer = keyObjectSigner(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey);
const ecSpki = keyObjectSigner(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey).spki;
const rsaSpki = keyObjectSigner(generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey).spki;
const DNS: San[] = [{ type: "dns", value: "web.acme.test" }];

const input = (over: Partial<LeafExtensionInput> = {}): LeafExtensionInput => ({
  profile: "server",
  spki: ecSpki,
  keyType: "ec-p256",
  issuerSpki: issuer.spki,
  sans: DNS,
  ...over,
});

/** The extensions wrapped in a real certificate and parsed back, to read them as a relying party would. */
async function asCert(over: Partial<LeafExtensionInput> = {}): Promise<{ info: CertInfo; der: Uint8Array }> {
  const i = input(over);
  const der = await buildCertificate(
    {
      serial: randomSerial(),
      issuer: buildName({ commonName: "CA" }),
      subject: buildName({ commonName: "leaf" }),
      notBefore: new Date("2030-01-01T00:00:00Z"),
      notAfter: new Date("2030-02-01T00:00:00Z"),
      spki: i.spki,
      extensions: leafExtensions(i),
    },
    issuer,
  );
  return { info: parseCertificate(der), der };
}

describe("leafExtensions", () => {
  test("server without a DNS or IP SAN → E_PROFILE", () => {
    assert.throws(
      () => leafExtensions(input({ sans: [] })),
      (e) => isMtlsError(e, "E_PROFILE"),
    );
    assert.throws(
      () =>
        leafExtensions(
          input({
            sans: [
              { type: "email", value: "a@acme.test" },
              { type: "uri", value: "spiffe://acme.test/x" },
            ],
          }),
        ),
      (e) => isMtlsError(e, "E_PROFILE"),
    );
  });

  test("server with only an IP SAN is fine", async () => {
    const { info } = await asCert({ sans: [{ type: "ip", value: "10.0.0.1" }] });
    assert.deepEqual([...info.sans], [{ type: "ip", value: "10.0.0.1" }]);
  });

  test("client and peer need no SAN; then there is no SAN extension", async () => {
    const { info } = await asCert({ profile: "client", sans: [] });
    assert.deepEqual([...info.sans], []);
    const peer = await asCert({ profile: "peer", sans: [] });
    assert.deepEqual([...peer.info.sans], []);
  });

  test("two SPIFFE URIs → E_BAD_SAN; one SPIFFE URI plus other URIs is fine", async () => {
    const two: San[] = [
      { type: "uri", value: "spiffe://acme.test/a" },
      { type: "uri", value: "spiffe://acme.test/b" },
    ];
    for (const profile of LEAF_PROFILES) {
      assert.throws(
        () => leafExtensions(input({ profile, sans: [...DNS, ...two] })),
        (e) => isMtlsError(e, "E_BAD_SAN"),
      );
    }
    const { info } = await asCert({
      profile: "client",
      sans: [
        { type: "uri", value: "spiffe://acme.test/a" },
        { type: "uri", value: "https://acme.test/users/a" },
      ],
    });
    assert.equal(info.sans.length, 2);
  });

  const usageCases: [LeafProfile, KeyType, string[]][] = [
    ["server", "rsa-2048", ["digitalSignature", "keyEncipherment"]],
    ["peer", "rsa-2048", ["digitalSignature", "keyEncipherment"]],
    ["client", "rsa-2048", ["digitalSignature"]],
    ["server", "ec-p256", ["digitalSignature"]],
    ["peer", "ec-p256", ["digitalSignature"]],
    ["client", "ec-p256", ["digitalSignature"]],
  ];
  for (const [profile, keyType, usage] of usageCases) {
    test(`${profile} with ${keyType}: keyUsage ${usage.join("+")}`, async () => {
      const spki = keyType.startsWith("rsa") ? rsaSpki : ecSpki;
      const { info } = await asCert({ profile, keyType, spki });
      assert.deepEqual([...info.keyUsage], usage);
    });
  }

  test("EKUs: server → serverAuth, client → clientAuth, peer → both; never anyExtendedKeyUsage", async () => {
    const eku = async (profile: LeafProfile) => [...(await asCert({ profile })).info.extKeyUsage];
    assert.deepEqual(await eku("server"), ["serverAuth"]);
    assert.deepEqual(await eku("client"), ["clientAuth"]);
    assert.deepEqual(await eku("peer"), ["serverAuth", "clientAuth"]);
  });

  test("CA:FALSE, SKI of the leaf key, AKI of the issuer key; no CDP/AIA without a public URL", async () => {
    const { info } = await asCert();
    assert.equal(info.isCa, false);
    assert.equal(info.subjectKeyId, keyIdentifier(ecSpki));
    assert.equal(info.authorityKeyId, keyIdentifier(issuer.spki));
    assert.deepEqual([...info.crlUrls], []);
    assert.deepEqual([...info.ocspUrls], []);
  });

  test("publicUrl adds CRL distribution point and AIA (OCSP + caIssuers)", async () => {
    const { info, der } = await asCert({ publicUrl: "https://ca.acme.test:8443/" });
    assert.deepEqual([...info.crlUrls], ["https://ca.acme.test:8443/crl"]);
    assert.deepEqual([...info.ocspUrls], ["https://ca.acme.test:8443/ocsp"]);
    const aia = new X509Certificate(der as BufferSource).getExtension(AuthorityInfoAccessExtension);
    assert.deepEqual(
      aia?.caIssuers.map((g) => g.value),
      ["https://ca.acme.test:8443/ca/intermediate.crt"],
    );
  });
});

describe("profile helpers", () => {
  test("parseProfile", () => {
    for (const p of LEAF_PROFILES) assert.equal(parseProfile(p), p);
    for (const bad of ["", "Server", "ca", "ocsp"]) {
      assert.throws(
        () => parseProfile(bad),
        (e) => isMtlsError(e, "E_PROFILE"),
      );
    }
  });

  test("caUrls strips trailing slashes and keeps a path prefix", () => {
    assert.deepEqual(caUrls("https://ca.acme.test/pki//"), {
      crl: "https://ca.acme.test/pki/crl",
      rootCrl: "https://ca.acme.test/pki/crl/root",
      ocsp: "https://ca.acme.test/pki/ocsp",
      intermediateCert: "https://ca.acme.test/pki/ca/intermediate.crt",
      rootCert: "https://ca.acme.test/pki/ca/root.crt",
    });
  });

  test("default lifetimes: clients shorter than servers", () => {
    assert.equal(DEFAULT_TTL_MS.client, 30 * 86_400_000);
    assert.equal(DEFAULT_TTL_MS.server, 90 * 86_400_000);
    assert.equal(DEFAULT_TTL_MS.peer, 90 * 86_400_000);
  });

  test("warningsFor: only Ed25519 warns", () => {
    assert.equal(warningsFor("server", "ed25519").length, 1);
    assert.match(warningsFor("client", "ed25519")[0] ?? "", /Chromium/);
    assert.deepEqual(warningsFor("server", "ec-p256"), []);
    assert.deepEqual(warningsFor("client", "rsa-2048"), []);
  });
});

describe("validateLeafName", () => {
  for (const ok of [
    "alice",
    "web-1",
    "web.acme.test",
    "alice@acme.test",
    "a_b",
    "A",
    "0day",
    "x".repeat(64),
  ]) {
    test(`accepts ${JSON.stringify(ok.length > 20 ? `${ok.slice(0, 8)}…(${ok.length})` : ok)}`, () =>
      assert.equal(validateLeafName(ok), ok));
  }
  for (const bad of [
    "",
    ".hidden",
    "-x",
    "_x",
    "@x",
    "../etc",
    "a/b",
    "a\\b",
    "a b",
    "a\nb",
    "x".repeat(65),
    "ünï",
    "a:b",
  ]) {
    test(`rejects ${JSON.stringify(bad.length > 20 ? `${bad.slice(0, 8)}…(${bad.length})` : bad)}`, () =>
      assert.throws(
        () => validateLeafName(bad),
        (e) => isMtlsError(e, "E_USAGE"),
      ));
  }
});
