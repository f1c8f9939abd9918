import { randomBytes } from "node:crypto";
import {
  derBitString,
  derExplicit,
  derPositiveInteger,
  derSequence,
  derSmallInteger,
  derTime,
} from "./der.js";
import type { ExtensionDer } from "./extensions.js";
import type { Signer } from "./signer.js";

export interface CertificateTemplate {
  /** Serial as lowercase hex (see randomSerial). */
  serial: string;
  /** DER Name of the issuer, byte for byte the subject of the issuing certificate. */
  issuer: Uint8Array;
  /** DER Name of the subject. */
  subject: Uint8Array;
  notBefore: Date;
  notAfter: Date;
  /** SubjectPublicKeyInfo (DER) of the key being certified. */
  spki: Uint8Array;
  extensions: ExtensionDer[];
}

/**
 * 128-bit random serial, as hex. The top bit is cleared (the DER INTEGER stays positive with no pad
 * byte) and the next one set (it never shrinks below 16 octets), leaving 126 random bits: RFC 5280
 * and CA/B ask for at least 64.
 */
export function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] as number) & 0x7f) | 0x40;
  return bytes.toString("hex");
}

/**
 * Builds and signs an X.509 v3 certificate. The TBSCertificate is assembled from parts that are
 * already DER (names, key, extensions), which keeps issuance fast and byte-exact: the issuer name is
 * copied from the issuing certificate rather than re-encoded.
 */
export async function buildCertificate(tpl: CertificateTemplate, signer: Signer): Promise<Uint8Array> {
  if (!(tpl.notBefore < tpl.notAfter)) throw new RangeError("notBefore must be before notAfter");
  const tbs = derSequence(
    derExplicit(0, derSmallInteger(2)), // version v3
    derPositiveInteger(Buffer.from(tpl.serial, "hex")),
    signer.algorithmDer,
    tpl.issuer,
    derSequence(derTime(tpl.notBefore), derTime(tpl.notAfter)),
    tpl.subject,
    tpl.spki,
    ...(tpl.extensions.length ? [derExplicit(3, derSequence(...tpl.extensions))] : []),
  );
  const signature = await signer.sign(tbs);
  return derSequence(tbs, signer.algorithmDer, derBitString(signature));
}
