import { createPublicKey, type KeyObject, verify } from "node:crypto";
import { MtlsError } from "../errors.js";

/**
 * Verifying a signature over DER (a CRL's TBSCertList, an OCSP response's ResponseData) with
 * node:crypto, given the AlgorithmIdentifier's OID. SHA-1 based signatures are refused; RSA-PSS is
 * not supported (none of the CAs mtls makes or talks to use it for CRLs or OCSP).
 */

const SIGNATURE_ALGS: Record<string, { digest: string | null; name: string }> = {
  "1.2.840.10045.4.3.2": { digest: "sha256", name: "ecdsa-with-SHA256" },
  "1.2.840.10045.4.3.3": { digest: "sha384", name: "ecdsa-with-SHA384" },
  "1.2.840.10045.4.3.4": { digest: "sha512", name: "ecdsa-with-SHA512" },
  "1.2.840.113549.1.1.11": { digest: "sha256", name: "sha256WithRSAEncryption" },
  "1.2.840.113549.1.1.12": { digest: "sha384", name: "sha384WithRSAEncryption" },
  "1.2.840.113549.1.1.13": { digest: "sha512", name: "sha512WithRSAEncryption" },
  "1.3.101.112": { digest: null, name: "Ed25519" },
};
const SHA1_SIGNATURES = new Set(["1.2.840.10045.4.1", "1.2.840.113549.1.1.5"]);

/**
 * Whether `signature` over `data` verifies with `key` (SPKI DER or a KeyObject) under the algorithm
 * `oid`. False for a wrong key or a mismatched key type; E_BAD_INPUT for an algorithm we refuse.
 */
export function verifySignature(
  oid: string,
  data: Uint8Array,
  signature: Uint8Array,
  key: Uint8Array | KeyObject,
  what = "the signature",
): boolean {
  const alg = SIGNATURE_ALGS[oid];
  if (!alg) {
    if (SHA1_SIGNATURES.has(oid)) throw new MtlsError("E_BAD_INPUT", `${what} uses SHA-1, which is refused`);
    throw new MtlsError("E_BAD_INPUT", `${what} uses an unsupported signature algorithm (${oid})`);
  }
  try {
    const k =
      key instanceof Uint8Array
        ? createPublicKey({ key: Buffer.from(key), format: "der", type: "spki" })
        : key;
    return verify(alg.digest, data, k, signature);
  } catch {
    return false; // e.g. an ECDSA algorithm with an RSA key: simply not a valid signature
  }
}
