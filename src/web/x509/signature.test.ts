import assert from "node:assert/strict";
import { constants, generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import { test } from "node:test";
import {
  ecdsaDerToRaw,
  ecdsaRawToDer,
  isCertificateVerifyScheme,
  SIGNATURE_SCHEMES,
  verifySchemeSignature,
} from "./index.js";

const data = new TextEncoder().encode("TLS 1.3, server CertificateVerify\0 transcript hash stand-in");
const spkiOf = (key: KeyObject) => new Uint8Array(key.export({ type: "spki", format: "der" }));

const p256 = generateKeyPairSync("ec", { namedCurve: "P-256" });
const p384 = generateKeyPairSync("ec", { namedCurve: "P-384" });
const p521 = generateKeyPairSync("ec", { namedCurve: "P-521" });
const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
const rsaPss = generateKeyPairSync("rsa-pss", { modulusLength: 2048 });
// (the @types/node options type for rsa-pss restrictions is off: saltLength is a number in Node)
const pss384Options = {
  modulusLength: 2048,
  hashAlgorithm: "sha384",
  mgf1HashAlgorithm: "sha384",
  saltLength: 48,
};
const rsaPss384 = generateKeyPairSync("rsa-pss", pss384Options as { modulusLength: number });
const ed = generateKeyPairSync("ed25519");

/** id-RSASSA-PSS SPKI with params sha384 / mgf1(sha384) / salt 48 around an rsaEncryption SPKI's key bits. */
function pssRestrictedSpki(rsaSpki: Uint8Array): Uint8Array {
  const tlv = (tag: number, ...parts: number[][]) => {
    const body = parts.flat();
    const len = body.length < 128 ? [body.length] : [0x82, body.length >> 8, body.length & 0xff];
    return [tag, ...len, ...body];
  };
  const sha384 = tlv(0x30, tlv(0x06, [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02]), [0x05, 0x00]);
  const mgf1 = tlv(0x30, tlv(0x06, [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08]), sha384);
  const params = tlv(0x30, tlv(0xa0, sha384), tlv(0xa1, mgf1), tlv(0xa2, [0x02, 0x01, 48]));
  const alg = tlv(0x30, tlv(0x06, [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a]), params);
  // rsaEncryption SPKI: 30 82 LL LL | 30 0d (alg, 15 bytes) | 03 82 ... (the key BIT STRING)
  const keyBits = [...rsaSpki.subarray(4 + 15)];
  return new Uint8Array(tlv(0x30, alg, keyBits));
}

const ecdsaSig = (key: KeyObject, hash: string) =>
  new Uint8Array(sign(hash, data, { key, dsaEncoding: "der" }));
const pssSig = (key: KeyObject, hash: string, saltLength: number) =>
  new Uint8Array(sign(hash, data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength }));

const cases: Array<{ scheme: number; spki: Uint8Array; sig: Uint8Array }> = [
  { scheme: 0x0403, spki: spkiOf(p256.publicKey), sig: ecdsaSig(p256.privateKey, "sha256") },
  { scheme: 0x0503, spki: spkiOf(p384.publicKey), sig: ecdsaSig(p384.privateKey, "sha384") },
  { scheme: 0x0603, spki: spkiOf(p521.publicKey), sig: ecdsaSig(p521.privateKey, "sha512") },
  { scheme: 0x0804, spki: spkiOf(rsa.publicKey), sig: pssSig(rsa.privateKey, "sha256", 32) },
  { scheme: 0x0805, spki: spkiOf(rsa.publicKey), sig: pssSig(rsa.privateKey, "sha384", 48) },
  { scheme: 0x0806, spki: spkiOf(rsa.publicKey), sig: pssSig(rsa.privateKey, "sha512", 64) },
  { scheme: 0x0807, spki: spkiOf(ed.publicKey), sig: new Uint8Array(sign(null, data, ed.privateKey)) },
  { scheme: 0x0809, spki: spkiOf(rsaPss.publicKey), sig: pssSig(rsaPss.privateKey, "sha256", 32) },
  { scheme: 0x080a, spki: spkiOf(rsaPss.publicKey), sig: pssSig(rsaPss.privateKey, "sha384", 48) },
  { scheme: 0x080b, spki: spkiOf(rsaPss.publicKey), sig: pssSig(rsaPss.privateKey, "sha512", 64) },
  { scheme: 0x080a, spki: spkiOf(rsaPss384.publicKey), sig: pssSig(rsaPss384.privateKey, "sha384", 48) },
];

