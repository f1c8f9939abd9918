import type { TLSSocket } from "node:tls";
import type { CertInfo } from "../pki/certinfo.js";
import { peerCertificateChain, type RevocationChecker, type RevocationStatus } from "../tls/index.js";

/** A connection that made it through verification and is being piped. */
export interface LiveConnection {
  readonly id: number;
  readonly startedAt: Date;
  /** The TLS peer's leaf (its serial keys the revocation re-check). */
  readonly leaf: CertInfo;
  readonly tls: TLSSocket;
  /** The issuer of the leaf, when known (the default reads it from the socket's peer chain). */
  issuer?(): CertInfo | undefined;
  /** Ends the connection now (both sockets), with a reason for the audit line. */
  close(reason: string, detail?: string): void;
}

/**
 * The open connections of one tunnel, by id and by the peer certificate's serial, so that a
 * revocation update checks each certificate once however many connections it holds.
 */
export class LiveConnections {
  private readonly byId = new Map<number, LiveConnection>();
  private readonly bySerial = new Map<string, Set<LiveConnection>>();
  private emptyWaiters: (() => void)[] = [];
  private rechecking: Promise<number> | undefined;
  private recheckAgain = false;

  get size(): number {
    return this.byId.size;
  }

  all(): LiveConnection[] {
    return [...this.byId.values()];
  }

  serials(): string[] {
    return [...this.bySerial.keys()];
  }

  add(c: LiveConnection): void {
    this.byId.set(c.id, c);
    let set = this.bySerial.get(c.leaf.serial);
    if (!set) {
      set = new Set();
      this.bySerial.set(c.leaf.serial, set);
    }
    set.add(c);
  }

  delete(c: LiveConnection): void {
    if (!this.byId.delete(c.id)) return;
    const set = this.bySerial.get(c.leaf.serial);
    set?.delete(c);
    if (set?.size === 0) this.bySerial.delete(c.leaf.serial);
    if (this.byId.size === 0) {
      const waiters = this.emptyWaiters;
      this.emptyWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Resolves when no connection is left. */
  whenEmpty(): Promise<void> {
    if (this.byId.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.emptyWaiters.push(resolve));
  }

  closeAll(reason: string, detail?: string): void {
    for (const c of this.all()) c.close(reason, detail);
  }

  /**
   * Asks the checker about every certificate with open connections and closes the connections of
   * the revoked ones. Calls that arrive while a pass runs fold into one more pass. Resolves with the
   * number of connections closed.
   */
  recheck(
    checker: RevocationChecker,
    onRevoked: (c: LiveConnection, status: RevocationStatus) => void,
  ): Promise<number> {
    if (this.rechecking) {
      this.recheckAgain = true;
      return this.rechecking;
    }
    const run = async (): Promise<number> => {
      let closed = 0;
      do {
        this.recheckAgain = false;
        for (const [serial, set] of [...this.bySerial]) {
          const first = set.values().next().value as LiveConnection | undefined;
          if (!first) continue;
          let issuer: CertInfo | undefined;
          try {
            issuer = first.issuer ? first.issuer() : peerCertificateChain(first.tls)[1];
          } catch {
            issuer = undefined;
          }
          let status: RevocationStatus;
          try {
            status = await checker.check(first.leaf, issuer);
          } catch {
            continue;
          }
          if (status.status !== "revoked") continue;
          for (const c of [...(this.bySerial.get(serial) ?? [])]) {
            onRevoked(c, status);
            closed++;
          }
        }
      } while (this.recheckAgain);
      return closed;
    };
    this.rechecking = run().finally(() => {
      this.rechecking = undefined;
    });
    return this.rechecking;
  }
}
