import { MtlsError } from "../errors.js";
import type { CertInfo } from "./certinfo.js";
import { nameToString } from "./names.js";
import { derBlocks } from "./pem.js";
import { REVOCATION_REASONS } from "./revocation-reasons.js";
import { verifySignature } from "./signed-data.js";

/**
 * CRLs for relying parties: a direct DER walk that indexes the revoked serials in a Map, for CRLs of
 * any size. (`parseCrls` goes through asn1js, which refuses inputs of more than 10,000 ASN.1 nodes,
 * i.e. CRLs beyond roughly 1,500 entries, and builds an object per entry.) The signature is checked
 * separately against the issuer a caller trusts, with `crlSignedBy`.
 */
export interface CrlIndex {
  der: Uint8Array;
  /** The issuer Name, DER, and as CertInfo.subject writes it. */
  issuerDer: Uint8Array;
  issuer: string;
  thisUpdate: Date;
  nextUpdate: Date | null;
  crlNumber: bigint | null;
  /** Revoked serials (normalized lowercase hex, no leading zeros) to their entry. */
  entries: Map<string, { revokedAt: Date; reason: string }>;
  /** What the signature covers, its algorithm OID and value. */
  tbs: Uint8Array;
  signatureAlgorithm: string;
  signature: Uint8Array;
}

const bad = (why: string): MtlsError => new MtlsError("E_BAD_INPUT", `malformed CRL: ${why}`);

interface Tlv {
  tag: number;
  /** Offset of the tag byte. */
  start: number;
  contentStart: number;
  end: number;
}

function readTlv(buf: Uint8Array, pos: number, limit: number): Tlv {
  if (pos + 2 > limit) throw bad("truncated");
  const tag = buf[pos] as number;
  if ((tag & 0x1f) === 0x1f) throw bad("unexpected high tag number");
  let len = buf[pos + 1] as number;
  let p = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw bad("unsupported length encoding");
    if (p + n > limit) throw bad("truncated");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (buf[p + i] as number);
    p += n;
  }
  if (p + len > limit) throw bad("truncated");
  return { tag, start: pos, contentStart: p, end: p + len };
}

function expect(buf: Uint8Array, pos: number, limit: number, tag: number, what: string): Tlv {
  const t = readTlv(buf, pos, limit);
  if (t.tag !== tag) throw bad(`expected ${what}`);
  return t;
}

const content = (buf: Uint8Array, t: Tlv): Uint8Array => buf.subarray(t.contentStart, t.end);

function oidString(bytes: Uint8Array): string {
  const parts: number[] = [];
  let v = 0;
  for (const b of bytes) {
    v = v * 128 + (b & 0x7f);
    if (!(b & 0x80)) {
      if (parts.length === 0) parts.push(v < 80 ? Math.floor(v / 40) : 2, v < 80 ? v % 40 : v - 80);
      else parts.push(v);
      v = 0;
    }
  }
  return parts.join(".");
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

function hex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += HEX[b];
  return out;
}

const normalizeHex = (h: string): string => h.replace(/^0+/, "") || "0";

/** UTCTime (YYMMDDHHMMSSZ, 1950-2049) or GeneralizedTime (YYYYMMDDHHMMSS[.f]Z), read from the bytes. */
function digits(buf: Uint8Array, at: number, n: number): number {
  let v = 0;
  for (let i = 0; i < n; i++) {
    const d = (buf[at + i] as number) - 0x30;
    if (d < 0 || d > 9) throw bad("bad time");
    v = v * 10 + d;
  }
  return v;
}

function readTime(buf: Uint8Array, t: Tlv): Date {
  const c = t.contentStart;
  const len = t.end - c;
  let year: number;
  let p: number;
  if (t.tag === 0x17) {
    if (len !== 13 || buf[t.end - 1] !== 0x5a) throw bad("bad UTCTime");
    const yy = digits(buf, c, 2);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
    p = c + 2;
  } else if (t.tag === 0x18) {
    if (len < 15 || buf[t.end - 1] !== 0x5a) throw bad("bad GeneralizedTime");
    year = digits(buf, c, 4);
    p = c + 4;
    if (len > 15 && buf[c + 14] !== 0x2e) throw bad("bad GeneralizedTime");
  } else {
    throw bad("expected a time");
  }
  return new Date(
    Date.UTC(
      year,
      digits(buf, p, 2) - 1,
      digits(buf, p + 2, 2),
      digits(buf, p + 4, 2),
      digits(buf, p + 6, 2),
      digits(buf, p + 8, 2),
    ),
  );
}

