/**
 * Server certificate chain verification for the TLS 1.3 client (RFC 5280 path validation, reduced
 * to what a TLS client needs, plus RFC 9525 name checks). Everything through WebCrypto.
 *
 * Path building: from the leaf, through any of the sent certificates (any order; unrelated extras
 * are ignored), to a trust anchor. An issuer candidate is a certificate whose subject equals the
 * child's issuer byte for byte and whose subjectKeyIdentifier (when both are present) equals the
 * child's authorityKeyIdentifier. Candidates are tried depth first, anchors before sent
 * certificates, so cross-signed and redundant chains work. A sent copy of an anchor is the anchor.
 * Work is bounded: at most 32 input certificates, 10 certificates in a path, 64 signature checks.
 *
 * Not done here: revocation (CRL/OCSP), policy processing (certificatePolicies is accepted and
 * ignored, also when critical), name constraints other than dNSName and iPAddress (a certificate
 * carrying them is refused), trust anchors that are not CA certificates (a pinned self-signed leaf).
 */

import {
  KU_DIGITAL_SIGNATURE,
  KU_KEY_CERT_SIGN,
  type ParsedCertificate,
  parseCertificateStrict,
} from "./cert.js";
import { bytesEqual, MalformedDer } from "./der.js";
import { ecdsaDerToRaw } from "./ecdsa.js";
import { CertificateError, type CertificateErrorReason } from "./errors.js";
import { dnsNameMatches, dnsWithinSubtree, parseServerName, type ServerName } from "./names.js";
import { type HashName, OID_ED25519, readPssParams, type VerifyAlgorithm, webVerify } from "./spki.js";

export interface VerifyServerChainInput {
  /** As sent by the server: leaf first, DER. */
  certificates: Uint8Array[];
  /** DER trust anchors (root or intermediate CA certificates). */
  trustAnchors: Uint8Array[];
  /** The DNS name or IP literal (IPv6 with or without brackets) the client connects to. */
  serverName: string;
  now: Date;
}

export const MAX_INPUT_CERTIFICATES = 32;
export const MAX_PATH_LENGTH = 10;
const MAX_SIGNATURE_CHECKS = 64;
const MIN_RSA_BITS = 2048;

const EKU_SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
const EKU_ANY = "2.5.29.37.0";

