import "reflect-metadata";
import { createHash } from "node:crypto";
import type { DetailedPeerCertificate, PeerCertificate, TLSSocket } from "node:tls";
import { Name } from "@peculiar/x509";
import { type CertInfo, parseCertificate } from "../pki/certinfo.js";
import type { PeerIdentity } from "../policy/types.js";

/**
 * Identities already built, per parsed certificate: building one parses the subject Name again. A
 * WeakMap, so an identity lives exactly as long as its CertInfo.
 */
const identities = new WeakMap<CertInfo, PeerIdentity>();

/**
 * The identity a certificate proves, as policy rules see it. The same CertInfo object always gives
 * the same (frozen) PeerIdentity object.
 */
export function identityFromCert(info: CertInfo): PeerIdentity {
  let identity = identities.get(info);
  if (!identity) {
    identity = buildIdentity(info);
    identities.set(info, identity);
  }
  return identity;
}

function buildIdentity(info: CertInfo): PeerIdentity {
  const name = new Name(info.subjectDer as BufferSource);
  const sans = (type: string) =>
    Object.freeze(info.sans.filter((s) => s.type === type).map((s) => s.value)) as string[];
  return Object.freeze({
    subject: info.subject,
    // The most specific CN (the last one in DER order) when a subject has several.
    commonName: name.getField("CN").at(-1),
    organizationalUnits: Object.freeze(name.getField("OU")) as string[],
    organization: name.getField("O")[0],
    dnsNames: sans("dns"),
    uris: sans("uri"),
    emails: sans("email"),
    ips: sans("ip"),
    fingerprint: info.fingerprint,
    spkiSha256: createHash("sha256").update(info.spki).digest("base64"),
    serial: info.serial,
    issuer: info.issuer,
    notBefore: info.notBefore,
    notAfter: info.notAfter,
    der: info.der,
  });
}

/**
 * Parsed certificates by the SHA-256 of their DER, least recently used dropped first beyond `max`.
 *
 * Why: a peer presents the same certificates on every connection, and parsing one with
 * @peculiar/x509 costs ~1.5 ms, which was most of a tunnel's CPU per handshake (docs/benchmarks.md,
 * "Tunnels"). The key is computed here from the exact bytes that would be parsed, so a hit can only
 * return what parsing those bytes gives. The objects handed out are shared between connections, so
 * they are frozen (their arrays too; the Uint8Arrays and Dates cannot be, and must not be changed).
 */
export class CertInfoCache {
  private readonly entries = new Map<string, CertInfo>();

  constructor(readonly max = 1000) {
    if (!(Number.isInteger(max) && max >= 1)) throw new RangeError(`cache size ${max}: an integer ≥ 1`);
  }

  get size(): number {
    return this.entries.size;
  }

  /** The CertInfo of `der`: from the cache when these bytes were parsed before, else parsed now. */
  parse(der: Uint8Array): CertInfo {
    const key = createHash("sha256").update(der).digest("hex");
    const hit = this.entries.get(key);
    if (hit) {
      // Most recently used goes last: Map keeps insertion order.
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit;
    }
    const info = freezeCertInfo(parseCertificate(new Uint8Array(der)));
    if (this.entries.size >= this.max) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
    this.entries.set(key, info);
    return info;
  }

  clear(): void {
    this.entries.clear();
  }
}

function freezeCertInfo(info: CertInfo): CertInfo {
  Object.freeze(info.sans);
  for (const san of info.sans) Object.freeze(san);
  Object.freeze(info.keyUsage);
  Object.freeze(info.extKeyUsage);
  Object.freeze(info.crlUrls);
  Object.freeze(info.ocspUrls);
  return Object.freeze(info);
}

/** The cache peerCertificateChain() uses: one per process. */
export const peerCertificates = new CertInfoCache();

export interface PeerChainOptions {
  /**
   * Read the leaf alone (`getPeerCertificate(false)`), for callers that need no issuer, i.e. no
   * revocation check: on a fresh socket that takes ~75 µs against ~310 µs for the detailed chain,
   * because Node also looks each issuer up in the context's store. Default: the whole chain.
   */
  leafOnly?: boolean;
}

/**
 * The peer's certificates after the handshake, leaf first: what it sent, completed by Node from the
 * context's trust store (so the issuer of the leaf is there when the chain verified); only the leaf
 * with `leafOnly`. Empty when the peer sent no certificate. Each certificate is parsed once per
 * process (see CertInfoCache): the same certificate gives the same frozen CertInfo object.
 *
 * Only `getPeerCertificate()` is used, never `getPeerX509Certificate()`: on Node 20.20 calling
 * the latter takes the chain away from the socket. On a client socket, getPeerCertificate() then
 * returns {} and getPeerX509Certificate() undefined; on a server socket the detailed chain shrinks
 * to the leaf. getPeerCertificate(true) can be called any number of times.
 */
export function peerCertificateChain(socket: TLSSocket, opts: PeerChainOptions = {}): CertInfo[] {
  if (opts.leafOnly) {
    const leaf: PeerCertificate | undefined = socket.getPeerCertificate(false) ?? undefined;
    return leaf?.raw ? [peerCertificates.parse(leaf.raw)] : [];
  }
  let cert: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true) ?? undefined;
  const chain: CertInfo[] = [];
  const seen = new Set<string>();
  for (let depth = 0; depth < 10 && cert?.raw; depth++) {
    const info = peerCertificates.parse(cert.raw);
    if (seen.has(info.fingerprint)) break;
    seen.add(info.fingerprint);
    chain.push(info);
    // A self-signed root is its own issuerCertificate.
    if (cert.issuerCertificate === cert) break;
    cert = cert.issuerCertificate;
  }
  return chain;
}