test("every supported scheme verifies a node:crypto signature, and refuses it after one flipped bit or other data", async () => {
  for (const { scheme, spki, sig } of cases) {
    const name = `0x${scheme.toString(16)}`;
    assert.equal(isCertificateVerifyScheme(scheme), true, name);
    assert.ok(SIGNATURE_SCHEMES.includes(scheme), name);
    assert.equal(await verifySchemeSignature(spki, scheme, data, sig), true, name);
    const flipped = sig.slice();
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] as number) ^ 1;
    assert.equal(await verifySchemeSignature(spki, scheme, data, flipped), false, `${name} flipped`);
    const other = data.slice();
    other[0] = (other[0] as number) ^ 0x80;
    assert.equal(await verifySchemeSignature(spki, scheme, other, sig), false, `${name} other data`);
  }
});

test("the scheme must fit the key: curve, rsae vs pss key, hash-restricted PSS key, Ed25519", async () => {
  const p256Spki = spkiOf(p256.publicKey);
  const p384Spki = spkiOf(p384.publicKey);
  // a P-256 key under the P-384 scheme (signature made with SHA-384 so only the curve is wrong)
  assert.equal(
    await verifySchemeSignature(p256Spki, 0x0503, data, ecdsaSig(p256.privateKey, "sha384")),
    false,
  );
  assert.equal(
    await verifySchemeSignature(p384Spki, 0x0403, data, ecdsaSig(p384.privateKey, "sha256")),
    false,
  );
  // rsae scheme with an RSASSA-PSS key and the reverse
  assert.equal(
    await verifySchemeSignature(
      spkiOf(rsaPss.publicKey),
      0x0804,
      data,
      pssSig(rsaPss.privateKey, "sha256", 32),
    ),
    false,
  );
  assert.equal(
    await verifySchemeSignature(spkiOf(rsa.publicKey), 0x0809, data, pssSig(rsa.privateKey, "sha256", 32)),
    false,
  );
  // an RSASSA-PSS key restricted to SHA-384 (hand-built around the plain RSA key) under the SHA-256 scheme
  const restricted = pssRestrictedSpki(spkiOf(rsa.publicKey));
  assert.equal(
    await verifySchemeSignature(restricted, 0x080a, data, pssSig(rsa.privateKey, "sha384", 48)),
    true,
  );
  assert.equal(
    await verifySchemeSignature(restricted, 0x0809, data, pssSig(rsa.privateKey, "sha256", 32)),
    false,
  );
  // salt length other than the hash length
  assert.equal(
    await verifySchemeSignature(spkiOf(rsa.publicKey), 0x0804, data, pssSig(rsa.privateKey, "sha256", 20)),
    false,
  );
  // ECDSA scheme with an RSA key, Ed25519 scheme with an EC key
  assert.equal(
    await verifySchemeSignature(spkiOf(rsa.publicKey), 0x0403, data, ecdsaSig(p256.privateKey, "sha256")),
    false,
  );
  assert.equal(
    await verifySchemeSignature(p256Spki, 0x0807, data, new Uint8Array(sign(null, data, ed.privateKey))),
    false,
  );
});

