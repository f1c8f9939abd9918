/**
 * SubjectPublicKeyInfo: which kind of key it holds, and importing it into WebCrypto for verification.
 */
import { MtlsError } from "../../errors.js";
import {
  bitStringBytes,
  children,
  concat,
  encodeTlv,
  expectTag,
  MalformedDer,
  oidToString,
  plain,
  readOnly,
  smallInteger,
  type Tlv,
  unsignedInteger,
} from "./der.js";

export type HashName = "SHA-1" | "SHA-256" | "SHA-384" | "SHA-512";
export type CurveName = "P-256" | "P-384" | "P-521";

export const OID_RSA = "1.2.840.113549.1.1.1";
export const OID_RSA_PSS = "1.2.840.113549.1.1.10";
const OID_MGF1 = "1.2.840.113549.1.1.8";
const OID_EC = "1.2.840.10045.2.1";
export const OID_ED25519 = "1.3.101.112";

const CURVES: Record<string, { curve: CurveName; size: number }> = {
  "1.2.840.10045.3.1.7": { curve: "P-256", size: 32 },
  "1.3.132.0.34": { curve: "P-384", size: 48 },
  "1.3.132.0.35": { curve: "P-521", size: 66 },
};

const HASHES: Record<string, HashName> = {
  "1.3.14.3.2.26": "SHA-1",
  "2.16.840.1.101.3.4.2.1": "SHA-256",
  "2.16.840.1.101.3.4.2.2": "SHA-384",
  "2.16.840.1.101.3.4.2.3": "SHA-512",
};

export const HASH_LENGTH: Record<HashName, number> = {
  "SHA-1": 20,
  "SHA-256": 32,
  "SHA-384": 48,
  "SHA-512": 64,
};

export type PublicKeyInfo =
  | { kind: "ec"; curve: CurveName; size: number; spki: Uint8Array }
  /** `pss`: the key is id-RSASSA-PSS (maybe restricted to one hash); `rsaSpki` re-labelled as rsaEncryption. */
  | {
      kind: "rsa";
      modulusBits: number;
      pss: boolean;
      pssHash?: HashName;
      spki: Uint8Array;
      rsaSpki: Uint8Array;
    }
  | { kind: "ed25519"; spki: Uint8Array };

/** AlgorithmIdentifier ::= SEQUENCE { algorithm OID, parameters ANY OPTIONAL } */
export function readAlgorithm(tlv: Tlv): { oid: string; params?: Tlv } {
  expectTag(tlv, 0x30);
  const parts = children(tlv.value);
  const [oid, params] = parts;
  if (!oid || parts.length > 2) throw new MalformedDer("bad AlgorithmIdentifier");
  expectTag(oid, 0x06);
  return params ? { oid: oidToString(oid.value), params } : { oid: oidToString(oid.value) };
}

function isAbsentOrNull(params: Tlv | undefined): boolean {
  return params === undefined || (params.tag === 0x05 && params.value.length === 0);
}

function hashOf(tlv: Tlv): HashName {
  const alg = readAlgorithm(tlv);
  const hash = HASHES[alg.oid];
  if (!hash || !isAbsentOrNull(alg.params)) throw new MalformedDer(`unsupported hash algorithm ${alg.oid}`);
  return hash;
}

/**
 * RSASSA-PSS-params (RFC 4055). WebCrypto's RSA-PSS always uses MGF1 with the message hash and the
 * 0xBC trailer, so other combinations are refused.
 */
export function readPssParams(params: Tlv | undefined): { hash: HashName; saltLength: number } | undefined {
  if (params === undefined) return undefined;
  expectTag(params, 0x30);
  let hash: HashName = "SHA-1";
  let mgfHash: HashName = "SHA-1";
  let saltLength = 20;
  let trailer = 1;
  let lastTag = -1;
  for (const field of children(params.value)) {
    if (field.tag <= lastTag) throw new MalformedDer("RSASSA-PSS-params fields out of order");
    lastTag = field.tag;
    const inner = readOnly(field.value, field.tag === 0xa0 || field.tag === 0xa1 ? 0x30 : 0x02);
    if (field.tag === 0xa0) hash = hashOf(inner);
    else if (field.tag === 0xa1) {
      const mgf = readAlgorithm(inner);
      if (mgf.oid !== OID_MGF1 || !mgf.params) throw new MalformedDer("unsupported PSS mask generation");
      mgfHash = hashOf(mgf.params);
    } else if (field.tag === 0xa2) saltLength = smallInteger(inner.value);
    else if (field.tag === 0xa3) trailer = smallInteger(inner.value);
    else throw new MalformedDer("unknown RSASSA-PSS-params field");
  }
  if (mgfHash !== hash) throw new MalformedDer("PSS with an MGF1 hash unlike the message hash");
  if (trailer !== 1) throw new MalformedDer("PSS trailer field other than 1");
  return { hash, saltLength };
}

