import "reflect-metadata";
import { createHash, X509Certificate as NodeX509 } from "node:crypto";
import {
  BasicOCSPResponse,
  CertID,
  id_kp_OCSPSigning,
  id_pkix_ocsp_basic,
  id_pkix_ocsp_nonce,
  OCSPRequest,
  OCSPResponse,
  OCSPResponseStatus,
  Request,
  type SingleResponse,
  TBSRequest,
} from "@peculiar/asn1-ocsp";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import { AlgorithmIdentifier, Extension, SubjectPublicKeyInfo } from "@peculiar/asn1-x509";
import { MtlsError } from "../errors.js";
import type { CertInfo } from "./certinfo.js";
import { REVOCATION_REASONS } from "./crl.js";
import { derOctetString } from "./der.js";
import { verifySignature } from "./signed-data.js";

/**
 * OCSP messages (RFC 6960), pure: building requests, and parsing and *verifying* responses as a
 * relying party must (§3.2): the responder is the issuer itself or a delegate the issuer certified
 * for OCSPSigning, the signature verifies, the answer is about our certificate, it is current, and
 * it echoes our nonce. The CertID helpers are shared with the responder side.
 */

export const OCSP_NONCE_OID = id_pkix_ocsp_nonce;
export const OCSP_SIGNING_EKU = id_kp_OCSPSigning;

/** Hash algorithms a CertID may use. SHA-1 is what every client sends (RFC 5019 §2.1.1). */
export type CertIdHash = "sha1" | "sha256" | "sha384" | "sha512";

const HASH_OIDS: Record<CertIdHash, string> = {
  sha1: "1.3.14.3.2.26",
  sha256: "2.16.840.1.101.3.4.2.1",
  sha384: "2.16.840.1.101.3.4.2.2",
  sha512: "2.16.840.1.101.3.4.2.3",
};
const HASH_BY_OID = new Map(Object.entries(HASH_OIDS).map(([k, v]) => [v, k as CertIdHash]));

/** Allowed clock skew for thisUpdate in the future. */
export const OCSP_CLOCK_SKEW_MS = 5 * 60_000;

export interface OcspAnswer {
  status: "good" | "revoked" | "unknown";
  thisUpdate: Date;
  nextUpdate?: Date;
  revokedAt?: Date;
  reason?: string;
}

const bad = (message: string, cause?: unknown): MtlsError =>
  new MtlsError("E_BAD_INPUT", message, cause === undefined ? undefined : { cause });

const bytes = (b: ArrayBuffer | ArrayBufferView): Uint8Array =>
  b instanceof ArrayBuffer ? new Uint8Array(b) : new Uint8Array(b.buffer, b.byteOffset, b.byteLength);

const equalBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));

/** Hex serial without leading zeros (a DER pad byte or a library's formatting never breaks a match). */
export function normalizeSerial(hex: string): string {
  return hex.toLowerCase().replace(/^0+/, "") || "0";
}

function serialMagnitude(hex: string): Uint8Array {
  const n = normalizeSerial(hex);
  return Buffer.from(n.length % 2 ? `0${n}` : n, "hex");
}

/** The serial an INTEGER's content octets denote, normalized. */
export const serialFromInteger = (content: ArrayBuffer | Uint8Array): string =>
  normalizeSerial(Buffer.from(bytes(content)).toString("hex"));

/** SHA-x of the issuer key: the subjectPublicKey BIT STRING's value, no tag, length or unused-bits byte. */
export function issuerKeyHash(issuerSpki: Uint8Array, hash: CertIdHash = "sha1"): Uint8Array {
  const info = AsnConvert.parse(issuerSpki, SubjectPublicKeyInfo);
  return new Uint8Array(createHash(hash).update(new Uint8Array(info.subjectPublicKey)).digest());
}

/** SHA-x of the issuer's subject Name, DER as it appears in the certificates it signs. */
export const issuerNameHash = (issuer: CertInfo, hash: CertIdHash = "sha1"): Uint8Array =>
  new Uint8Array(createHash(hash).update(issuer.subjectDer).digest());

/** The CertID (RFC 6960 §4.1.1) naming `leaf` (or just its serial) as issued by `issuer`. */
export function certIdFor(
  leaf: Pick<CertInfo, "serial">,
  issuer: CertInfo,
  hash: CertIdHash = "sha1",
): CertID {
  // An INTEGER's content octets: the minimal magnitude, with a 0x00 pad when the top bit is set.
  const magnitude = serialMagnitude(leaf.serial);
  const content = (magnitude[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), magnitude]) : magnitude;
  return new CertID({
    hashAlgorithm: new AlgorithmIdentifier({ algorithm: HASH_OIDS[hash], parameters: null }),
    issuerNameHash: new OctetString(issuerNameHash(issuer, hash)),
    issuerKeyHash: new OctetString(issuerKeyHash(issuer.spki, hash)),
    serialNumber: new Uint8Array(content).buffer,
  });
}

/** The hash algorithm of a CertID, or undefined when it is not one we compute. */
export const certIdHash = (id: CertID): CertIdHash | undefined => HASH_BY_OID.get(id.hashAlgorithm.algorithm);

