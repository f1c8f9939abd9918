/**
 * Private keys at rest: PKCS#8 EncryptedPrivateKeyInfo with PBES2 (RFC 8018).
 *
 * We write scrypt (RFC 7914 §7) + AES-256-CBC. We read PBES2 with scrypt or PBKDF2
 * (hmacWithSHA1/256/384/512) and AES-128/192/256-CBC, which covers `openssl pkcs8 -topk8 -v2 ...`,
 * `openssl pkcs8 -topk8 -scrypt` and Node's `KeyObject.export({ cipher, passphrase })`.
 *
 * The PBES2 helpers are exported for pkcs12.ts, which uses the same scheme (with PBKDF2) for
 * its key and certificate bags.
 */
import { createCipheriv, createDecipheriv, pbkdf2Sync, randomBytes, scryptSync } from "node:crypto";
import { EncryptedData, EncryptedPrivateKeyInfo, PrivateKeyInfo } from "@peculiar/asn1-pkcs8";
import { AsnConvert, AsnProp, AsnPropTypes, OctetString } from "@peculiar/asn1-schema";
import { AlgorithmIdentifier } from "@peculiar/asn1-x509";
import { MtlsError } from "../errors.js";
import { derBlocks, pemEncode } from "./pem.js";

export const OID_PBES2 = "1.2.840.113549.1.5.13";
const OID_PBKDF2 = "1.2.840.113549.1.5.12";
const OID_SCRYPT = "1.3.6.1.4.1.11591.4.11";

/** PBKDF2 pseudo-random functions (RFC 8018 B.1.2); absent means hmacWithSHA1. */
const PRFS: Record<string, { hash: string; label: string }> = {
  "1.2.840.113549.2.7": { hash: "sha1", label: "SHA1" },
  "1.2.840.113549.2.9": { hash: "sha256", label: "SHA256" },
  "1.2.840.113549.2.10": { hash: "sha384", label: "SHA384" },
  "1.2.840.113549.2.11": { hash: "sha512", label: "SHA512" },
};
const OID_HMAC_SHA256 = "1.2.840.113549.2.9";

/** Encryption schemes (RFC 8018 B.2.5 / NIST): parameters are the 16-byte IV. */
const CIPHERS: Record<string, { name: string; keyLength: number; label: string }> = {
  "2.16.840.1.101.3.4.1.2": { name: "aes-128-cbc", keyLength: 16, label: "AES-128-CBC" },
  "2.16.840.1.101.3.4.1.22": { name: "aes-192-cbc", keyLength: 24, label: "AES-192-CBC" },
  "2.16.840.1.101.3.4.1.42": { name: "aes-256-cbc", keyLength: 32, label: "AES-256-CBC" },
};
const OID_AES256_CBC = "2.16.840.1.101.3.4.1.42";

/** Refuse files that would make us spin (or allocate) for a very long time. */
const MAX_PBKDF2_ITERATIONS = 10_000_000;
const MAX_SCRYPT_MEMORY = 1024 * 1024 * 1024;
/**
 * scrypt N=2^14, r=8 (16 MiB), OpenSSL's own `-scrypt` default. Not 2^15: OpenSSL 3 (so also
 * `openssl pkcs8` and Node's createPrivateKey / tls `key` + `passphrase`) caps scrypt at 32 MiB
 * while N=2^15, r=8 needs 128*r*(N+2) + 128*r*p bytes, just over it, and refuses such files.
 */
const DEFAULT_SCRYPT_N = 2 ** 14;

class Pbes2Params {
  @AsnProp({ type: AlgorithmIdentifier }) keyDerivationFunc = new AlgorithmIdentifier();
  @AsnProp({ type: AlgorithmIdentifier }) encryptionScheme = new AlgorithmIdentifier();
}

/** PBKDF2-params; the salt CHOICE `otherSource` is unused in practice and fails to parse. */
class Pbkdf2Params {
  @AsnProp({ type: OctetString }) salt = new OctetString();
  @AsnProp({ type: AsnPropTypes.Integer }) iterationCount: number | string = 0;
  @AsnProp({ type: AsnPropTypes.Integer, optional: true }) keyLength?: number | string;
  @AsnProp({ type: AlgorithmIdentifier, optional: true }) prf?: AlgorithmIdentifier;
}

