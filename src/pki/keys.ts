import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { MtlsError } from "../errors.js";

/** The key types mtls issues and accepts, by their command-line names. */
export const KEY_TYPES = ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"] as const;
export type KeyType = (typeof KEY_TYPES)[number];

export function isKeyType(value: string): value is KeyType {
  return (KEY_TYPES as readonly string[]).includes(value);
}

export function parseKeyType(value: string): KeyType {
  if (!isKeyType(value)) {
    throw new MtlsError("E_USAGE", `unknown key type "${value}" (choose one of ${KEY_TYPES.join(", ")})`);
  }
  return value;
}

export interface KeyPair {
  privateKey: KeyObject;
  publicKey: KeyObject;
}

export function generateKeyPair(type: KeyType): KeyPair {
  switch (type) {
    case "ec-p256":
      return generateKeyPairSync("ec", { namedCurve: "P-256" });
    case "ec-p384":
      return generateKeyPairSync("ec", { namedCurve: "P-384" });
    case "rsa-2048":
    case "rsa-3072":
    case "rsa-4096":
      return generateKeyPairSync("rsa", { modulusLength: Number(type.slice(4)), publicExponent: 0x10001 });
    case "ed25519":
      return generateKeyPairSync("ed25519");
  }
}

/**
 * The mtls key type of a public or private key, or an E_WEAK_KEY error for anything the policy refuses:
 * RSA under 2048 bits, curves other than P-256/P-384, DSA, Ed448, X25519...
 */
export function keyTypeOf(key: KeyObject): KeyType {
  const details = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case "ec":
      if (details.namedCurve === "prime256v1") return "ec-p256";
      if (details.namedCurve === "secp384r1") return "ec-p384";
      throw new MtlsError(
        "E_WEAK_KEY",
        `unsupported elliptic curve ${details.namedCurve ?? "(unknown)"}: use P-256 or P-384`,
      );
    case "rsa": {
      const bits = details.modulusLength ?? 0;
      if (bits < 2048)
        throw new MtlsError("E_WEAK_KEY", `RSA key of ${bits} bits is too weak: at least 2048 bits`);
      if (bits <= 2048) return "rsa-2048";
      if (bits <= 3072) return "rsa-3072";
      return "rsa-4096";
    }
    case "ed25519":
      return "ed25519";
    default:
      throw new MtlsError("E_WEAK_KEY", `unsupported key algorithm ${key.asymmetricKeyType ?? "(unknown)"}`);
  }
}

export function publicKeyFromSpki(spki: Uint8Array): KeyObject {
  try {
    return createPublicKey({ key: Buffer.from(spki), format: "der", type: "spki" });
  } catch (err) {
    throw new MtlsError("E_BAD_INPUT", "malformed public key", { cause: err });
  }
}

// SubjectPublicKeyInfo headers for fixed-size keys: the key bytes follow. Going through JWK is
// about 20x faster than OpenSSL 3's SPKI encoder, which shows in issuance throughput.
const SPKI_PREFIX: Record<string, Buffer> = {
  "P-256": Buffer.from("3059301306072a8648ce3d020106082a8648ce3d030107034200", "hex"),
  "P-384": Buffer.from("3076301006072a8648ce3d020106052b81040022036200", "hex"),
  Ed25519: Buffer.from("302a300506032b6570032100", "hex"),
};

// The public point ends an EC private key's SEC1 DER: BIT STRING header, then 04 || X || Y.
const SEC1_POINT: Record<string, { header: Buffer; spki: Buffer; length: number }> = {
  prime256v1: { header: Buffer.from("034200", "hex"), spki: SPKI_PREFIX["P-256"] as Buffer, length: 65 },
  secp384r1: { header: Buffer.from("036200", "hex"), spki: SPKI_PREFIX["P-384"] as Buffer, length: 97 },
};

/**
 * An EC key's SPKI from its SEC1 DER (~7 µs; OpenSSL 3's SPKI encoder takes ~95 µs). Not through
 * JWK: on Node 20, exporting a JWK of a key fresh from generateKeyPairSync() can deadlock the
 * process for good (ExportJWK holds the key's mutex while allocating; a GC that frees the key
 * generation job then locks the same mutex), which hung issuance benchmarks and would hang a CA.
 */
export function spkiOf(key: KeyObject): Uint8Array {
  if (key.type === "private" && key.asymmetricKeyType === "ec") {
    const curve = SEC1_POINT[key.asymmetricKeyDetails?.namedCurve ?? ""];
    if (curve) {
      const sec1 = key.export({ format: "der", type: "sec1" });
      const at = sec1.length - curve.length;
      if (at > 3 && sec1[at] === 4 && sec1.subarray(at - 3, at).equals(curve.header)) {
        return new Uint8Array(Buffer.concat([curve.spki, sec1.subarray(at)]));
      }
    }
  }
  const pub = key.type === "private" ? createPublicKey(key) : key;
  return new Uint8Array(pub.export({ format: "der", type: "spki" }));
}

export function pkcs8Of(key: KeyObject): Uint8Array {
  return new Uint8Array(key.export({ format: "der", type: "pkcs8" }));
}

export function privateKeyFromPkcs8(der: Uint8Array): KeyObject {
  try {
    return createPrivateKey({ key: Buffer.from(der), format: "der", type: "pkcs8" });
  } catch (err) {
    throw new MtlsError("E_BAD_INPUT", "malformed PKCS#8 private key", { cause: err });
  }
}

/** Parses an unencrypted private key in PEM (PKCS#8, SEC1 or PKCS#1) or DER PKCS#8. */
export function privateKeyFromPem(pem: string): KeyObject {
  try {
    return createPrivateKey({ key: pem, format: "pem" });
  } catch (err) {
    throw new MtlsError("E_BAD_INPUT", "malformed or encrypted private key (PEM expected)", { cause: err });
  }
}
