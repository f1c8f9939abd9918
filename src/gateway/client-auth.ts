import type { TLSSocket } from "node:tls";
import type { CertInfo } from "../pki/certinfo.js";
import type { PeerIdentity } from "../policy/index.js";
import type {
  PeerVerification,
  RevocationChecker,
  RevocationStatus,
  TlsMaterial,
  VerifyPeer,
} from "../tls/index.js";
import { IssuerBook } from "../tls/index.js";

/** A verdict that a connection's certificate, accepted before, no longer passes. */
export type InvalidVerdict = Extract<PeerVerification, { ok: false }>;

/** setTimeout's longest wait; longer ones are re-armed. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Client certificate verification for the gateway, once per TLS connection and again when it could
 * have changed: revocation data updated (a CRL rewritten by `mtls revoke`, an OCSP answer) or the
 * certificate expired meanwhile. The verdict itself is tls/verifyPeer's, as for the tunnels.
 *
 * Connections whose certificate passed are watched while open: on every revocation update the
 * revocation checker is asked again about each certificate in use (once per certificate, however
 * many connections hold it, as the tunnels do), and at a certificate's notAfter it is verified
 * again; a connection whose certificate no longer passes is handed to `onInvalid` (the gateway cuts
 * it), so no connection stays open on a revoked or expired identity. The next request of any
 * connection is verified in full again after an update anyway.
 */
export class ClientAuth {
  private generation = 0;
  private readonly bySocket = new WeakMap<
    TLSSocket,
    { generation: number; until: number; result: Promise<PeerVerification> }
  >();
  /** Open connections whose certificate passed, with their expiry timer. */
  private readonly accepted = new Map<TLSSocket, Watched>();
  private readonly revocation: RevocationChecker | undefined;
  private rechecking: Promise<number> | undefined;
  private recheckAgain = false;
  private closed = false;
  private readonly onUpdate = () => {
    void this.recheck();
  };

  constructor(
    private readonly opts: {
      verify: VerifyPeer;
      material: TlsMaterial;
      revocation?: RevocationChecker;
      clock: () => Date;
      /** A watched connection whose certificate no longer passes (revoked, expired...). */
      onInvalid?: (socket: TLSSocket, verdict: InvalidVerdict) => void;
    },
  ) {
    this.revocation = opts.revocation ? new IssuerBook(opts.material).wrap(opts.revocation) : undefined;
    opts.revocation?.on("update", this.onUpdate);
  }

  /** Connections being watched (their certificate passed, and they are open). */
  get watched(): number {
    return this.accepted.size;
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
    void result.then(
      (v) => {
        if (!v.ok) return;
        // Re-verify (then refused as expired) once the certificate's validity ends.
        entry.until = v.leaf.notAfter.getTime();
        this.watch(socket, v.leaf, v.chain?.[1], v.identity);
      },
      () => undefined,
    );
    return result;
  }

  /**
   * What a revocation update does: every cached verdict goes stale (the next request of any
   * connection is verified in full), and the checker is asked about each certificate held by a
   * watched connection; the connections of a revoked one go to `onInvalid`. Calls during a pass
   * fold into one more pass. Resolves with the number of connections found revoked.
   */
  recheck(): Promise<number> {
    this.generation++;
    if (this.rechecking) {
      this.recheckAgain = true;
      return this.rechecking;
    }
    const run = async (): Promise<number> => {
      let invalid = 0;
      const checker = this.revocation;
      if (!checker) return 0;
      do {
        this.recheckAgain = false;
        const byLeaf = new Map<string, TLSSocket[]>();
        for (const [socket, w] of this.accepted) {
          const list = byLeaf.get(w.leaf.fingerprint);
          if (list) list.push(socket);
          else byLeaf.set(w.leaf.fingerprint, [socket]);
        }
        const checks = [...byLeaf.values()].map(async (sockets) => {
          const w = this.accepted.get(sockets[0] as TLSSocket);
          if (!w) return;
          let status: RevocationStatus;
          try {
            status = await checker.check(w.leaf, w.issuer);
          } catch {
            return;
          }
          if (status.status !== "revoked") return;
          const why = status.reason ? ` (${status.reason})` : "";
          for (const socket of sockets) {
            const held = this.accepted.get(socket);
            if (!held) continue;
            invalid++;
            this.invalidate(socket, {
              ok: false,
              reason: "revoked",
              detail: `certificate ${held.leaf.serial} was revoked${why} [${status.source}]`,
              identity: held.identity,
            });
          }
        });
        await Promise.all(checks);
      } while (this.recheckAgain && !this.closed);
      return invalid;
    };
    this.rechecking = run().finally(() => {
      this.rechecking = undefined;
    });
    return this.rechecking;
  }

  close(): void {
    this.closed = true;
    this.opts.revocation?.off("update", this.onUpdate);
    for (const socket of [...this.accepted.keys()]) this.unwatch(socket);
  }

  /** Watches an open connection whose certificate passed: expiry timer, forgotten on close. */
  private watch(
    socket: TLSSocket,
    leaf: CertInfo,
    issuer: CertInfo | undefined,
    identity: PeerIdentity,
  ): void {
    if (this.closed || socket.destroyed || !this.opts.onInvalid) return;
    const notAfter = leaf.notAfter.getTime();
    let held = this.accepted.get(socket);
    if (!held) {
      // `once`: nothing to remove afterwards (an HTTP/2 session's socket may be unbound by then).
      const onClose = () => this.unwatch(socket, true);
      held = { onClose, leaf, issuer, identity };
      this.accepted.set(socket, held);
      socket.once("close", onClose);
    } else {
      Object.assign(held, { leaf, issuer, identity });
    }
    clearTimeout(held.timer);
    const entry = held;
    const arm = () => {
      const wait = notAfter - this.opts.clock().getTime();
      if (wait < 0) {
        entry.timer = undefined;
        void this.verify(socket).then(
          (v) => {
            if (!v.ok && this.accepted.has(socket)) this.invalidate(socket, v);
          },
          () => undefined,
        );
        return;
      }
      // Just past notAfter: verifyPeer's validity check is strict (notAfter itself still passes).
      entry.timer = setTimeout(arm, Math.min(wait + 1, MAX_TIMER_MS));
      entry.timer.unref();
    };
    arm();
  }

  private unwatch(socket: TLSSocket, closed = false): void {
    const held = this.accepted.get(socket);
    if (!held) return;
    clearTimeout(held.timer);
    this.accepted.delete(socket);
    if (closed) return;
    try {
      socket.off("close", held.onClose);
    } catch {
      // An HTTP/2 session's socket proxy throws once the session let go of its socket.
    }
  }

  private invalidate(socket: TLSSocket, verdict: InvalidVerdict): void {
    this.unwatch(socket);
    this.opts.onInvalid?.(socket, verdict);
  }
}

interface Watched {
  timer?: NodeJS.Timeout;
  onClose: () => void;
  leaf: CertInfo;
  /** The leaf's issuer as the connection presented it (absent: the IssuerBook finds it). */
  issuer: CertInfo | undefined;
  identity: PeerIdentity;
}