test("RSA PKCS#1 v1.5, SHA-1 and unknown schemes are refused in CertificateVerify", async () => {
  const spki = spkiOf(rsa.publicKey);
  for (const [scheme, hash] of [
    [0x0401, "sha256"],
    [0x0501, "sha384"],
    [0x0601, "sha512"],
    [0x0201, "sha1"],
  ] as const) {
    const sig = new Uint8Array(
      sign(hash, data, { key: rsa.privateKey, padding: constants.RSA_PKCS1_PADDING }),
    );
    assert.equal(isCertificateVerifyScheme(scheme), false);
    assert.equal(await verifySchemeSignature(spki, scheme, data, sig), false, `0x${scheme.toString(16)}`);
  }
  assert.equal(
    await verifySchemeSignature(spkiOf(p256.publicKey), 0x0203, data, ecdsaSig(p256.privateKey, "sha1")),
    false,
  );
  assert.equal(
    await verifySchemeSignature(spkiOf(p256.publicKey), 0xfe00, data, ecdsaSig(p256.privateKey, "sha256")),
    false,
  );
  await assert.rejects(verifySchemeSignature(new Uint8Array([0x30, 0x00]), 0x0403, data, new Uint8Array(8)), {
    code: "E_TLS_CERT",
    reason: "malformed",
  });
});

test("ECDSA DER signatures: truncated, trailing bytes, negative or padded integers are refused", async () => {
  const spki = spkiOf(p256.publicKey);
  const sig = ecdsaSig(p256.privateKey, "sha256");
  assert.equal(await verifySchemeSignature(spki, 0x0403, data, sig.subarray(0, sig.length - 1)), false);
  assert.equal(await verifySchemeSignature(spki, 0x0403, data, new Uint8Array([...sig, 0])), false);
  const raw = ecdsaDerToRaw(sig, 32);
  assert.equal(raw.length, 64);
  assert.deepEqual(ecdsaRawToDer(raw), sig, "round trip is byte-exact");
  const seq = (...ints: number[][]) => {
    const body = ints.flatMap((i) => [0x02, i.length, ...i]);
    return new Uint8Array([0x30, body.length, ...body]);
  };
  const one = [1];
  assert.deepEqual(ecdsaDerToRaw(seq(one, [0x00, 0x80]), 2), new Uint8Array([0, 1, 0, 0x80]));
  const bad: Array<[string, Uint8Array]> = [
    ["negative r", seq([0x80], one)],
    ["non-minimal r", seq([0x00, 0x01], one)],
    ["zero s", seq(one, [0])],
    ["empty r", seq([], one)],
    ["three integers", seq(one, one, one)],
    ["one integer", seq(one)],
    ["too large for the size", seq([1, 2, 3], one)],
    [
      "long-form length for a short body",
      new Uint8Array([0x30, 0x81, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]),
    ],
    ["indefinite length", new Uint8Array([0x30, 0x80, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0, 0])],
    ["OCTET STRING, not INTEGER", new Uint8Array([0x30, 0x06, 0x04, 0x01, 0x01, 0x02, 0x01, 0x01])],
    ["outer length past the end", new Uint8Array([0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01])],
  ];
  for (const [what, der] of bad) {
    assert.throws(() => ecdsaDerToRaw(der, 2), { code: "E_TLS_CERT", reason: "malformed" }, what);
  }
  // P-521: 66-byte halves; r||s from WebCrypto round-trips through DER
  const key = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-521" }, true, [
    "sign",
    "verify",
  ]);
  const webSig = new Uint8Array(
    await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-512" }, key.privateKey, data),
  );
  assert.equal(webSig.length, 132);
  const der = ecdsaRawToDer(webSig);
  assert.deepEqual(ecdsaDerToRaw(der, 66), webSig);
  const webSpki = new Uint8Array(await crypto.subtle.exportKey("spki", key.publicKey));
  assert.equal(await verifySchemeSignature(webSpki, 0x0603, data, der), true);
  assert.throws(() => ecdsaRawToDer(new Uint8Array(63)), { reason: "malformed" });
});
