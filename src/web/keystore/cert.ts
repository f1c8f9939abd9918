/** The little the key store needs to know about a certificate: its public key and validity. */
import { AsnConvert } from "@peculiar/asn1-schema";
import { Certificate, SubjectPublicKeyInfo } from "@peculiar/asn1-x509";
import { MtlsError } from "../../errors.js";

export interface LeafFacts {
  /** DER SubjectPublicKeyInfo, re-encoded canonically. */
  spki: Uint8Array;
  notBefore: Date;
  notAfter: Date;
}

function bad(what: string, cause?: unknown): MtlsError {
  return new MtlsError("E_KEYSTORE", what, cause === undefined ? undefined : { cause });
}

const toBytes = (buf: ArrayBuffer) => new Uint8Array(buf);

/** The certificate's public key and validity; E_KEYSTORE when `der` is not one DER certificate. */
export function leafFacts(der: Uint8Array): LeafFacts {
  let cert: Certificate;
  try {
    cert = AsnConvert.parse(der, Certificate);
  } catch (err) {
    throw bad("the leaf certificate is not a DER X.509 certificate", err);
  }
  const tbs = cert.tbsCertificate;
  return {
    spki: toBytes(AsnConvert.serialize(tbs.subjectPublicKeyInfo)),
    notBefore: tbs.validity.notBefore.getTime(),
    notAfter: tbs.validity.notAfter.getTime(),
  };
}

/** The SPKI in its canonical DER (parsed and re-encoded), so two encodings of one key compare equal. */
export function canonicalSpki(spki: Uint8Array): Uint8Array {
  try {
    return toBytes(AsnConvert.serialize(AsnConvert.parse(spki, SubjectPublicKeyInfo)));
  } catch (err) {
    throw bad("malformed SubjectPublicKeyInfo", err);
  }
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] as number) ^ (b[i] as number);
  return diff === 0;
}