/** scrypt-params (RFC 7914 §7). */
class ScryptParams {
  @AsnProp({ type: OctetString }) salt = new OctetString();
  @AsnProp({ type: AsnPropTypes.Integer }) costParameter: number | string = 0;
  @AsnProp({ type: AsnPropTypes.Integer }) blockSize: number | string = 0;
  @AsnProp({ type: AsnPropTypes.Integer }) parallelizationParameter: number | string = 0;
  @AsnProp({ type: AsnPropTypes.Integer, optional: true }) keyLength?: number | string;
}

export type Pbes2Kdf = { kdf: "pbkdf2"; iterations: number } | { kdf: "scrypt"; n: number };

/** Encrypts `data` with PBES2 (PBKDF2-HMAC-SHA256 or scrypt r=8 p=1, AES-256-CBC). */
export function pbes2Encrypt(
  data: Uint8Array,
  password: string,
  kdf: Pbes2Kdf,
): { algorithm: AlgorithmIdentifier; ciphertext: Uint8Array } {
  const salt = randomBytes(16);
  const iv = randomBytes(16);
  const pass = Buffer.from(password, "utf8");
  let key: Buffer;
  let kdfId: AlgorithmIdentifier;
  if (kdf.kdf === "pbkdf2") {
    key = pbkdf2Sync(pass, salt, kdf.iterations, 32, "sha256");
    const params = Object.assign(new Pbkdf2Params(), {
      salt: new OctetString(salt),
      iterationCount: kdf.iterations,
      // hmacWithSHA256 must be spelled out: the DEFAULT is SHA-1. Parameters NULL, as OpenSSL.
      prf: new AlgorithmIdentifier({ algorithm: OID_HMAC_SHA256, parameters: null }),
    });
    kdfId = new AlgorithmIdentifier({ algorithm: OID_PBKDF2, parameters: AsnConvert.serialize(params) });
  } else {
    key = scryptSync(pass, salt, 32, scryptOptions(kdf.n, 8, 1));
    const params = Object.assign(new ScryptParams(), {
      salt: new OctetString(salt),
      costParameter: kdf.n,
      blockSize: 8,
      parallelizationParameter: 1,
      keyLength: 32,
    });
    kdfId = new AlgorithmIdentifier({ algorithm: OID_SCRYPT, parameters: AsnConvert.serialize(params) });
  }
  const cipher = createCipheriv("aes-256-cbc", key, iv);
  const ciphertext = Buffer.concat([cipher.update(data), cipher.final()]);
  const scheme = Object.assign(new Pbes2Params(), {
    keyDerivationFunc: kdfId,
    encryptionScheme: new AlgorithmIdentifier({
      algorithm: OID_AES256_CBC,
      parameters: AsnConvert.serialize(new OctetString(iv)),
    }),
  });
  const algorithm = new AlgorithmIdentifier({
    algorithm: OID_PBES2,
    parameters: AsnConvert.serialize(scheme),
  });
  return { algorithm, ciphertext };
}

/**
 * Decrypts PBES2 data. Returns null when the CBC padding is wrong, which almost always means a
 * wrong password; unsupported or malformed parameters throw E_BAD_INPUT.
 */
