import assert from "node:assert/strict";
import { createPublicKey, generateKeyPairSync, type KeyObject, randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import { isMtlsError } from "../errors.js";
import {
  generateKeyPair,
  isKeyType,
  KEY_TYPES,
  keyTypeOf,
  parseKeyType,
  pkcs8Of,
  privateKeyFromPem,
  privateKeyFromPkcs8,
  publicKeyFromSpki,
  spkiOf,
} from "./keys.js";

const weak = (fn: () => unknown, message?: RegExp) =>
  assert.throws(fn, (err) => isMtlsError(err, "E_WEAK_KEY") && (!message || message.test(err.message)));

/**
 * An RSA public key with a modulus of exactly `bits` bits. Not a real key (the modulus is not a product of
 * two primes), but keyTypeOf only looks at the size, and generating RSA-3072/4096 keys takes seconds.
 */
function rsaPublicKeyOfBits(bits: number): KeyObject {
  const n = randomBytes(bits / 8);
  n[0] = (n[0] as number) | 0x80;
  n[n.length - 1] = (n.at(-1) as number) | 1;
  return createPublicKey({ key: { kty: "RSA", n: n.toString("base64url"), e: "AQAB" }, format: "jwk" });
}

describe("keyTypeOf", () => {
  const real: Record<string, () => KeyObject> = {
    "ec-p256": () => generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey,
    "ec-p384": () => generateKeyPairSync("ec", { namedCurve: "P-384" }).privateKey,
    "rsa-2048": () => generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey,
    ed25519: () => generateKeyPairSync("ed25519").privateKey,
  };
  for (const type of KEY_TYPES) {
    const make = real[type];
    if (make) {
      test(`${type}: private and public key`, () => {
        const key = make();
        assert.equal(keyTypeOf(key), type);
        assert.equal(keyTypeOf(createPublicKey(key)), type);
        assert.equal(keyTypeOf(publicKeyFromSpki(spkiOf(key))), type);
      });
    } else {
      test(`${type}: public key`, () => {
        const key = rsaPublicKeyOfBits(Number(type.slice(4)));
        assert.equal(key.asymmetricKeyDetails?.modulusLength, Number(type.slice(4)));
        assert.equal(keyTypeOf(key), type);
        assert.equal(keyTypeOf(publicKeyFromSpki(spkiOf(key))), type);
      });
    }
  }

  test("RSA sizes: under 2048 bits is weak; 2048 is the floor", () => {
    weak(() => keyTypeOf(rsaPublicKeyOfBits(2040)));
    assert.equal(keyTypeOf(rsaPublicKeyOfBits(2048)), "rsa-2048");
    assert.equal(keyTypeOf(rsaPublicKeyOfBits(8192)), "rsa-4096");
  });

  test("RSA-1024 → E_WEAK_KEY", () => {
    const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 1024 });
    weak(() => keyTypeOf(privateKey), /1024 bits/);
    weak(() => keyTypeOf(publicKey));
  });

  test("secp256k1 → E_WEAK_KEY", () => {
    const { publicKey } = generateKeyPairSync("ec", { namedCurve: "secp256k1" });
    weak(() => keyTypeOf(publicKey), /secp256k1/);
  });

  test("other curves and algorithms → E_WEAK_KEY", () => {
    weak(() => keyTypeOf(generateKeyPairSync("ec", { namedCurve: "secp521r1" }).publicKey));
    weak(() => keyTypeOf(generateKeyPairSync("ed448").publicKey), /ed448/);
    weak(() => keyTypeOf(generateKeyPairSync("x25519").publicKey), /x25519/);
    weak(() => keyTypeOf(generateKeyPairSync("dsa", { modulusLength: 2048, divisorLength: 224 }).publicKey));
  });
});

describe("generateKeyPair", () => {
  for (const type of ["ec-p256", "ec-p384", "ed25519", "rsa-2048"] as const) {
    test(`${type} makes a key of that type`, () => {
      const { privateKey, publicKey } = generateKeyPair(type);
      assert.equal(privateKey.type, "private");
      assert.equal(publicKey.type, "public");
      assert.equal(keyTypeOf(privateKey), type);
    });
  }
  test("RSA uses e = 65537", () => {
    assert.equal(generateKeyPair("rsa-2048").publicKey.asymmetricKeyDetails?.publicExponent, 65537n);
  });
});

describe("key type names", () => {
  test("isKeyType / parseKeyType", () => {
    for (const t of KEY_TYPES) {
      assert.ok(isKeyType(t));
      assert.equal(parseKeyType(t), t);
    }
    assert.ok(!isKeyType("rsa-1024"));
    assert.throws(
      () => parseKeyType("rsa-1024"),
      (err) => isMtlsError(err, "E_USAGE") && /ec-p256/.test(err.message),
    );
    assert.throws(
      () => parseKeyType("EC-P256"),
      (err) => isMtlsError(err, "E_USAGE"),
    );
  });
});

describe("encodings", () => {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });

  test("spkiOf is the same for the private key and its public key", () => {
    assert.deepEqual(spkiOf(privateKey), spkiOf(createPublicKey(privateKey)));
    assert.equal(spkiOf(privateKey)[0], 0x30);
  });

  test("PKCS#8 round trip", () => {
    const back = privateKeyFromPkcs8(pkcs8Of(privateKey));
    assert.ok(back.equals(privateKey));
  });

  test("privateKeyFromPem reads PKCS#8, SEC1 and PKCS#1", () => {
    assert.ok(
      privateKeyFromPem(privateKey.export({ type: "pkcs8", format: "pem" }) as string).equals(privateKey),
    );
    assert.ok(
      privateKeyFromPem(privateKey.export({ type: "sec1", format: "pem" }) as string).equals(privateKey),
    );
    const rsa = generateKeyPair("rsa-2048").privateKey;
    assert.ok(privateKeyFromPem(rsa.export({ type: "pkcs1", format: "pem" }) as string).equals(rsa));
  });

  test("malformed input → E_BAD_INPUT", () => {
    const bad = (fn: () => unknown) => assert.throws(fn, (err) => isMtlsError(err, "E_BAD_INPUT"));
    bad(() => publicKeyFromSpki(new Uint8Array([0x30, 0x00])));
    bad(() => privateKeyFromPkcs8(new Uint8Array([0x30, 0x03, 1, 2, 3])));
    bad(() => privateKeyFromPem("not a key"));
    const encrypted = privateKey.export({
      type: "pkcs8",
      format: "pem",
      cipher: "aes-256-cbc",
      passphrase: "x",
    }) as string;
    bad(() => privateKeyFromPem(encrypted));
  });
});

test("spkiOf equals OpenSSL's SPKI export for every key type (the SEC1 shortcut for EC keys included)", () => {
  for (const type of KEY_TYPES) {
    const { privateKey } = generateKeyPair(type);
    const expected = createPublicKey(privateKey).export({ format: "der", type: "spki" });
    assert.deepEqual(Buffer.from(spkiOf(privateKey)), expected, type);
    assert.deepEqual(Buffer.from(spkiOf(createPublicKey(privateKey))), expected, `${type} (public key)`);
  }
});