const isTime = (tag: number) => tag === 0x17 || tag === 0x18;

const REASON_NAMES = new Map<number, string>([
  ...Object.entries(REVOCATION_REASONS).map(([k, v]) => [v, k] as [number, string]),
  [8, "removeFromCRL"],
]);

/** Extensions a CRL may carry that we understand; any other critical one makes the CRL unusable. */
const KNOWN_CRL_EXTENSIONS = new Set([
  "2.5.29.20", // cRLNumber
  "2.5.29.35", // authorityKeyIdentifier
  "2.5.29.28", // issuingDistributionPoint
  "2.5.29.46", // freshestCRL
]);

/** Walks Extensions (SEQUENCE OF Extension), calling `fn(oid, critical, extnValue)`. */
function eachExtension(
  buf: Uint8Array,
  seq: Tlv,
  fn: (oid: string, critical: boolean, value: Uint8Array) => void,
): void {
  for (let p = seq.contentStart; p < seq.end; ) {
    const ext = expect(buf, p, seq.end, 0x30, "an extension");
    let q = ext.contentStart;
    const oid = expect(buf, q, ext.end, 0x06, "an extension OID");
    q = oid.end;
    let critical = false;
    let t = readTlv(buf, q, ext.end);
    if (t.tag === 0x01) {
      critical = (buf[t.contentStart] ?? 0) !== 0;
      t = readTlv(buf, t.end, ext.end);
    }
    if (t.tag !== 0x04) throw bad("expected an extension value");
    fn(oidString(content(buf, oid)), critical, content(buf, t));
    p = ext.end;
  }
}

const REASON_CODE_OID = [0x55, 0x1d, 0x15]; // 2.5.29.21

/** The reasonCode of an entry's extensions; E_BAD_INPUT for a critical one we cannot honour. */
function entryReason(buf: Uint8Array, seq: Tlv): string {
  let reason = "unspecified";
  for (let p = seq.contentStart; p < seq.end; ) {
    const ext = expect(buf, p, seq.end, 0x30, "an extension");
    const oid = expect(buf, ext.contentStart, ext.end, 0x06, "an extension OID");
    let t = readTlv(buf, oid.end, ext.end);
    let critical = false;
    if (t.tag === 0x01) {
      critical = (buf[t.contentStart] ?? 0) !== 0;
      t = readTlv(buf, t.end, ext.end);
    }
    if (t.tag !== 0x04) throw bad("expected an extension value");
    const isReason =
      oid.end - oid.contentStart === 3 &&
      buf[oid.contentStart] === REASON_CODE_OID[0] &&
      buf[oid.contentStart + 1] === REASON_CODE_OID[1] &&
      buf[oid.contentStart + 2] === REASON_CODE_OID[2];
    if (isReason) {
      const e = expect(buf, t.contentStart, t.end, 0x0a, "a reason code");
      const code = buf[e.contentStart] ?? 0;
      reason = REASON_NAMES.get(code) ?? `reason ${code}`;
    } else if (critical) {
      // certificateIssuer (indirect CRLs) and anything else we cannot honour.
      throw bad(`unsupported critical entry extension ${oidString(content(buf, oid))}`);
    }
    p = ext.end;
  }
  return reason;
}

