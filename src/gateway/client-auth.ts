import type { TLSSocket } from "node:tls";
import type { PeerVerification, RevocationChecker, TlsMaterial, VerifyPeer } from "../tls/index.js";
import { IssuerBook } from "../tls/index.js";

/**
 * Client certificate verification for the gateway, once per TLS connection and again when it could
 * have changed: revocation data updated (a CRL rewritten by `mtls revoke`, an OCSP answer) or the
 * certificate expired meanwhile. A keep-alive connection whose certificate is revoked is refused on
 * its next request. The verdict itself is tls/verifyPeer's, as for the tunnels.
 */
export class ClientAuth {
  private generation = 0;
  private readonly bySocket = new WeakMap<
    TLSSocket,
    { generation: number; until: number; result: Promise<PeerVerification> }
  >();
  private readonly revocation: RevocationChecker | undefined;
  private readonly onUpdate = () => {
    this.generation++;
  };

  constructor(
    private readonly opts: {
      verify: VerifyPeer;
      material: TlsMaterial;
      revocation?: RevocationChecker;
      clock: () => Date;
    },
  ) {
    this.revocation = opts.revocation ? new IssuerBook(opts.material).wrap(opts.revocation) : undefined;
    opts.revocation?.on("update", this.onUpdate);
  }

  /** The verdict on this connection's client certificate (cached while nothing changed). */
  verify(socket: TLSSocket): Promise<PeerVerification> {
    const now = this.opts.clock().getTime();
    const hit = this.bySocket.get(socket);
    if (hit && hit.generation === this.generation && now <= hit.until) return hit.result;
    const result = this.opts.verify(socket, {
      purpose: "client",
      ...(this.revocation ? { revocation: this.revocation } : {}),
      // Always the whole chain: Client-Cert-Chain carries the intermediates even without revocation.
      peerChain: "full",
      clock: this.opts.clock,
    });
    const entry = { generation: this.generation, until: Number.POSITIVE_INFINITY, result };
    this.bySocket.set(socket, entry);
    void result.then((v) => {
      // Re-verify (then refused as expired) once the certificate's validity ends.
      if (v.ok) entry.until = v.leaf.notAfter.getTime();
    });
    return result;
  }

  close(): void {
    this.opts.revocation?.off("update", this.onUpdate);
  }
}
