import { MtlsError } from "../errors.js";
import type { CertIdHash } from "./ocsp.js";
import { REVOCATION_REASONS, type ReasonName } from "./revocation-reasons.js";
import type { Signer } from "./signer.js";

/**
 * The responder side of OCSP (RFC 6960) on raw DER, for speed: a strict reader of OCSPRequest that
 * hands back each CertID byte for byte, and an encoder of signed BasicOCSPResponses assembled from
 * pre-encoded parts. No asn1js/asn1-schema objects on this path: a cached answer costs a request
 * walk and a Map lookup, a fresh one little more than its signature.
 */

/** Nonce length limits of RFC 8954 §2.1: anything else is answered malformedRequest. */
export const OCSP_NONCE_MIN = 1;
export const OCSP_NONCE_MAX = 32;

export interface RequestedCertId {
  /** The CertID's DER, byte for byte: the answer repeats it, and it keys the response cache. */
  der: Uint8Array;
  /** The hash algorithm, or undefined when it is not one we compute (then no issuer can match). */
  hash: CertIdHash | undefined;
  issuerNameHash: Uint8Array;
  issuerKeyHash: Uint8Array;
  /** Lowercase hex without leading zeros (see normalizeSerial). */
  serial: string;
}

export interface OcspRequestInfo {
  certIds: RequestedCertId[];
  /** The extnValue of the nonce extension, to echo byte for byte. */
  nonceExtnValue?: Uint8Array;
  /** The nonce itself (the OCTET STRING inside extnValue, or extnValue when it is not wrapped). */
  nonce?: Uint8Array;
  /** The request carried optionalSignature (parsed, never verified: we answer anyone). */
  signed: boolean;
}

const malformed = (why: string): MtlsError => new MtlsError("E_BAD_INPUT", `malformed OCSP request: ${why}`);

interface Tlv {
  tag: number;
  start: number;
  contentStart: number;
  end: number;
}

/** One DER TLV at `pos`, within `limit`: definite lengths of at most 4 octets, low tag numbers. */
function tlv(buf: Uint8Array, pos: number, limit: number): Tlv {
  if (pos + 2 > limit) throw malformed("truncated");
  const tag = buf[pos] as number;
  if ((tag & 0x1f) === 0x1f) throw malformed("high tag number");
  let len = buf[pos + 1] as number;
  let p = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw malformed("bad length");
    if (p + n > limit) throw malformed("truncated");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (buf[p + i] as number);
    p += n;
  }
  if (p + len > limit) throw malformed("truncated");
  return { tag, start: pos, contentStart: p, end: p + len };
}

function want(buf: Uint8Array, pos: number, limit: number, tag: number, what: string): Tlv {
  const t = tlv(buf, pos, limit);
  if (t.tag !== tag) throw malformed(`expected ${what}`);
  return t;
}

const hex = (buf: Uint8Array, from: number, to: number): string =>
  Buffer.from(buf.buffer, buf.byteOffset + from, to - from).toString("hex");

/** Lowercase hex of an INTEGER's content octets without leading zeros (normalizeSerial's form). */
function serialHex(buf: Uint8Array, from: number, to: number): string {
  let i = from;
  while (i < to - 1 && buf[i] === 0) i++;
  const h = hex(buf, i, to);
  return h.length > 1 && h.charCodeAt(0) === 0x30 ? h.slice(1) : h;
}

/** Hash algorithm OIDs by their content octets in hex. */
const HASH_BY_OID_HEX = new Map<string, CertIdHash>([
  ["2b0e03021a", "sha1"],
  ["608648016503040201", "sha256"],
  ["608648016503040202", "sha384"],
  ["608648016503040203", "sha512"],
]);
/** id-pkix-ocsp-nonce 1.3.6.1.5.5.7.48.1.2 */
const NONCE_OID_HEX = "2b0601050507300102";

/**
 * Reads an OCSPRequest. Throws E_BAD_INPUT (for a malformedRequest answer) on anything that is not
 * one DER OCSPRequest with 1..maxCertIds CertIDs and at most one nonce of 1..32 octets.
 */
