import { MtlsError } from "../errors.js";

/**
 * The few fields of a CRL a publisher compares (whose is newer, when it is due), read without
 * walking its entries: the revokedCertificates list is skipped by its length, so a CRL of 100,000
 * entries costs what an empty one does. Nothing is verified here (see crl-index.ts for that).
 */
export interface CrlHeader {
  /** DER of the issuer Name. */
  issuerDer: Uint8Array;
  thisUpdate: Date;
  nextUpdate: Date | null;
  crlNumber: bigint | null;
}

const bad = (why: string) => new MtlsError("E_BAD_INPUT", `malformed CRL: ${why}`);

function tlv(buf: Uint8Array, pos: number, limit: number) {
  if (pos + 2 > limit) throw bad("truncated");
  const tag = buf[pos] as number;
  let len = buf[pos + 1] as number;
  let p = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || p + n > limit) throw bad("bad length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (buf[p + i] as number);
    p += n;
  }
  if (p + len > limit) throw bad("truncated");
  return { tag, start: pos, contentStart: p, end: p + len };
}

function time(buf: Uint8Array, t: { tag: number; contentStart: number; end: number }): Date {
  const text = Buffer.from(buf.subarray(t.contentStart, t.end)).toString("latin1");
  const m =
    t.tag === 0x17
      ? /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text)
      : /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:\.\d+)?Z$/.exec(text);
  if (!m) throw bad("bad time");
  let year = Number(m[1]);
  if (t.tag === 0x17) year += year >= 50 ? 1900 : 2000;
  return new Date(Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
}

const isTime = (tag: number) => tag === 0x17 || tag === 0x18;
const CRL_NUMBER = "551d14";

/** Reads the header fields of one DER CertificateList. */
export function readCrlHeader(der: Uint8Array): CrlHeader {
  const top = tlv(der, 0, der.length);
  if (top.tag !== 0x30) throw bad("expected a SEQUENCE");
  const tbs = tlv(der, top.contentStart, top.end);
  if (tbs.tag !== 0x30) throw bad("expected a TBSCertList");
  let t = tlv(der, tbs.contentStart, tbs.end);
  if (t.tag === 0x02) t = tlv(der, t.end, tbs.end); // version
  if (t.tag !== 0x30) throw bad("expected a signature algorithm");
  const issuer = tlv(der, t.end, tbs.end);
  if (issuer.tag !== 0x30) throw bad("expected the issuer");
  const thisT = tlv(der, issuer.end, tbs.end);
  if (!isTime(thisT.tag)) throw bad("expected thisUpdate");
  const out: CrlHeader = {
    issuerDer: der.subarray(issuer.start, issuer.end),
    thisUpdate: time(der, thisT),
    nextUpdate: null,
    crlNumber: null,
  };
  for (let p = thisT.end; p < tbs.end; ) {
    t = tlv(der, p, tbs.end);
    if (isTime(t.tag)) out.nextUpdate = time(der, t);
    else if (t.tag === 0xa0) {
      const exts = tlv(der, t.contentStart, t.end);
      for (let q = exts.contentStart; q < exts.end; ) {
        const ext = tlv(der, q, exts.end);
        const oid = tlv(der, ext.contentStart, ext.end);
        if (Buffer.from(der.subarray(oid.contentStart, oid.end)).toString("hex") === CRL_NUMBER) {
          let v = tlv(der, oid.end, ext.end);
          if (v.tag === 0x01) v = tlv(der, v.end, ext.end);
          const n = tlv(der, v.contentStart, v.end);
          const hex = Buffer.from(der.subarray(n.contentStart, n.end)).toString("hex");
          out.crlNumber = BigInt(`0x${hex || "0"}`);
        }
        q = ext.end;
      }
    }
    p = t.end; // the revoked entries are skipped whole
  }
  return out;
}
