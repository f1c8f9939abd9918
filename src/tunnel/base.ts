import { EventEmitter } from "node:events";
import type { Socket } from "node:net";
import {
  type ConnectionAuditFields,
  connectionEvent,
  defaultRegistry,
  type Logger,
  type Registry,
  silentLogger,
  type TunnelMetrics,
  tunnelMetrics,
} from "../observe/index.js";
import type { RevocationChecker, TlsMaterial, VerifyPeer } from "../tls/index.js";
import { verifyPeer as defaultVerifyPeer, IssuerBook } from "../tls/index.js";
import type { Address } from "./address.js";
import { type LiveConnection, LiveConnections } from "./live.js";
import { REFUSAL_REASONS } from "./report.js";

/** What server and client tunnels have in common. */
export interface TunnelCommonOptions {
  /** The `tunnel` label of metrics and log lines (default: the listen address). */
  name?: string;
  listen: Address;
  material: TlsMaterial;
  revocation?: RevocationChecker;
  logger?: Logger;
  /** Metrics go here (default: the process registry). */
  registry?: Registry;
  /** A TLS handshake must finish within this (default 10 s). */
  handshakeTimeoutMs?: number;
  /** Opening the outgoing TCP connection must succeed within this (default 10 s). */
  connectTimeoutMs?: number;
  /** Close a connection after this long without a byte either way (0 or absent: never). */
  idleTimeoutMs?: number;
  /** At most this many connections at once, handshakes included; more are dropped at accept (0: no limit). */
  maxConnections?: number;
  /** Close connections older than this, so long-lived ones re-authenticate (0 or absent: never). */
  maxConnLifetimeMs?: number;
  /** Peer verification (default: tls/verifyPeer). */
  verifyPeer?: VerifyPeer;
  clock?: () => Date;
}

export interface StopResult {
  /** Connections that ended by themselves before the deadline. */
  drained: number;
  /** Connections cut at the deadline. */
  cut: number;
}