export function pbes2Decrypt(
  algorithm: AlgorithmIdentifier,
  ciphertext: Uint8Array,
  password: string,
): Uint8Array | null {
  const { scheme, cipher } = readPbes2(algorithm);
  const pass = Buffer.from(password, "utf8");
  const iv = new Uint8Array(parseAsn(scheme.encryptionScheme.parameters, OctetString, "AES IV").buffer);
  if (iv.length !== 16)
    throw new MtlsError("E_BAD_INPUT", "malformed PBES2 parameters: AES IV is not 16 bytes");
  let key: Buffer;
  const kdf = scheme.keyDerivationFunc;
  if (kdf.algorithm === OID_PBKDF2) {
    const p = parseAsn(kdf.parameters, Pbkdf2Params, "PBKDF2 parameters");
    const iterations = toInt(p.iterationCount, 1, MAX_PBKDF2_ITERATIONS, "PBKDF2 iteration count");
    if (p.keyLength !== undefined && Number(p.keyLength) !== cipher.keyLength) {
      throw new MtlsError(
        "E_BAD_INPUT",
        "malformed PBES2 parameters: PBKDF2 key length does not fit the cipher",
      );
    }
    const prf = prfOf(p);
    key = pbkdf2Sync(pass, new Uint8Array(p.salt.buffer), iterations, cipher.keyLength, prf.hash);
  } else if (kdf.algorithm === OID_SCRYPT) {
    const p = parseAsn(kdf.parameters, ScryptParams, "scrypt parameters");
    const n = toInt(p.costParameter, 2, 2 ** 30, "scrypt N");
    const r = toInt(p.blockSize, 1, 1024, "scrypt r");
    const par = toInt(p.parallelizationParameter, 1, 1024, "scrypt p");
    if (p.keyLength !== undefined && Number(p.keyLength) !== cipher.keyLength) {
      throw new MtlsError(
        "E_BAD_INPUT",
        "malformed PBES2 parameters: scrypt key length does not fit the cipher",
      );
    }
    key = scryptSync(pass, new Uint8Array(p.salt.buffer), cipher.keyLength, scryptOptions(n, r, par));
  } else {
    throw new MtlsError("E_BAD_INPUT", `unsupported PBES2 key derivation ${kdf.algorithm}`);
  }
  try {
    const decipher = createDecipheriv(cipher.name, key, iv);
    return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
  } catch {
    return null; // bad padding (the decrypted bytes did not end in valid PKCS#7 padding)
  }
}

/** A human summary such as "PBES2 (PBKDF2-SHA256, AES-256-CBC)" or "PBES2 (scrypt N=32768 r=8 p=1, AES-256-CBC)". */
export function describePbes2(algorithm: AlgorithmIdentifier): string {
  const { scheme, cipher } = readPbes2(algorithm);
  const kdf = scheme.keyDerivationFunc;
  if (kdf.algorithm === OID_SCRYPT) {
    const p = parseAsn(kdf.parameters, ScryptParams, "scrypt parameters");
    return `PBES2 (scrypt N=${p.costParameter} r=${p.blockSize} p=${p.parallelizationParameter}, ${cipher.label})`;
  }
  if (kdf.algorithm === OID_PBKDF2) {
    const p = parseAsn(kdf.parameters, Pbkdf2Params, "PBKDF2 parameters");
    return `PBES2 (PBKDF2-${prfOf(p).label}, ${cipher.label})`;
  }
  return `PBES2 (${kdf.algorithm}, ${cipher.label})`;
}

/** Encrypts a PKCS#8 PrivateKeyInfo (DER) to a PEM "ENCRYPTED PRIVATE KEY" (scrypt + AES-256-CBC). */
export function encryptPrivateKey(
  pkcs8Der: Uint8Array,
  passphrase: string,
  opts: { scryptN?: number } = {},
): string {
  if (!isPrivateKeyInfo(pkcs8Der)) throw new MtlsError("E_BAD_INPUT", "not a PKCS#8 private key (DER)");
  const n = opts.scryptN ?? DEFAULT_SCRYPT_N;
  if (!Number.isInteger(n) || n < 2 || (n & (n - 1)) !== 0) {
    throw new MtlsError("E_BAD_INPUT", `scrypt N must be a power of two, got ${n}`);
  }
  const { algorithm, ciphertext } = pbes2Encrypt(pkcs8Der, passphrase, { kdf: "scrypt", n });
  const info = new EncryptedPrivateKeyInfo({
    encryptionAlgorithm: algorithm,
    encryptedData: new EncryptedData(ciphertext),
  });
  return pemEncode("ENCRYPTED PRIVATE KEY", new Uint8Array(AsnConvert.serialize(info)));
}

