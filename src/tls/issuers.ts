import type { CertInfo } from "../pki/certinfo.js";
import type { RevocationChecker, TlsMaterial } from "./types.js";

const MAX_LEARNED = 256;

/**
 * CA certificates by name, to find the issuer of a peer's leaf when the socket cannot tell it.
 *
 * Why: a resumed TLS session carries only the peer's leaf (OpenSSL keeps no chain in the ticket),
 * so peerCertificateChain() has no issuer, and a revocation checker without the issuer cannot read
 * the CRL (it answers "unknown") — a revoked client could keep resuming its session. The issuer is
 * looked up among the endpoint's own trust anchors and chain and the issuers seen on full
 * handshakes. The chain itself was verified on the full handshake that created the session; the
 * issuer is needed only to check revocation.
 */
export class IssuerBook {
  private readonly learned = new Map<string, CertInfo>();

  constructor(private readonly material: TlsMaterial) {}

  remember(ca: CertInfo): void {
    const key = ca.fingerprint;
    if (this.learned.has(key)) return;
    if (this.learned.size >= MAX_LEARNED) {
      const oldest = this.learned.keys().next().value as string;
      this.learned.delete(oldest);
    }
    this.learned.set(key, ca);
  }

  find(leaf: CertInfo): CertInfo | undefined {
    const candidates = [...this.material.chain, ...this.material.anchors, ...this.learned.values()];
    return candidates.find(
      (c) =>
        c.isCa &&
        c.subject === leaf.issuer &&
        (!leaf.authorityKeyId || !c.subjectKeyId || leaf.authorityKeyId === c.subjectKeyId),
    );
  }

  /** The checker, with a missing issuer filled in from this book (and every issuer seen remembered). */
  wrap(checker: RevocationChecker): RevocationChecker {
    const check = (leaf: CertInfo, issuer: CertInfo | undefined) => {
      if (issuer) this.remember(issuer);
      return checker.check(leaf, issuer ?? this.find(leaf));
    };
    // Everything else (events, close) is the checker's own.
    return Object.assign(Object.create(checker) as RevocationChecker, { check });
  }
}