export function readOcspRequest(der: Uint8Array, maxCertIds = 64): OcspRequestInfo {
  const top = want(der, 0, der.length, 0x30, "an OCSPRequest");
  if (top.end !== der.length) throw malformed("trailing bytes");
  const tbs = want(der, top.contentStart, top.end, 0x30, "a TBSRequest");
  let signed = false;
  if (tbs.end < top.end) {
    const sig = tlv(der, tbs.end, top.end);
    if (sig.tag !== 0xa0 || sig.end !== top.end) throw malformed("unexpected field after TBSRequest");
    signed = true;
  }
  let p = tbs.contentStart;
  let t = tlv(der, p, tbs.end);
  if (t.tag === 0xa0) {
    // version [0] EXPLICIT INTEGER, v1(0) only
    const v = want(der, t.contentStart, t.end, 0x02, "a version");
    if (v.end - v.contentStart !== 1 || der[v.contentStart] !== 0) throw malformed("unsupported version");
    p = t.end;
    t = tlv(der, p, tbs.end);
  }
  if (t.tag === 0xa1) {
    // requestorName [1] EXPLICIT GeneralName: skipped
    p = t.end;
    t = tlv(der, p, tbs.end);
  }
  if (t.tag !== 0x30) throw malformed("expected the requestList");
  const certIds: RequestedCertId[] = [];
  for (let q = t.contentStart; q < t.end; ) {
    if (certIds.length >= maxCertIds) throw malformed(`more than ${maxCertIds} certificates in one request`);
    const req = want(der, q, t.end, 0x30, "a Request");
    const id = want(der, req.contentStart, req.end, 0x30, "a CertID");
    if (id.end < req.end) {
      const ext = tlv(der, id.end, req.end);
      if (ext.tag !== 0xa0 || ext.end !== req.end) throw malformed("unexpected field in a Request");
    }
    certIds.push(readCertId(der, id));
    q = req.end;
  }
  if (certIds.length === 0) throw malformed("no certificate asked about");
  const out: OcspRequestInfo = { certIds, signed };
  p = t.end;
  if (p < tbs.end) {
    const exts = tlv(der, p, tbs.end);
    if (exts.tag !== 0xa2 || exts.end !== tbs.end) throw malformed("unexpected field in TBSRequest");
    const seq = want(der, exts.contentStart, exts.end, 0x30, "Extensions");
    for (let q = seq.contentStart; q < seq.end; ) {
      const ext = want(der, q, seq.end, 0x30, "an Extension");
      const oid = want(der, ext.contentStart, ext.end, 0x06, "an extension OID");
      let v = tlv(der, oid.end, ext.end);
      if (v.tag === 0x01) v = tlv(der, v.end, ext.end);
      if (v.tag !== 0x04 || v.end !== ext.end) throw malformed("bad extension");
      if (hex(der, oid.contentStart, oid.end) === NONCE_OID_HEX) {
        if (out.nonceExtnValue) throw malformed("two nonces");
        const value = der.subarray(v.contentStart, v.end);
        out.nonceExtnValue = value;
        out.nonce = innerOctetString(value) ?? value;
        if (out.nonce.length < OCSP_NONCE_MIN || out.nonce.length > OCSP_NONCE_MAX) {
          throw malformed(`a nonce of ${out.nonce.length} octets (RFC 8954 allows 1 to 32)`);
        }
      }
      q = ext.end;
    }
  }
  return out;
}

function readCertId(der: Uint8Array, id: Tlv): RequestedCertId {
  const alg = want(der, id.contentStart, id.end, 0x30, "a hash AlgorithmIdentifier");
  const oid = want(der, alg.contentStart, alg.end, 0x06, "a hash algorithm OID");
  if (oid.end < alg.end) {
    const params = tlv(der, oid.end, alg.end);
    if (params.end !== alg.end) throw malformed("bad hash algorithm parameters");
  }
  const name = want(der, alg.end, id.end, 0x04, "issuerNameHash");
  const key = want(der, name.end, id.end, 0x04, "issuerKeyHash");
  const serial = want(der, key.end, id.end, 0x02, "serialNumber");
  if (serial.end !== id.end) throw malformed("trailing bytes in a CertID");
  if (serial.end === serial.contentStart) throw malformed("empty serial number");
  return {
    der: der.subarray(id.start, id.end),
    hash: HASH_BY_OID_HEX.get(hex(der, oid.contentStart, oid.end)),
    issuerNameHash: der.subarray(name.contentStart, name.end),
    issuerKeyHash: der.subarray(key.contentStart, key.end),
    serial: serialHex(der, serial.contentStart, serial.end),
  };
}