/** Decrypts a PEM "ENCRYPTED PRIVATE KEY" and returns the PKCS#8 PrivateKeyInfo DER. */
export function decryptPrivateKey(pem: string, passphrase: string): Uint8Array {
  const [der] = derBlocks(pem, ["ENCRYPTED PRIVATE KEY"], "encrypted private key");
  const info = parseAsn(der as Uint8Array, EncryptedPrivateKeyInfo, "encrypted private key");
  if (info.encryptionAlgorithm.algorithm !== OID_PBES2) {
    throw new MtlsError(
      "E_BAD_INPUT",
      `unsupported private key encryption ${info.encryptionAlgorithm.algorithm}`,
    );
  }
  const plain = pbes2Decrypt(info.encryptionAlgorithm, new Uint8Array(info.encryptedData.buffer), passphrase);
  // A wrong passphrase passes the padding check about once in 256 tries; then the plaintext is
  // garbage, which the PrivateKeyInfo check catches.
  if (!plain || !isPrivateKeyInfo(plain)) {
    throw new MtlsError("E_PASSPHRASE", "wrong passphrase for the encrypted private key");
  }
  return plain;
}

/**
 * True when `der` is one PrivateKeyInfo (or a v2 OneAsymmetricKey, RFC 5958) and nothing else:
 * the outer SEQUENCE must span all the bytes, so trailing garbage is not accepted.
 */
export function isPrivateKeyInfo(der: Uint8Array): boolean {
  if (der[0] !== 0x30 || der.length < 2) return false;
  const first = der[1] ?? 0;
  const lenBytes = first < 0x80 ? 0 : first & 0x7f;
  if (lenBytes > 4 || der.length < 2 + lenBytes) return false;
  let len = first < 0x80 ? first : 0;
  for (let i = 0; i < lenBytes; i++) len = len * 256 + (der[2 + i] ?? 0);
  if (2 + lenBytes + len !== der.length) return false;
  try {
    return AsnConvert.parse(der, PrivateKeyInfo).privateKeyAlgorithm.algorithm !== "";
  } catch {
    return false;
  }
}

function readPbes2(algorithm: AlgorithmIdentifier) {
  if (algorithm.algorithm !== OID_PBES2)
    throw new MtlsError("E_BAD_INPUT", `not PBES2: ${algorithm.algorithm}`);
  const scheme = parseAsn(algorithm.parameters, Pbes2Params, "PBES2 parameters");
  const cipher = CIPHERS[scheme.encryptionScheme.algorithm];
  if (!cipher) {
    throw new MtlsError("E_BAD_INPUT", `unsupported PBES2 cipher ${scheme.encryptionScheme.algorithm}`);
  }
  return { scheme, cipher };
}

function prfOf(p: Pbkdf2Params): { hash: string; label: string } {
  const oid = p.prf?.algorithm ?? "1.2.840.113549.2.7";
  const prf = PRFS[oid];
  if (!prf) throw new MtlsError("E_BAD_INPUT", `unsupported PBKDF2 PRF ${oid}`);
  return prf;
}

/** scrypt needs about 128*N*r bytes; Node's default cap is 32 MiB, too small for N=2^15, r=8: raise it. */
function scryptOptions(n: number, r: number, p: number) {
  const need = 128 * n * r + 128 * r * p;
  if (need > MAX_SCRYPT_MEMORY)
    throw new MtlsError("E_BAD_INPUT", `scrypt parameters need too much memory (N=${n}, r=${r})`);
  return { N: n, r, p, maxmem: need + 1024 * 1024 };
}

/** asn1-schema returns INTEGERs of 4+ bytes as decimal strings. */
function toInt(value: number | string, min: number, max: number, what: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new MtlsError("E_BAD_INPUT", `${what} out of range: ${value}`);
  }
  return n;
}

function parseAsn<T>(data: ArrayBuffer | Uint8Array | null | undefined, type: new () => T, what: string): T {
  if (!data) throw new MtlsError("E_BAD_INPUT", `malformed ${what}: missing`);
  try {
    return AsnConvert.parse(data, type);
  } catch (err) {
    throw new MtlsError("E_BAD_INPUT", `malformed ${what}`, { cause: err });
  }
}
