import "reflect-metadata";
import { createHash } from "node:crypto";
import type { DetailedPeerCertificate, TLSSocket } from "node:tls";
import { Name } from "@peculiar/x509";
import { type CertInfo, parseCertificate } from "../pki/certinfo.js";
import type { PeerIdentity } from "../policy/types.js";

/** The identity a certificate proves, as policy rules see it. */
export function identityFromCert(info: CertInfo): PeerIdentity {
  const name = new Name(info.subjectDer);
  const sans = (type: string) => info.sans.filter((s) => s.type === type).map((s) => s.value);
  return {
    subject: info.subject,
    // The most specific CN (the last one in DER order) when a subject has several.
    commonName: name.getField("CN").at(-1),
    organizationalUnits: name.getField("OU"),
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
  };
}

/**
 * The peer's certificates after the handshake, leaf first: what it sent, completed by Node from the
 * context's trust store (so the issuer of the leaf is there when the chain verified). Empty when the
 * peer sent no certificate.
 *
 * Only `getPeerCertificate(true)` is used, never `getPeerX509Certificate()`: on Node 20.20 calling
 * the latter takes the chain away from the socket. On a client socket, getPeerCertificate() then
 * returns {} and getPeerX509Certificate() undefined; on a server socket the detailed chain shrinks
 * to the leaf. getPeerCertificate(true) can be called any number of times.
 */
export function peerCertificateChain(socket: TLSSocket): CertInfo[] {
  let cert: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true) ?? undefined;
  const chain: CertInfo[] = [];
  const seen = new Set<string>();
  for (let depth = 0; depth < 10 && cert?.raw; depth++) {
    const info = parseCertificate(new Uint8Array(cert.raw));
    if (seen.has(info.fingerprint)) break;
    seen.add(info.fingerprint);
    chain.push(info);
    // A self-signed root is its own issuerCertificate.
    if (cert.issuerCertificate === cert) break;
    cert = cert.issuerCertificate;
  }
  return chain;
}