/** Whether a CertID (from a request or a response) names a certificate of `issuer`. */
export function certIdMatchesIssuer(id: CertID, issuer: CertInfo): boolean {
  const hash = certIdHash(id);
  if (!hash) return false;
  return (
    equalBytes(bytes(id.issuerNameHash.buffer), issuerNameHash(issuer, hash)) &&
    equalBytes(bytes(id.issuerKeyHash.buffer), issuerKeyHash(issuer.spki, hash))
  );
}

/** Whether a CertID names exactly `leaf` as issued by `issuer`, whatever hash the CertID uses. */
export const certIdMatches = (id: CertID, leaf: Pick<CertInfo, "serial">, issuer: CertInfo): boolean =>
  certIdMatchesIssuer(id, issuer) && serialFromInteger(id.serialNumber) === normalizeSerial(leaf.serial);

/** A nonce extension value as RFC 8954 and OpenSSL write it: an OCTET STRING wrapping the nonce. */
const nonceExtension = (nonce: Uint8Array): Extension =>
  new Extension({
    extnID: id_pkix_ocsp_nonce,
    critical: false,
    extnValue: new OctetString(derOctetString(nonce)),
  });

/** An unsigned OCSPRequest for one certificate (DER), with a nonce extension when given one. */
export function buildOcspRequest(
  leaf: CertInfo,
  issuer: CertInfo,
  opts: { nonce?: Uint8Array; hash?: CertIdHash } = {},
): Uint8Array {
  if (opts.nonce && (opts.nonce.length < 1 || opts.nonce.length > 32)) {
    throw bad("an OCSP nonce must be 1 to 32 bytes (RFC 8954)");
  }
  const tbs = new TBSRequest({ requestList: [new Request({ reqCert: certIdFor(leaf, issuer, opts.hash) })] });
  if (opts.nonce) tbs.requestExtensions = [nonceExtension(opts.nonce)];
  return new Uint8Array(AsnConvert.serialize(new OCSPRequest({ tbsRequest: tbs })));
}

export interface ParsedOcspRequest {
  certIds: CertID[];
  /** The nonce the client sent (the inner value), if any. */
  nonce?: Uint8Array;
  /** The raw extnValue of the nonce extension, to echo byte for byte. */
  nonceExtnValue?: Uint8Array;
}

/** Parses an OCSPRequest (for responders and tests). Signed requests are parsed but not verified. */
export function parseOcspRequest(der: Uint8Array): ParsedOcspRequest {
  let req: OCSPRequest;
  try {
    req = AsnConvert.parse(der, OCSPRequest);
  } catch (err) {
    throw bad("malformed OCSP request", err);
  }
  const out: ParsedOcspRequest = { certIds: req.tbsRequest.requestList.map((r) => r.reqCert) };
  const ext = req.tbsRequest.requestExtensions?.find((e) => e.extnID === id_pkix_ocsp_nonce);
  if (ext) {
    const value = bytes(ext.extnValue.buffer);
    out.nonceExtnValue = value;
    out.nonce = unwrapOctetString(value) ?? value;
  }
  return out;
}

function unwrapOctetString(value: Uint8Array): Uint8Array | undefined {
  try {
    return bytes(AsnConvert.parse(value, OctetString).buffer);
  } catch {
    return undefined;
  }
}

interface Responder {
  spki: Uint8Array;
  what: string;
}

/**
 * Which key may have signed this response (RFC 6960 §4.2.2.2): the issuer itself, or a certificate
 * in `certs` named by the responderID, issued (and signed) by the issuer, with EKU OCSPSigning and
 * valid at `at`.
 */
function responderFor(basic: BasicOCSPResponse, issuer: CertInfo, at: Date): Responder {
  const rid = basic.tbsResponseData.responderID;
  const named = (spki: Uint8Array, subjectDer: Uint8Array): boolean => {
    if (rid.byKey) return equalBytes(bytes(rid.byKey.buffer), issuerKeyHash(spki));
    if (rid.byName) return equalBytes(new Uint8Array(AsnConvert.serialize(rid.byName)), subjectDer);
    return false;
  };
  if (named(issuer.spki, issuer.subjectDer)) return { spki: issuer.spki, what: "the issuer" };

  const problems: string[] = [];
  for (const cert of basic.certs ?? []) {
    const der = new Uint8Array(AsnConvert.serialize(cert));
    const tbs = cert.tbsCertificate;
    const spki = new Uint8Array(AsnConvert.serialize(tbs.subjectPublicKeyInfo));
    if (!named(spki, new Uint8Array(AsnConvert.serialize(tbs.subject)))) continue;
    let node: NodeX509;
    try {
      node = new NodeX509(der);
    } catch (err) {
      throw bad("the OCSP response carries a malformed responder certificate", err);
    }
    const issuerNode = new NodeX509(issuer.der);
    if (!node.checkIssued(issuerNode) || !node.verify(issuerNode.publicKey)) {
      problems.push(
        `the responder certificate ${node.subject.replace(/\n/g, ", ")} is not issued by ${issuer.subject}`,
      );
      continue;
    }
    const eku = node.keyUsage ?? [];
    if (!eku.includes(id_kp_OCSPSigning)) {
      problems.push(
        "the responder certificate is not authorized for OCSP signing (no EKU id-kp-OCSPSigning)",
      );
      continue;
    }
    const notBefore = tbs.validity.notBefore.getTime();
    const notAfter = tbs.validity.notAfter.getTime();
    if (at < notBefore || at > notAfter) {
      problems.push(
        `the responder certificate is not valid at ${at.toISOString()} (valid ${notBefore.toISOString()} to ${notAfter.toISOString()})`,
      );
      continue;
    }
    return { spki, what: `delegated responder ${node.subject.replace(/\n/g, ", ")}` };
  }
  throw bad(
    problems[0] ??
      `the OCSP response is signed by neither ${issuer.subject} nor a responder certificate it issued`,
  );
}