/** Parses a DER SubjectPublicKeyInfo; throws MalformedDer on anything unknown or malformed. */
export function parseSpki(spki: Uint8Array): PublicKeyInfo {
  const seq = readOnly(spki, 0x30);
  const parts = children(seq.value);
  const [algTlv, keyTlv] = parts;
  if (!algTlv || !keyTlv || parts.length !== 2) throw new MalformedDer("bad SubjectPublicKeyInfo");
  expectTag(keyTlv, 0x03);
  const key = bitStringBytes(keyTlv.value);
  const alg = readAlgorithm(algTlv);
  switch (alg.oid) {
    case OID_EC: {
      if (alg.params?.tag !== 0x06) throw new MalformedDer("EC key without a named curve");
      const curve = CURVES[oidToString(alg.params.value)];
      if (!curve) throw new MalformedDer("unsupported elliptic curve");
      if (key.length !== 1 + 2 * curve.size || key[0] !== 0x04) {
        throw new MalformedDer("EC public key is not an uncompressed point of the curve's size");
      }
      return { kind: "ec", curve: curve.curve, size: curve.size, spki };
    }
    case OID_RSA:
    case OID_RSA_PSS: {
      const pss = alg.oid === OID_RSA_PSS;
      if (!pss && !isAbsentOrNull(alg.params)) throw new MalformedDer("rsaEncryption with parameters");
      const pssParams = pss ? readPssParams(alg.params) : undefined;
      const rsaKey = children(readOnly(key, 0x30).value);
      const [n, e] = rsaKey;
      if (!n || !e || rsaKey.length !== 2 || n.tag !== 0x02 || e.tag !== 0x02) {
        throw new MalformedDer("bad RSAPublicKey");
      }
      const modulus = unsignedInteger(n.value);
      unsignedInteger(e.value);
      const modulusBits = (modulus.length - 1) * 8 + (32 - Math.clz32(modulus[0] as number));
      // WebCrypto (Chromium in particular) imports RSA keys only under rsaEncryption; the key bits are
      // the same, and the PSS restriction is enforced here instead.
      const rsaAlg = encodeTlv(0x30, concat(encodeTlv(0x06, RSA_OID_BYTES), new Uint8Array([0x05, 0x00])));
      const rsaSpki = pss ? encodeTlv(0x30, concat(rsaAlg, keyTlv.raw)) : spki;
      const info: PublicKeyInfo = { kind: "rsa", modulusBits, pss, spki, rsaSpki };
      if (pssParams) info.pssHash = pssParams.hash;
      return info;
    }
    case OID_ED25519:
      if (alg.params !== undefined) throw new MalformedDer("Ed25519 key with parameters");
      if (key.length !== 32) throw new MalformedDer("Ed25519 key of the wrong length");
      return { kind: "ed25519", spki };
    default:
      throw new MalformedDer(`unsupported public key algorithm ${alg.oid}`);
  }
}

const RSA_OID_BYTES = new Uint8Array([0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]);

/** How to verify a signature with a key: the WebCrypto algorithm and the hash. */
export type VerifyAlgorithm =
  | { name: "ECDSA"; hash: HashName }
  | { name: "RSA-PSS"; hash: HashName; saltLength: number }
  | { name: "RSASSA-PKCS1-v1_5"; hash: HashName }
  | { name: "Ed25519" };

/**
 * Verifies `signature` (WebCrypto format: raw r||s for ECDSA) over `data` with the key. WebCrypto
 * failures to import (an unsupported curve in this browser, for instance) count as "does not verify".
 */
export async function webVerify(
  key: PublicKeyInfo,
  alg: VerifyAlgorithm,
  data: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  let importAlg: AlgorithmIdentifier | EcKeyImportParams | RsaHashedImportParams;
  let spki: Uint8Array;
  let verifyAlg: AlgorithmIdentifier | EcdsaParams | RsaPssParams;
  if (alg.name === "ECDSA") {
    if (key.kind !== "ec") return false;
    importAlg = { name: "ECDSA", namedCurve: key.curve };
    spki = key.spki;
    verifyAlg = { name: "ECDSA", hash: alg.hash };
  } else if (alg.name === "Ed25519") {
    if (key.kind !== "ed25519") return false;
    importAlg = { name: "Ed25519" };
    spki = key.spki;
    verifyAlg = { name: "Ed25519" };
  } else {
    if (key.kind !== "rsa") return false;
    if (key.pss && alg.name !== "RSA-PSS") return false;
    if (key.pssHash && key.pssHash !== alg.hash) return false;
    importAlg = { name: alg.name, hash: alg.hash };
    spki = key.rsaSpki;
    verifyAlg = alg.name === "RSA-PSS" ? { name: "RSA-PSS", saltLength: alg.saltLength } : { name: alg.name };
  }
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    throw new MtlsError(
      "E_TLS",
      "WebCrypto (crypto.subtle) is not available: the page must be a secure context (https: or localhost)",
    );
  }
  let cryptoKey: CryptoKey;
  try {
    cryptoKey = await subtle.importKey("spki", plain(spki), importAlg, false, ["verify"]);
  } catch {
    return false;
  }
  try {
    return await subtle.verify(verifyAlg, cryptoKey, plain(signature), plain(data));
  } catch {
    return false;
  }
}