const SIGNATURE_ALGORITHMS: Record<string, { name: "ECDSA" | "RSASSA-PKCS1-v1_5"; hash: HashName }> = {
  "1.2.840.10045.4.3.2": { name: "ECDSA", hash: "SHA-256" },
  "1.2.840.10045.4.3.3": { name: "ECDSA", hash: "SHA-384" },
  "1.2.840.10045.4.3.4": { name: "ECDSA", hash: "SHA-512" },
  "1.2.840.113549.1.1.11": { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
  "1.2.840.113549.1.1.12": { name: "RSASSA-PKCS1-v1_5", hash: "SHA-384" },
  "1.2.840.113549.1.1.13": { name: "RSASSA-PKCS1-v1_5", hash: "SHA-512" },
};
const OID_RSASSA_PSS = "1.2.840.113549.1.1.10";

interface Node {
  cert: ParsedCertificate;
  anchor: boolean;
  /** position in the input (sent certificates) or -1 - index (anchors): memo key */
  id: number;
}

class Failure {
  constructor(
    readonly reason: CertificateErrorReason,
    readonly message: string,
    readonly depth: number,
  ) {}
}

function fail(reason: CertificateErrorReason, message: string): never {
  throw new CertificateError(reason, message);
}

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** A short printable form of a certificate for messages: its subject CN or O (best effort). */
function describe(cert: ParsedCertificate): string {
  // CN (2.5.4.3) or O (2.5.4.10) attribute value: OID bytes 55 04 03 / 55 04 0a, then a short string TLV.
  const s = cert.subject;
  for (const oid of [0x03, 0x0a]) {
    for (let i = 0; i + 5 < s.length; i++) {
      if (s[i] === 0x55 && s[i + 1] === 0x04 && s[i + 2] === oid && (s[i + 4] as number) < 0x80) {
        return `"${new TextDecoder().decode(s.subarray(i + 5, i + 5 + (s[i + 4] as number)))}"`;
      }
    }
  }
  return `the certificate with subject ${hex(s).slice(0, 32)}...`;
}

function parseOrFail(der: Uint8Array, what: string): ParsedCertificate {
  try {
    return parseCertificateStrict(der);
  } catch (err) {
    if (err instanceof MalformedDer) {
      throw new CertificateError("malformed", `${what} is not a valid certificate: ${err.message}`, {
        cause: err,
      });
    }
    throw err;
  }
}

function signatureAlgorithmOf(cert: ParsedCertificate): VerifyAlgorithm | string {
  const { oid, params } = cert.signatureAlgorithm;
  const simple = SIGNATURE_ALGORITHMS[oid];
  if (simple) {
    const paramsOk =
      simple.name === "ECDSA"
        ? params === undefined
        : params === undefined || (params.tag === 0x05 && params.value.length === 0);
    return paramsOk
      ? { name: simple.name, hash: simple.hash }
      : `bad parameters for signature algorithm ${oid}`;
  }
  if (oid === OID_RSASSA_PSS) {
    let pss: ReturnType<typeof readPssParams>;
    try {
      pss = readPssParams(params);
    } catch (err) {
      return `unsupported RSASSA-PSS parameters: ${(err as Error).message}`;
    }
    if (!pss || pss.hash === "SHA-1") return "RSASSA-PSS with SHA-1 is not accepted";
    return { name: "RSA-PSS", hash: pss.hash, saltLength: pss.saltLength };
  }
  if (oid === OID_ED25519)
    return params === undefined ? { name: "Ed25519" } : "Ed25519 signature with parameters";
  return `unsupported signature algorithm ${oid}`;
}

/** Does `issuer`'s key sign `child`? Throws-free; false on any malformation. */
async function signedBy(child: ParsedCertificate, issuer: ParsedCertificate): Promise<boolean | string> {
  const alg = signatureAlgorithmOf(child);
  if (typeof alg === "string") return alg;
  let signature = child.signature;
  if (alg.name === "ECDSA") {
    if (issuer.key.kind !== "ec") return false;
    try {
      signature = ecdsaDerToRaw(signature, issuer.key.size);
    } catch {
      return false;
    }
  }
  return webVerify(issuer.key, alg, child.tbs, signature);
}

function validityProblem(cert: ParsedCertificate, now: Date): string | null {
  const t = now.getTime();
  if (t < cert.notBefore.getTime())
    return `${describe(cert)} is not valid before ${cert.notBefore.toISOString()}`;
  if (t > cert.notAfter.getTime()) return `${describe(cert)} expired at ${cert.notAfter.toISOString()}`;
  return null;
}

function keyProblem(cert: ParsedCertificate): string | null {
  if (cert.key.kind === "rsa" && cert.key.modulusBits < MIN_RSA_BITS) {
    return `${describe(cert)} has a ${cert.key.modulusBits}-bit RSA key (at least ${MIN_RSA_BITS} needed)`;
  }
  return null;
}

/** Checks a certificate acting as an issuer `below` intermediate CAs under it (leaf excluded). */
function caProblem(cert: ParsedCertificate, below: number): Failure | null {
  const who = describe(cert);
  if (cert.version !== 3 || !cert.basicConstraints?.cA) {
    return new Failure(
      "untrusted",
      `${who} issued a certificate but is not a CA (basicConstraints cA is not true)`,
      0,
    );
  }
  if (cert.keyUsage !== undefined && !(cert.keyUsage & KU_KEY_CERT_SIGN)) {
    return new Failure("purpose", `${who} is a CA whose keyUsage lacks keyCertSign`, 0);
  }
  const pathLen = cert.basicConstraints.pathLen;
  if (pathLen !== undefined && below > pathLen) {
    return new Failure(
      "untrusted",
      `${who} allows ${pathLen} intermediate CA(s) below it, the path has ${below}`,
      0,
    );
  }
  if (
    cert.extKeyUsage &&
    !cert.extKeyUsage.includes(EKU_SERVER_AUTH) &&
    !cert.extKeyUsage.includes(EKU_ANY)
  ) {
    return new Failure(
      "purpose",
      `${who} is a CA restricted (extendedKeyUsage) to other purposes than serverAuth`,
      0,
    );
  }
  if (cert.unknownCritical.length) {
    return new Failure(
      "purpose",
      `${who} has critical extensions this client does not support: ${cert.unknownCritical.join(", ")}`,
      0,
    );
  }
  const weak = keyProblem(cert);
  if (weak) return new Failure("untrusted", weak, 0);
  return null;
}

function ipWithin(address: Uint8Array, constraint: Uint8Array): boolean {
  if (constraint.length !== address.length * 2) return false;
  for (let i = 0; i < address.length; i++) {
    const mask = constraint[address.length + i] as number;
    if (((address[i] as number) & mask) !== ((constraint[i] as number) & mask)) return false;
  }
  return true;
}

/** Name constraints of the CAs in `path` (index > 0) applied to the names of the certificates below each. */
function nameConstraintProblem(path: Node[], server: ServerName): string | null {
  for (let ca = 1; ca < path.length; ca++) {
    const nc = (path[ca] as Node).cert.nameConstraints;
    if (!nc) continue;
    for (let k = 0; k < ca; k++) {
      const cert = (path[k] as Node).cert;
      const dns = [...(cert.san?.dns ?? [])];
      const ips = [...(cert.san?.ip ?? [])];
      if (k === 0 && server.kind === "dns") dns.push(server.name);
      if (k === 0 && server.kind === "ip") ips.push(server.bytes);
      for (const name of dns) {
        if (nc.excluded.dns.some((b) => dnsWithinSubtree(name, b)))
          return `${name} is excluded by ${describe((path[ca] as Node).cert)}`;
        if (nc.permitted.dns.length && !nc.permitted.dns.some((b) => dnsWithinSubtree(name, b))) {
          return `${name} is outside the names permitted by ${describe((path[ca] as Node).cert)}`;
        }
      }
      for (const ip of ips) {
        const permitted = nc.permitted.ip.filter((c) => c.length === ip.length * 2);
        if (nc.excluded.ip.some((c) => ipWithin(ip, c)))
          return `an IP address is excluded by ${describe((path[ca] as Node).cert)}`;
        if (permitted.length && !permitted.some((c) => ipWithin(ip, c))) {
          return `an IP address is outside the ranges permitted by ${describe((path[ca] as Node).cert)}`;
        }
      }
    }
  }
  return null;
}

function nameMatches(leaf: ParsedCertificate, server: ServerName): boolean {
  // The subject CN is deliberately ignored (RFC 9525 §6.3): only subjectAltName entries count.
  if (!leaf.san) return false;
  if (server.kind === "dns") return leaf.san.dns.some((pattern) => dnsNameMatches(pattern, server.name));
  if (server.kind === "ip") return leaf.san.ip.some((ip) => bytesEqual(ip, server.bytes));
  return false;
}

/**
 * Verifies the server's certificate chain and identity. Resolves with the leaf's SubjectPublicKeyInfo
 * (for CertificateVerify); throws CertificateError with reason:
 *  - "malformed": a certificate cannot be parsed, too many certificates, no certificate;
 *  - "untrusted": no path to a trust anchor, an issuer that is not a CA, pathLen exceeded, weak RSA key;
 *  - "bad-signature": a certificate's signature does not verify (or uses an unsupported algorithm);
 *  - "expired": a certificate in the path is expired or not yet valid at `now`;
 *  - "purpose": the leaf is not for TLS servers (extendedKeyUsage, keyUsage), a CA restricted by
 *    keyUsage/extendedKeyUsage, a critical extension that is not understood, name constraints violated;
 *  - "name": `serverName` is not among the leaf's subjectAltNames.
 */
export async function verifyServerChain(input: VerifyServerChainInput): Promise<{ leafSpki: Uint8Array }> {
  const { certificates, trustAnchors, now } = input;
  if (certificates.length === 0) fail("malformed", "the server sent no certificate");
  if (certificates.length > MAX_INPUT_CERTIFICATES) {
    fail(
      "malformed",
      `the server sent ${certificates.length} certificates (at most ${MAX_INPUT_CERTIFICATES})`,
    );
  }
  if (Number.isNaN(now.getTime())) throw new TypeError("verifyServerChain: `now` is not a valid date");
  const server = parseServerName(input.serverName);

  const anchors: Node[] = trustAnchors.map((der, i) => ({
    cert: parseOrFail(der, `trust anchor #${i + 1}`),
    anchor: true,
    id: -1 - i,
  }));
  const leaf: Node = {
    cert: parseOrFail(certificates[0] as Uint8Array, "the server's certificate"),
    anchor: false,
    id: 0,
  };
  const sent: Node[] = [];
  for (let i = 1; i < certificates.length; i++) {
    const cert = parseOrFail(certificates[i] as Uint8Array, `certificate #${i + 1} of the server's chain`);
    // A sent copy of a trust anchor is the anchor itself.
    if (!anchors.some((a) => bytesEqual(a.cert.der, cert.der))) sent.push({ cert, anchor: false, id: i });
  }
  const leafKeyProblem = keyProblem(leaf.cert);
  if (leafKeyProblem) fail("untrusted", leafKeyProblem);

  // Depth-first path building. The deepest failure explains best why no path worked.
  let best: Failure | null = null;
  const note = (f: Failure) => {
    if (!best || f.depth > best.depth) best = f;
  };
  const memo = new Map<string, Promise<boolean | string>>();
  let checks = 0;
  const isIssuer = (child: ParsedCertificate, candidate: ParsedCertificate) =>
    bytesEqual(child.issuer, candidate.subject) &&
    !(
      child.authorityKeyId &&
      candidate.subjectKeyId &&
      !bytesEqual(child.authorityKeyId, candidate.subjectKeyId)
    );

  const extend = async (path: Node[]): Promise<Node[] | null> => {
    const child = path[path.length - 1] as Node;
    const depth = path.length;
    const candidates = [...anchors, ...sent].filter((n) => !path.includes(n) && isIssuer(child.cert, n.cert));
    if (candidates.length === 0) {
      note(new Failure("untrusted", `no trusted issuer found for ${describe(child.cert)}`, depth));
      return null;
    }
    for (const candidate of candidates) {
      if (!candidate.anchor && path.length + 1 >= MAX_PATH_LENGTH) {
        note(
          new Failure("untrusted", `no path to a trust anchor within ${MAX_PATH_LENGTH} certificates`, depth),
        );
        continue;
      }
      const ca = caProblem(candidate.cert, path.length - 1);
      if (ca) {
        note(new Failure(ca.reason, ca.message, depth));
        continue;
      }
      const key = `${child.id}:${candidate.id}`;
      let verdict = memo.get(key);
      if (!verdict) {
        if (++checks > MAX_SIGNATURE_CHECKS)
          fail("untrusted", "too many candidate paths in the server's chain");
        verdict = signedBy(child.cert, candidate.cert);
        memo.set(key, verdict);
      }
      const ok = await verdict;
      if (ok !== true) {
        const why = typeof ok === "string" ? `: ${ok}` : "";
        note(
          new Failure(
            "bad-signature",
            `the signature of ${describe(child.cert)} by ${describe(candidate.cert)} does not verify${why}`,
            depth,
          ),
        );
        continue;
      }
      const expired = validityProblem(candidate.cert, now);
      if (expired) {
        note(new Failure("expired", expired, depth));
        continue;
      }
      const next = [...path, candidate];
      if (candidate.anchor) return next;
      const found = await extend(next);
      if (found) return found;
    }
    return null;
  };

  const path = await extend([leaf]);
  if (!path) {
    const f = best as Failure | null;
    fail(f?.reason ?? "untrusted", f?.message ?? "no path to a trust anchor");
  }

  const cert = leaf.cert;
  const expired = validityProblem(cert, now);
  if (expired) fail("expired", expired);
  if (cert.unknownCritical.length) {
    fail(
      "purpose",
      `the server's certificate has critical extensions this client does not support: ${cert.unknownCritical.join(", ")}`,
    );
  }
  if (
    cert.extKeyUsage &&
    !cert.extKeyUsage.includes(EKU_SERVER_AUTH) &&
    !cert.extKeyUsage.includes(EKU_ANY)
  ) {
    fail(
      "purpose",
      `the server's certificate ${describe(cert)} is not for TLS servers (no serverAuth in extendedKeyUsage)`,
    );
  }
  if (cert.keyUsage !== undefined && !(cert.keyUsage & KU_DIGITAL_SIGNATURE)) {
    fail("purpose", `the server's certificate ${describe(cert)} lacks keyUsage digitalSignature`);
  }
  const constrained = nameConstraintProblem(path, server);
  if (constrained) fail("purpose", `name constraints: ${constrained}`);
  if (!nameMatches(cert, server)) {
    const names = [
      ...(cert.san?.dns ?? []),
      ...(cert.san?.ip ?? []).map((ip) => (ip.length === 4 ? ip.join(".") : hex(ip))),
    ];
    fail(
      "name",
      `the server's certificate is for ${names.length ? names.join(", ") : "no DNS name or IP address"}, not ${input.serverName}`,
    );
  }
  return { leafSpki: cert.spki };
}