const REASON_NAMES = new Map<number, string>([
  ...Object.entries(REVOCATION_REASONS).map(([k, v]) => [v, k] as [number, string]),
  [8, "removeFromCRL"],
]);

function answerOf(single: SingleResponse): OcspAnswer {
  const base = {
    thisUpdate: single.thisUpdate,
    ...(single.nextUpdate ? { nextUpdate: single.nextUpdate } : {}),
  };
  const st = single.certStatus;
  if (st.revoked) {
    const code = st.revoked.revocationReason?.reason;
    return {
      status: "revoked",
      ...base,
      revokedAt: st.revoked.revocationTime,
      ...(code !== undefined ? { reason: REASON_NAMES.get(code) ?? `reason ${code}` } : {}),
    };
  }
  if (st.good !== undefined) return { status: "good", ...base };
  return { status: "unknown", ...base };
}

/**
 * Parses and verifies an OCSPResponse for `leaf` (issued by `issuer`) at time `at`. Throws
 * E_BAD_INPUT, saying why, for anything a relying party must not trust: an error status, a bad or
 * unauthorized signature, no answer for our CertID, an answer from the future or past its
 * nextUpdate, or a nonce other than ours (a missing nonce is accepted: many responders pre-sign).
 */
export function parseOcspResponse(
  der: Uint8Array,
  leaf: CertInfo,
  issuer: CertInfo,
  opts: { nonce?: Uint8Array; at: Date },
): OcspAnswer {
  let resp: OCSPResponse;
  try {
    resp = AsnConvert.parse(der, OCSPResponse);
  } catch (err) {
    throw bad("malformed OCSP response", err);
  }
  if (resp.responseStatus !== OCSPResponseStatus.successful) {
    const name = OCSPResponseStatus[resp.responseStatus] ?? String(resp.responseStatus);
    throw bad(`the OCSP responder answered "${name}"`);
  }
  if (!resp.responseBytes || resp.responseBytes.responseType !== id_pkix_ocsp_basic) {
    throw bad("the OCSP response is not a basic OCSP response");
  }
  let basic: BasicOCSPResponse;
  try {
    basic = AsnConvert.parse(resp.responseBytes.response.buffer, BasicOCSPResponse);
  } catch (err) {
    throw bad("malformed basic OCSP response", err);
  }
  const tbsRaw = basic.tbsResponseDataRaw;
  if (!tbsRaw) throw bad("malformed basic OCSP response (no tbsResponseData)");

  const responder = responderFor(basic, issuer, opts.at);
  const ok = verifySignature(
    basic.signatureAlgorithm.algorithm,
    new Uint8Array(tbsRaw),
    new Uint8Array(basic.signature),
    responder.spki,
    "the OCSP response",
  );
  if (!ok) throw bad(`the OCSP response signature does not verify with the key of ${responder.what}`);

  const data = basic.tbsResponseData;
  const nonceExt = data.responseExtensions?.find((e) => e.extnID === id_pkix_ocsp_nonce);
  if (opts.nonce && nonceExt) {
    const value = bytes(nonceExt.extnValue.buffer);
    const echoed = equalBytes(value, derOctetString(opts.nonce)) || equalBytes(value, opts.nonce);
    if (!echoed) throw bad("the OCSP response carries a nonce other than the one we sent (replayed?)");
  }

  const single = data.responses.find((r) => certIdMatches(r.certID, leaf, issuer));
  if (!single) throw bad(`the OCSP response has no answer for serial ${normalizeSerial(leaf.serial)}`);

  const at = opts.at.getTime();
  if (single.thisUpdate.getTime() > at + OCSP_CLOCK_SKEW_MS) {
    throw bad(`the OCSP answer is from the future (thisUpdate ${single.thisUpdate.toISOString()})`);
  }
  if (single.nextUpdate && single.nextUpdate.getTime() < at) {
    throw bad(`the OCSP answer is out of date (nextUpdate ${single.nextUpdate.toISOString()})`);
  }
  return answerOf(single);
}

/** The responderID by key (SHA-1 of the responder's public key bits), as responders should send it. */
export const responderKeyHash = (spki: Uint8Array): Uint8Array => issuerKeyHash(spki, "sha1");