export const DEFAULT_TIMEOUTS = { handshakeTimeoutMs: 10_000, connectTimeoutMs: 10_000 };
/** TCP keepalive probes start after this long without traffic (as Go, hence ghostunnel, does by default). */
export const KEEPALIVE_MS = 60_000;
/** setTimeout's ceiling; longer waits are re-armed. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export abstract class TunnelBase extends EventEmitter {
  readonly name: string;
  protected readonly log: Logger;
  protected readonly metrics: TunnelMetrics;
  protected readonly verify: VerifyPeer;
  protected readonly clock: () => Date;
  protected readonly live = new LiveConnections();
  /** Every accepted socket, until it closes. */
  protected readonly sockets = new Set<Socket>();
  protected stopping = false;
  /** The revocation checker as peers are verified against it (issuers of resumed sessions filled in). */
  protected readonly revocation: RevocationChecker | undefined;
  protected nextId = 1;
  private readonly unwatch: (() => void)[] = [];
  private readonly onReloadError = (err: Error) =>
    this.log.warn({ err: err.message }, "new TLS files refused; the previous ones stay in force");
  private readonly onMaterialReload = () => this.materialReloaded();
  private readonly onRevocationUpdate = () => void this.recheckRevocations();
  /** Counts piped bytes in the bytes metric: one function for all of this tunnel's connections. */
  private readonly countBytes: (dir: "in" | "out", n: number) => void;

  constructor(
    protected readonly common: TunnelCommonOptions,
    defaultName: string,
  ) {
    super();
    this.name = common.name ?? defaultName;
    this.log = (common.logger ?? silentLogger()).child({ tunnel: this.name });
    this.metrics = tunnelMetrics(common.registry ?? defaultRegistry());
    this.verify = common.verifyPeer ?? defaultVerifyPeer;
    this.clock = common.clock ?? (() => new Date());
    this.revocation = common.revocation ? new IssuerBook(common.material).wrap(common.revocation) : undefined;
    const labels = { tunnel: this.name };
    // inc by 0, not set: a tunnel restarted under the same name (mtls up) while its predecessor
    // still drains must not zero the gauge the predecessor will decrement.
    this.metrics.connectionsOpen.inc(labels, 0);
    this.metrics.connectionsTotal.inc(labels, 0);
    this.metrics.revocationsClosed.inc(labels, 0);
    this.metrics.resumed.inc(labels, 0);
    for (const reason of REFUSAL_REASONS) this.metrics.handshakeFailures.inc({ ...labels, reason }, 0);
    for (const direction of ["in", "out"] as const) this.metrics.bytes.inc({ ...labels, direction }, 0);
    const bytesIn = this.metrics.bytes.labels({ ...labels, direction: "in" });
    const bytesOut = this.metrics.bytes.labels({ ...labels, direction: "out" });
    this.countBytes = (dir, n) => (dir === "in" ? bytesIn : bytesOut).inc(n);
    const m = common.material;
    this.unwatch.push(
      this.metrics.watchCertificate(this.name, "leaf", () => m.certificate.notAfter),
      this.metrics.watchCertificate(this.name, "ca", () => earliest(m.anchors.map((c) => c.notAfter))),
      this.metrics.watchCertificate(this.name, "intermediate", () =>
        earliest(m.chain.map((c) => c.notAfter)),
      ),
    );
    m.on("reload", this.onMaterialReload);
    m.on("reloadError", this.onReloadError);
    common.revocation?.on("update", this.onRevocationUpdate);
  }

  /** Connections being piped right now. */
  get openConnections(): number {
    return this.live.size;
  }

  /**
   * How much of the peer's chain verification reads: the leaf alone when no revocation checker in
   * force needs the issuer (cheaper per handshake), else the full chain. Asked per connection, right
   * before verifying, so a checker swapped in later gets its issuers.
   */
  protected peerChain(): "full" | "leaf" {
    const r = this.revocation;
    return r && (r.needsIssuer?.() ?? true) ? "full" : "leaf";
  }

  /**
   * The `onData` of a connection's pipe: the byte counters, shared by the tunnel's connections,
   * and `touch` (an FTP data connection keeping its control connection alive) if given.
   */
  protected pipeOnData(touch?: () => void): (dir: "in" | "out", n: number) => void {
    const count = this.countBytes;
    return touch
      ? (dir, n) => {
          count(dir, n);
          touch();
        }
      : count;
  }

  /** Called after the material swapped in new files. */
  protected materialReloaded(): void {
    const c = this.common.material.certificate;
    this.log.info({ serial: c.serial, subject: c.subject, notAfter: c.notAfter }, "TLS certificate reloaded");
    this.emit("reload", c);
  }

  /** Stops accepting (the subclass closes its listener), then drains like stop(). */
  protected async drain(deadlineMs: number, closeListener: () => void): Promise<StopResult> {
    if (!this.stopping) {
      this.stopping = true;
      this.log.info({ open: this.live.size, deadlineMs }, "stopping: no new connections, draining");
      // Connections still in their handshake or verification are refused when they get there.
      closeListener();
    }
    const before = this.live.size;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.live.whenEmpty().then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), deadlineMs);
      }),
    ]);
    clearTimeout(timer);
    const cut = timedOut ? this.live.size : 0;
    if (timedOut) this.live.closeAll("shutdown", `still open at the ${deadlineMs} ms shutdown deadline`);
    await this.live.whenEmpty();
    for (const s of this.sockets) s.destroy();
    this.detach();
    this.log.info({ drained: before - cut, cut }, "stopped");
    return { drained: before - cut, cut };
  }

  protected track(socket: Socket): void {
    this.sockets.add(socket);
    socket.once("close", () => this.sockets.delete(socket));
  }

  protected detach(): void {
    for (const u of this.unwatch.splice(0)) u();
    this.common.material.off("reload", this.onMaterialReload);
    this.common.material.off("reloadError", this.onReloadError);
    this.common.revocation?.off("update", this.onRevocationUpdate);
  }

  protected audit(fields: ConnectionAuditFields): void {
    connectionEvent(this.log, fields);
    this.emit("connection", fields);
  }

  /** Closes the connection at max-conn-lifetime, or when the peer's certificate expires. */
  protected lifetimeTimer(conn: LiveConnection): { cancel(): void } {
    const now = this.clock().getTime();
    const max = this.common.maxConnLifetimeMs;
    const byLifetime = max && max > 0 ? now + max : Number.POSITIVE_INFINITY;
    const notAfter = conn.leaf.notAfter;
    const at = Math.min(byLifetime, notAfter.getTime());
    const reason = byLifetime <= notAfter.getTime() ? "max_lifetime" : "expired";
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      const wait = at - this.clock().getTime();
      if (wait <= 0) {
        conn.close(
          reason,
          reason === "expired"
            ? `the peer's certificate expired at ${notAfter.toISOString()}`
            : `open longer than the ${max} ms limit`,
        );
        return;
      }
      timer = setTimeout(arm, Math.min(wait, MAX_TIMER_MS));
      timer.unref();
    };
    arm();
    return { cancel: () => clearTimeout(timer) };
  }

  private async recheckRevocations(): Promise<void> {
    const checker = this.revocation;
    if (!checker || this.live.size === 0) return;
    const closed = await this.live.recheck(checker, (conn, status) => {
      this.metrics.revocationsClosed.inc({ tunnel: this.name });
      const why = status.reason ? ` (${status.reason})` : "";
      conn.close("revoked", `certificate ${conn.leaf.serial} revoked${why} [${status.source}]`);
      this.emit("revoked", conn);
    });
    if (closed) this.log.warn({ closed }, "closed open connections of revoked certificates");
  }
}

function earliest(dates: Date[]): Date | undefined {
  return dates.reduce<Date | undefined>((min, d) => (min === undefined || d < min ? d : min), undefined);
}
