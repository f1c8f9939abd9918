import "reflect-metadata";
import { X509Crl } from "@peculiar/x509";
import { MtlsError } from "../errors.js";
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
import { derBlocks, pemEncode } from "./pem.js";
import type { Signer } from "./signer.js";

/** RFC 5280 §5.3.1 CRLReason codes (7 is unused; removeFromCRL only appears in delta CRLs). */
export const REVOCATION_REASONS = {
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
  privilegeWithdrawn: 9,
  aACompromise: 10,
} as const;
export type ReasonName = keyof typeof REVOCATION_REASONS;

export function parseReason(name: string): ReasonName {
  if (!(name in REVOCATION_REASONS)) {
    throw new MtlsError(
      "E_USAGE",
      `unknown revocation reason "${name}" (one of ${Object.keys(REVOCATION_REASONS).join(", ")})`,
    );
  }
  return name as ReasonName;
}

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
    ...(revoked.length ? [derSequence(...revoked)] : []),
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
}

const REASON_BY_CODE = new Map<number, ReasonName>(
  Object.entries(REVOCATION_REASONS).map(([k, v]) => [v, k as ReasonName]),
);

/** Parses every CRL in PEM or DER input. */
export function parseCrls(data: Uint8Array | string): CrlInfo[] {
  return derBlocks(data, ["X509 CRL", "CRL"], "CRL").map((der) => {
    let crl: X509Crl;
    try {
      crl = new X509Crl(der);
    } catch (err) {
      throw new MtlsError("E_BAD_INPUT", "malformed CRL", { cause: err });
    }
    const numberExt = crl.getExtension("2.5.29.20");
    let crlNumber: number | null = null;
    if (numberExt) {
      const v = new Uint8Array(numberExt.value);
      crlNumber = Number.parseInt(Buffer.from(v.subarray(2)).toString("hex") || "0", 16);
    }
    return {
      issuer: crl.issuer,
      thisUpdate: crl.thisUpdate,
      nextUpdate: crl.nextUpdate ?? null,
      crlNumber,
      entries: crl.entries.map((e) => ({
        serial: e.serialNumber.toLowerCase(),
        revokedAt: e.revocationDate,
        reason: REASON_BY_CODE.get(e.reason ?? 0) ?? "unspecified",
      })),
      der,
    };
  });
}