/** The content of `value` when it is exactly one DER OCTET STRING, else undefined. */
function innerOctetString(value: Uint8Array): Uint8Array | undefined {
  if (value[0] !== 0x04) return undefined;
  try {
    const t = tlv(value, 0, value.length);
    return t.end === value.length ? value.subarray(t.contentStart, t.end) : undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/**
 * DER TLV of already-encoded parts, into one buffer (Node's pooled allocation for small ones). The
 * shared derTlv builds arrays per call; answers are encoded per request, so this one does not.
 */
function enc(tag: number, ...parts: Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const head = len < 0x80 ? 2 : len < 0x100 ? 3 : len < 0x10000 ? 4 : 5;
  const out = Buffer.allocUnsafe(head + len);
  out[0] = tag;
  if (head === 2) out[1] = len;
  else {
    out[1] = 0x80 | (head - 2);
    for (let i = head - 1, v = len; i >= 2; i--, v >>>= 8) out[i] = v & 0xff;
  }
  let p = head;
  for (const part of parts) {
    out.set(part, p);
    p += part.length;
  }
  return out;
}

const seq = (...parts: Uint8Array[]): Uint8Array => enc(0x30, ...parts);
const explicit = (n: number, ...parts: Uint8Array[]): Uint8Array => enc(0xa0 | n, ...parts);
const octets = (b: Uint8Array): Uint8Array => enc(0x04, b);
const ZERO = new Uint8Array([0]);

export type OcspErrorStatus =
  | "malformedRequest"
  | "internalError"
  | "tryLater"
  | "sigRequired"
  | "unauthorized";

const ERROR_CODES: Record<OcspErrorStatus, number> = {
  malformedRequest: 1,
  internalError: 2,
  tryLater: 3,
  sigRequired: 5,
  unauthorized: 6,
};

/** An unsigned OCSPResponse with an error status and no responseBytes (RFC 6960 §4.2.1). */
export function ocspErrorResponse(status: OcspErrorStatus): Uint8Array {
  return new Uint8Array([0x30, 0x03, 0x0a, 0x01, ERROR_CODES[status]]);
}

/** GeneralizedTime YYYYMMDDHHMMSSZ, whole seconds (RFC 6960 times are always GeneralizedTime). */
export function derGeneralizedTime(date: Date): Uint8Array {
  const out = new Uint8Array(17);
  out[0] = 0x18;
  out[1] = 15;
  writeDigits(out, 2, date.getUTCFullYear(), 4);
  writeDigits(out, 6, date.getUTCMonth() + 1, 2);
  writeDigits(out, 8, date.getUTCDate(), 2);
  writeDigits(out, 10, date.getUTCHours(), 2);
  writeDigits(out, 12, date.getUTCMinutes(), 2);
  writeDigits(out, 14, date.getUTCSeconds(), 2);
  out[16] = 0x5a; // Z
  return out;
}

function writeDigits(out: Uint8Array, at: number, value: number, n: number): void {
  let v = value;
  for (let i = n - 1; i >= 0; i--) {
    out[at + i] = 0x30 + (v % 10);
    v = Math.floor(v / 10);
  }
}

export interface SingleAnswer {
  /** The CertID exactly as the request had it. */
  certIdDer: Uint8Array;
  status: "good" | "revoked" | "unknown";
  revokedAt?: Date;
  /** Omitted from the answer for "unspecified", as on the CRL. */
  reason?: ReasonName;
  thisUpdate: Date;
  nextUpdate?: Date;
}

const GOOD = new Uint8Array([0x80, 0x00]);
const UNKNOWN = new Uint8Array([0x82, 0x00]);

/** One SingleResponse (RFC 6960 §4.2.1). */
export function encodeSingleResponse(a: SingleAnswer): Uint8Array {
  let status: Uint8Array;
  if (a.status === "revoked") {
    const code = a.reason ? REVOCATION_REASONS[a.reason] : 0;
    const reason = code ? [explicit(0, new Uint8Array([0x0a, 0x01, code]))] : [];
    // revoked [1] IMPLICIT RevokedInfo (a SEQUENCE): the tag replaces 0x30 with 0xa1.
    status = enc(0xa1, derGeneralizedTime(a.revokedAt ?? a.thisUpdate), ...reason);
  } else {
    status = a.status === "good" ? GOOD : UNKNOWN;
  }
  return seq(
    a.certIdDer,
    status,
    derGeneralizedTime(a.thisUpdate),
    ...(a.nextUpdate ? [explicit(0, derGeneralizedTime(a.nextUpdate))] : []),
  );
}

/** ResponderID byKey: [2] EXPLICIT KeyHash (OCTET STRING of SHA-1 of the responder's key bits). */
export const responderIdByKey = (keyHash: Uint8Array): Uint8Array => explicit(2, octets(keyHash));

/** The certs field of a BasicOCSPResponse: [0] EXPLICIT SEQUENCE OF Certificate. */
export const responseCerts = (certs: Uint8Array[]): Uint8Array => explicit(0, seq(...certs));

const OID_NONCE = new Uint8Array([0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02]);
/** id-pkix-ocsp-basic 1.3.6.1.5.5.7.48.1.1 */
const OID_BASIC = new Uint8Array([0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01]);

export interface ResponseParts {
  /** responderIdByKey(...) */
  responderId: Uint8Array;
  producedAt: Date;
  /** encodeSingleResponse(...) of each CertID, in the request's order. */
  singles: Uint8Array[];
  /** Echoed byte for byte as the response's nonce extension. */
  nonceExtnValue?: Uint8Array | undefined;
  /** responseCerts(...) or nothing. */
  certs?: Uint8Array | undefined;
}

/** A successful OCSPResponse carrying a BasicOCSPResponse signed by `signer`. */
export async function signOcspResponse(parts: ResponseParts, signer: Signer): Promise<Uint8Array> {
  const exts = parts.nonceExtnValue ? [explicit(1, seq(seq(OID_NONCE, octets(parts.nonceExtnValue))))] : [];
  const tbs = seq(parts.responderId, derGeneralizedTime(parts.producedAt), seq(...parts.singles), ...exts);
  const signature = await signer.sign(tbs);
  const basic = seq(
    tbs,
    signer.algorithmDer,
    enc(0x03, ZERO, signature),
    ...(parts.certs ? [parts.certs] : []),
  );
  // OCSPResponse { responseStatus successful(0), responseBytes [0] EXPLICIT { id-pkix-ocsp-basic, OCTET STRING } }
  return seq(new Uint8Array([0x0a, 0x01, 0x00]), explicit(0, seq(OID_BASIC, octets(basic))));
}
