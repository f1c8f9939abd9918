/** TLS 1.3 SignatureScheme verification (CertificateVerify) over WebCrypto. */
import { MalformedDer } from "./der.js";
import { ecdsaDerToRaw } from "./ecdsa.js";
import { CertificateError } from "./errors.js";
import {
  type CurveName,
  HASH_LENGTH,
  type HashName,
  type PublicKeyInfo,
  parseSpki,
  webVerify,
} from "./spki.js";

type SchemeSpec =
  | { kind: "ecdsa"; curve: CurveName; hash: HashName }
  | { kind: "rsa-pss"; keyIsPss: boolean; hash: HashName }
  | { kind: "ed25519" };

/** The schemes allowed in a TLS 1.3 CertificateVerify (RFC 8446 §4.2.3, §4.4.3). */
const CERTIFICATE_VERIFY: ReadonlyMap<number, SchemeSpec> = new Map<number, SchemeSpec>([
  [0x0403, { kind: "ecdsa", curve: "P-256", hash: "SHA-256" }],
  [0x0503, { kind: "ecdsa", curve: "P-384", hash: "SHA-384" }],
  [0x0603, { kind: "ecdsa", curve: "P-521", hash: "SHA-512" }],
  [0x0804, { kind: "rsa-pss", keyIsPss: false, hash: "SHA-256" }],
  [0x0805, { kind: "rsa-pss", keyIsPss: false, hash: "SHA-384" }],
  [0x0806, { kind: "rsa-pss", keyIsPss: false, hash: "SHA-512" }],
  [0x0807, { kind: "ed25519" }],
  [0x0809, { kind: "rsa-pss", keyIsPss: true, hash: "SHA-256" }],
  [0x080a, { kind: "rsa-pss", keyIsPss: true, hash: "SHA-384" }],
  [0x080b, { kind: "rsa-pss", keyIsPss: true, hash: "SHA-512" }],
]);

/**
 * What the client offers in signature_algorithms, preferred first. The trailing rsa_pkcs1_* entries
 * are there only for signatures inside certificates (RFC 8446 §4.2.3: a client that sends no
 * signature_algorithms_cert offers certificate algorithms here too); they are never accepted in
 * CertificateVerify (see isCertificateVerifyScheme).
 */
export const SIGNATURE_SCHEMES: number[] = [
  0x0403, // ecdsa_secp256r1_sha256
  0x0804, // rsa_pss_rsae_sha256
  0x0503, // ecdsa_secp384r1_sha384
  0x0805, // rsa_pss_rsae_sha384
  0x0806, // rsa_pss_rsae_sha512
  0x0807, // ed25519
  0x0603, // ecdsa_secp521r1_sha512
  0x0809, // rsa_pss_pss_sha256
  0x080a, // rsa_pss_pss_sha384
  0x080b, // rsa_pss_pss_sha512
  0x0401, // rsa_pkcs1_sha256 (certificates only)
  0x0501, // rsa_pkcs1_sha384 (certificates only)
  0x0601, // rsa_pkcs1_sha512 (certificates only)
];

/** True when `scheme` may sign a TLS 1.3 CertificateVerify and verifySchemeSignature supports it. */
export function isCertificateVerifyScheme(scheme: number): boolean {
  return CERTIFICATE_VERIFY.has(scheme);
}

/**
 * Verifies a TLS 1.3 CertificateVerify-style signature: `signature` exactly as carried in TLS (DER for
 * ECDSA), made with the key in `spki` (DER SubjectPublicKeyInfo) under SignatureScheme `scheme`.
 * Resolves false when the signature does not verify, is malformed (strict DER for ECDSA), the scheme
 * does not fit the key (ECDSA curve must be the scheme's curve; rsa_pss_rsae_* needs an rsaEncryption
 * key, rsa_pss_pss_* an RSASSA-PSS key), or the scheme is not allowed in TLS 1.3 (rsa_pkcs1_*, SHA-1,
 * unknown numbers). Throws CertificateError("malformed") only when `spki` itself cannot be parsed.
 */
export async function verifySchemeSignature(
  spki: Uint8Array,
  scheme: number,
  data: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  let key: PublicKeyInfo;
  try {
    key = parseSpki(spki);
  } catch (err) {
    if (err instanceof MalformedDer) {
      throw new CertificateError("malformed", `unusable public key: ${err.message}`, { cause: err });
    }
    throw err;
  }
  const spec = CERTIFICATE_VERIFY.get(scheme);
  if (!spec) return false;
  switch (spec.kind) {
    case "ecdsa": {
      if (key.kind !== "ec" || key.curve !== spec.curve) return false;
      let raw: Uint8Array;
      try {
        raw = ecdsaDerToRaw(signature, key.size);
      } catch (err) {
        if (err instanceof CertificateError) return false;
        throw err;
      }
      return webVerify(key, { name: "ECDSA", hash: spec.hash }, data, raw);
    }
    case "rsa-pss":
      if (key.kind !== "rsa" || key.pss !== spec.keyIsPss) return false;
      return webVerify(
        key,
        { name: "RSA-PSS", hash: spec.hash, saltLength: HASH_LENGTH[spec.hash] },
        data,
        signature,
      );
    case "ed25519":
      if (key.kind !== "ed25519" || signature.length !== 64) return false;
      return webVerify(key, { name: "Ed25519" }, data, signature);
  }
}