/** Indexes one DER CertificateList. */
export function indexCrl(der: Uint8Array): CrlIndex {
  const top = expect(der, 0, der.length, 0x30, "a CertificateList SEQUENCE");
  if (top.end !== der.length) throw bad("trailing bytes");
  const tbsT = expect(der, top.contentStart, top.end, 0x30, "a TBSCertList");
  const algT = expect(der, tbsT.end, top.end, 0x30, "a signature algorithm");
  const sigT = expect(der, algT.end, top.end, 0x03, "a signature BIT STRING");
  const sigAlgOid = expect(der, algT.contentStart, algT.end, 0x06, "an algorithm OID");

  let p = tbsT.contentStart;
  let t = readTlv(der, p, tbsT.end);
  if (t.tag === 0x02) {
    const v = content(der, t);
    if (v.length !== 1 || v[0] !== 1) throw bad("unsupported version");
    p = t.end;
    t = readTlv(der, p, tbsT.end);
  }
  if (t.tag !== 0x30) throw bad("expected the inner signature algorithm");
  const innerAlg = expect(der, t.contentStart, t.end, 0x06, "an algorithm OID");
  if (oidString(content(der, innerAlg)) !== oidString(content(der, sigAlgOid))) {
    throw bad("the inner and outer signature algorithms differ");
  }
  const issuerT = expect(der, t.end, tbsT.end, 0x30, "the issuer Name");
  const thisT = readTlv(der, issuerT.end, tbsT.end);
  if (!isTime(thisT.tag)) throw bad("expected thisUpdate");
  const thisUpdate = readTime(der, thisT);
  p = thisT.end;
  let nextUpdate: Date | null = null;
  const entries = new Map<string, { revokedAt: Date; reason: string }>();
  let crlNumber: bigint | null = null;
  while (p < tbsT.end) {
    t = readTlv(der, p, tbsT.end);
    if (isTime(t.tag) && nextUpdate === null && entries.size === 0) {
      nextUpdate = readTime(der, t);
    } else if (t.tag === 0x30) {
      for (let q = t.contentStart; q < t.end; ) {
        const entry = expect(der, q, t.end, 0x30, "a revoked certificate entry");
        const serialT = expect(der, entry.contentStart, entry.end, 0x02, "a serial number");
        const dateT = readTlv(der, serialT.end, entry.end);
        if (!isTime(dateT.tag)) throw bad("expected a revocation date");
        const reason =
          dateT.end < entry.end
            ? entryReason(der, expect(der, dateT.end, entry.end, 0x30, "entry extensions"))
            : "unspecified";
        entries.set(normalizeHex(hex(content(der, serialT))), { revokedAt: readTime(der, dateT), reason });
        q = entry.end;
      }
    } else if (t.tag === 0xa0) {
      const exts = expect(der, t.contentStart, t.end, 0x30, "CRL extensions");
      eachExtension(der, exts, (oid, critical, value) => {
        if (oid === "2.5.29.20") {
          const n = expect(value, 0, value.length, 0x02, "a CRL number");
          crlNumber = BigInt(`0x${hex(content(value, n)) || "0"}`);
        } else if (oid === "2.5.29.27") {
          throw bad("delta CRLs are not supported");
        } else if (critical && !KNOWN_CRL_EXTENSIONS.has(oid)) {
          throw bad(`unsupported critical CRL extension ${oid}`);
        }
      });
    } else {
      throw bad(`unexpected field (tag 0x${t.tag.toString(16)})`);
    }
    p = t.end;
  }
  const sig = content(der, sigT);
  if (sig[0] !== 0) throw bad("signature with unused bits");
  const issuerDer = der.subarray(issuerT.start, issuerT.end);
  let issuer: string;
  try {
    issuer = nameToString(issuerDer);
  } catch {
    throw bad("unreadable issuer name");
  }
  return {
    der,
    issuerDer,
    issuer,
    thisUpdate,
    nextUpdate,
    crlNumber,
    entries,
    tbs: der.subarray(tbsT.start, tbsT.end),
    signatureAlgorithm: oidString(content(der, sigAlgOid)),
    signature: sig.subarray(1),
  };
}

/** Every CRL in PEM or DER input, indexed. E_BAD_INPUT when there is none or one is malformed. */
export function indexCrls(data: Uint8Array | string): CrlIndex[] {
  return derBlocks(data, ["X509 CRL", "CRL"], "CRL").map(indexCrl);
}

/**
 * Whether `issuer` signed the CRL: same issuer name and a signature that verifies with its key.
 * False (not an error) for a signature algorithm we refuse.
 */
export function crlSignedBy(crl: CrlIndex, issuer: CertInfo): boolean {
  const sameName =
    Buffer.from(crl.issuerDer).equals(Buffer.from(issuer.subjectDer)) || crl.issuer === issuer.subject;
  if (!sameName) return false;
  try {
    return verifySignature(crl.signatureAlgorithm, crl.tbs, crl.signature, issuer.spki, "the CRL");
  } catch {
    return false;
  }
}
