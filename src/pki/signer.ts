import { type KeyObject, sign as nodeSign } from "node:crypto";
import { AsnConvert } from "@peculiar/asn1-schema";
import { AlgorithmIdentifier } from "@peculiar/asn1-x509";
import { type KeyType, keyTypeOf, spkiOf } from "./keys.js";

/**
 * Something that signs with a CA or leaf key. A key in memory, a key decrypted from disk and a key
 * inside an HSM all look like this, so certificate, CRL and OCSP code never touches key material.
 */
export interface Signer {
  readonly keyType: KeyType;
  /** SubjectPublicKeyInfo (DER) of the signing key. */
  readonly spki: Uint8Array;
  /** DER AlgorithmIdentifier of the signatures this signer makes (goes into TBS and the outer structure). */
  readonly algorithmDer: Uint8Array;
  /** Signs `data`, returning the signature as X.509 carries it (DER ECDSA-Sig-Value for ECDSA). */
  sign(data: Uint8Array): Promise<Uint8Array>;
}

const OID = {
  ecdsaSha256: "1.2.840.10045.4.3.2",
  ecdsaSha384: "1.2.840.10045.4.3.3",
  rsaSha256: "1.2.840.113549.1.1.11",
  ed25519: "1.3.101.112",
};

/** The signature algorithm a key of this type signs with, and the hash passed to crypto.sign. */
export function signatureAlgorithmFor(type: KeyType): { oid: string; hash: string | null; der: Uint8Array } {
  const pick = (oid: string, hash: string | null, nullParams: boolean) => ({
    oid,
    hash,
    // RSA AlgorithmIdentifiers carry explicit NULL parameters (RFC 4055); ECDSA and EdDSA carry none.
    der: new Uint8Array(
      AsnConvert.serialize(
        new AlgorithmIdentifier(nullParams ? { algorithm: oid, parameters: null } : { algorithm: oid }),
      ),
    ),
  });
  switch (type) {
    case "ec-p256":
      return pick(OID.ecdsaSha256, "sha256", false);
    case "ec-p384":
      return pick(OID.ecdsaSha384, "sha384", false);
    case "ed25519":
      return pick(OID.ed25519, null, false);
    default:
      return pick(OID.rsaSha256, "sha256", true);
  }
}

/** A Signer over a private key held in this process (node:crypto signs; ~29k ECDSA P-256 signatures/s). */
export function keyObjectSigner(privateKey: KeyObject): Signer {
  const keyType = keyTypeOf(privateKey);
  const alg = signatureAlgorithmFor(keyType);
  return {
    keyType,
    spki: spkiOf(privateKey),
    algorithmDer: alg.der,
    sign: async (data) => new Uint8Array(nodeSign(alg.hash, data, privateKey)),
  };
}
