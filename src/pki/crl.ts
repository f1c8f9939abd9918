import { type CrlIndex, indexCrls } from "./crl-index.js";
import {
  derBitString,
  derEnumerated,
  derExplicit,
  derOctetString,
  derPositiveInteger,
  derSequence,
  derSmallInteger,
  derTime,
  derTlv,
} from "./der.js";
import { keyIdentifier } from "./extensions.js";
import { pemEncode } from "./pem.js";
import { REVOCATION_REASONS, type ReasonName } from "./revocation-reasons.js";
import type { Signer } from "./signer.js";

export { parseReason, REVOCATION_REASONS, type ReasonName } from "./revocation-reasons.js";

export interface CrlEntry {
  serial: string;
  revokedAt: Date;
  reason: ReasonName;
}

export interface CrlTemplate {
  /** DER Name of the issuing CA (its certificate's subject, byte for byte). */
  issuer: Uint8Array;
  /** SubjectPublicKeyInfo of the issuing CA, for the Authority Key Identifier. */
  issuerSpki: Uint8Array;
  thisUpdate: Date;
  nextUpdate: Date;
  /** Strictly increasing per issuer, never reused. */
  crlNumber: number;
  entries: CrlEntry[];
}

// Extension wrapper: SEQUENCE { extnID, [critical], extnValue OCTET STRING }. The OIDs are pre-encoded.
const OID_CRL_NUMBER = new Uint8Array([0x06, 0x03, 0x55, 0x1d, 0x14]);
const OID_REASON_CODE = new Uint8Array([0x06, 0x03, 0x55, 0x1d, 0x15]);
const OID_AKI = new Uint8Array([0x06, 0x03, 0x55, 0x1d, 0x23]);

const extension = (oid: Uint8Array, value: Uint8Array) => derSequence(oid, derOctetString(value));

/** Builds and signs a version 2 CRL (RFC 5280 §5) with CRL Number and AKI; reasonCode omitted for unspecified. */
export async function buildCrl(tpl: CrlTemplate, signer: Signer): Promise<Uint8Array> {
  const second = (d: Date) => new Date(Math.floor(d.getTime() / 1000) * 1000);
  const revoked = tpl.entries.map((e) => {
    const code = REVOCATION_REASONS[e.reason];
    const entryExts = code === 0 ? [] : [derSequence(extension(OID_REASON_CODE, derEnumerated(code)))];
    return derSequence(
      derPositiveInteger(Buffer.from(e.serial, "hex")),
      derTime(second(e.revokedAt)),
      ...entryExts,
    );
  });
  const aki = derSequence(derTlv(0x80, Buffer.from(keyIdentifier(tpl.issuerSpki), "hex")));
  const tbs = derSequence(
    derSmallInteger(1), // v2
    signer.algorithmDer,
    tpl.issuer,
    derTime(second(tpl.thisUpdate)),
    derTime(second(tpl.nextUpdate)),
    // Concatenated, not spread into a call: a CRL may hold 100,000 entries.
    ...(revoked.length ? [derTlv(0x30, concatBytes(revoked))] : []),
    derExplicit(
      0,
      derSequence(extension(OID_AKI, aki), extension(OID_CRL_NUMBER, derSmallInteger(tpl.crlNumber))),
    ),
  );
  const signature = await signer.sign(tbs);
  return derSequence(tbs, signer.algorithmDer, derBitString(signature));
}

/** PEM with the label OpenSSL and Node expect ("X509 CRL", not the "CRL" some libraries write). */
export const crlToPem = (der: Uint8Array): string => pemEncode("X509 CRL", der);

export interface CrlInfo {
  issuer: string;
  thisUpdate: Date;
  nextUpdate: Date | null;
  crlNumber: number | null;
  entries: CrlEntry[];
  der: Uint8Array;
  /** The serial → entry index, and what `crlSignedBy` needs to check the signature. */
  index: CrlIndex;
}

/**
 * Parses every CRL in PEM or DER input. Built on the direct DER walk of crl-index.ts, so CRLs of
 * any size parse (asn1js-based parsers refuse beyond ~1,500 entries).
 */
export function parseCrls(data: Uint8Array | string): CrlInfo[] {
  return indexCrls(data).map((index) => ({
    issuer: index.issuer,
    thisUpdate: index.thisUpdate,
    nextUpdate: index.nextUpdate,
    crlNumber: index.crlNumber === null ? null : Number(index.crlNumber),
    entries: [...index.entries].map(([serial, e]) => ({
      serial,
      revokedAt: e.revokedAt,
      reason: (Object.hasOwn(REVOCATION_REASONS, e.reason) ? e.reason : "unspecified") as ReasonName,
    })),
    der: index.der,
    index,
  }));
}

function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}
