import type { Socket } from "node:net";
import type { SecureContextOptions } from "node:tls";
import { createServer, type TLSSocket, type Server as TlsServer } from "node:tls";
import { MtlsError } from "../errors.js";
import { defaultRegistry } from "../observe/index.js";
import type { PeerIdentity, Policy } from "../policy/index.js";
import type { RefusalReason, TlsMaterial } from "../tls/index.js";
import { type Address, formatAddress, isLoopback } from "./address.js";
import {
  DEFAULT_TIMEOUTS,
  KEEPALIVE_MS,
  type StopResult,
  TunnelBase,
  type TunnelCommonOptions,
} from "./base.js";
import { type FtpAccepted, FtpServerEnd } from "./ftp-session.js";
import type { LiveConnection } from "./live.js";
import { ConnectError, connectWithTimeout, listenOn, probe } from "./net-util.js";
import { type PipeResult, pipeSockets } from "./pipe.js";
import {
  buildProxyHeaderV2,
  certificateAlgorithms,
  endpointOf,
  PP2_CLIENT,
  type ProxyEndpoint,
} from "./proxy-protocol.js";
import { auditIdentity, describeTlsError, handshakeFailureReason, peerOf } from "./report.js";
import { type TargetTls, TargetTlsError } from "./target-tls.js";

/** Where verified peers go: one route per TLS server name (SNI), and one default without. */
export interface Route {
  /** Exact server name (case-insensitive) or "*.example.test" (one label); absent: the default route. */
  serverName?: string;
  target: Address;
  policy: Policy;
  /**
   * "ftp": the target is an FTP server and the clients are tunnel clients with --protocol ftp;
   * passive-mode data connections are carried over mTLS too (ftp.ts). Default "tcp".
   */
  protocol?: "tcp" | "ftp";
  /**
   * The certificate (and trust anchors) presented to peers that ask for this server name, chosen
   * during the handshake (SNI); absent: the tunnel's own material.
   */
  material?: TlsMaterial;
  /**
   * The target speaks TLS (or mTLS): the leg to it is wrapped by this (target-tls.ts), verified,
   * and may present a fixed or a per-caller minted client certificate. TCP routes only.
   */
  targetTls?: TargetTls;
}

export interface TunnelServerOptions extends TunnelCommonOptions {
  routes: Route[];
  /** Send a PROXY protocol v2 header (addresses, TLS details, client certificate) to the target first. */
  proxyProtocol?: boolean;
  /** Allow a target that is neither loopback nor a Unix socket (plain text over a network). */
  unsafeTarget?: boolean;
  /** FTP routes: how long an announced data port stays usable (default 30 s). */
  ftpDataTimeoutMs?: number;
}

/**
 * An mTLS tunnel server: accepts TLS with a required client certificate, verifies the peer
 * (chain, purpose, validity, revocation), authorizes its identity against the route's policy, then
 * pipes the connection to the route's plain TCP (or Unix socket) target.
 *
 * The handshake itself never rejects (`rejectUnauthorized: false`): every refusal is decided after
 * it, so it is logged, counted and audited with its reason. Events: "listening" (address),
 * "connection" (audit fields, when a connection ends or is refused), "reload" (new leaf),
 * "revoked" (a connection closed because its certificate was revoked).
 */
export class TunnelServer extends TunnelBase {
  private readonly opts: TunnelServerOptions;
  private readonly server: TlsServer;
  private bound: Address | undefined;
  /** FTP sessions and their data ports, made when a connection first takes an FTP route. */
  private ftpEnd: FtpServerEnd | undefined;
  /** The routes in force (replaced whole by updateRoutes; a connection keeps the route it got). */
  private routes: readonly Route[];

  constructor(opts: TunnelServerOptions) {
    validateRoutes(opts.routes, opts.unsafeTarget);
    super(opts, formatAddress(opts.listen));
    this.opts = opts;
    this.routes = [...opts.routes];
    this.server = createServer({
      ...contextOptionsOf(opts.material),
      // A route with its own certificate answers its server name with it; the rest get the default.
      SNICallback: (serverName, cb) => cb(null, this.route(serverName)?.material?.current()),
      requestCert: true,
      rejectUnauthorized: false,
      handshakeTimeout: opts.handshakeTimeoutMs ?? DEFAULT_TIMEOUTS.handshakeTimeoutMs,
      allowHalfOpen: true,
      noDelay: true,
      // Peers that vanish without a FIN are found by TCP keepalive, not only by the idle timeout.
      keepAlive: true,
      keepAliveInitialDelay: KEEPALIVE_MS,
    });
    this.applyContext();
    if (opts.maxConnections && opts.maxConnections > 0) this.server.maxConnections = opts.maxConnections;
    this.server.on("connection", (s: Socket) => this.onTcp(s));
    this.server.on("drop", (d?: { remoteAddress?: string; remotePort?: number }) => this.onDrop(d));
    this.server.on("tlsClientError", (err: NodeJS.ErrnoException, tls: TLSSocket) =>
      this.refuse(tls, handshakeFailureReason(err), describeTlsError(err), this.clock()),
    );
    this.server.on("secureConnection", (tls: TLSSocket) => {
      this.onSecure(tls).catch((err: Error) => {
        this.log.error({ err: err.message }, "unexpected error on a connection");
        tls.destroy();
      });
    });
  }

  /** Starts listening; rejects with an E_IO MtlsError (address in use, ...). */
  async start(): Promise<Address> {
    this.bound = await listenOn(this.server, this.opts.listen, "tunnel server");
    this.log.info(
      {
        listen: formatAddress(this.bound),
        routes: this.routes.map((r) => ({
          serverName: r.serverName ?? "*",
          target: formatAddress(r.target),
        })),
      },
      "tunnel server listening",
    );
    this.emit("listening", this.bound);
    return this.bound;
  }

  /** The address bound by start(). */
  address(): Address {
    if (!this.bound) throw new MtlsError("E_USAGE", "the tunnel server is not listening");
    return this.bound;
  }

  /** For /readyz: listening, not stopping, and every target accepts connections. */
  async ready(): Promise<{ ok: boolean; detail: string }> {
    if (!this.bound || !this.server.listening) return { ok: false, detail: "not listening" };
    if (this.stopping) return { ok: false, detail: "shutting down" };
    const probes = await Promise.all(this.routes.map((r) => probe(r.target, 2000)));
    return {
      ok: probes.every((p) => p.ok),
      detail: `listening on ${formatAddress(this.bound)}; target ${probes.map((p) => p.detail).join("; ")}`,
    };
  }

  /**
   * Graceful stop: stops accepting, lets open connections finish until `deadlineMs` has passed,
   * then cuts the rest. Handshakes in progress are dropped at once.
   */
  stop(deadlineMs = 30_000): Promise<StopResult> {
    return this.drain(deadlineMs, () => this.server.close());
  }

  /** The routes in force. */
  currentRoutes(): readonly Route[] {
    return this.routes;
  }

  /**
   * Puts new routes in force (policies, targets, per-name certificates) for new connections; open
   * connections keep running under the route they were allowed by. Checked as in the constructor.
   */
  updateRoutes(routes: Route[]): void {
    validateRoutes(routes, this.opts.unsafeTarget);
    this.routes = [...routes];
    this.log.info(
      {
        routes: routes.map((r) => ({ serverName: r.serverName ?? "*", target: formatAddress(r.target) })),
      },
      "routes updated",
    );
  }

  protected override materialReloaded(): void {
    this.applyContext();
    super.materialReloaded();
  }

  /**
   * New connections get the material's current context; open ones keep theirs. Node's
   * server.setSecureContext() takes context *options*, not a SecureContext, so the options are used
   * when the material offers them (tls/material.ts does, as contextOptions()).
   */
  private applyContext(): void {
    const options = contextOptionsOf(this.opts.material);
    if (options) {
      this.server.setSecureContext(options);
    } else {
      // A material without contextOptions(): hand the SecureContext to the server directly. Node's
      // connection listener reads `_sharedCreds` for every new connection (checked on Node 20).
      (this.server as unknown as { _sharedCreds: unknown })._sharedCreds = this.opts.material.current();
    }
  }

  private onTcp(s: Socket): void {
    this.track(s);
    this.metrics.connectionsTotal.inc({ tunnel: this.name });
    if (this.stopping) s.destroy();
  }

  private onDrop(d?: { remoteAddress?: string; remotePort?: number }): void {
    this.metrics.connectionsTotal.inc({ tunnel: this.name });
    this.metrics.rejected.inc({ tunnel: this.name, reason: "max_connections" });
    this.log.warn(
      { peer: d ? peerOf(d) : "unknown", maxConnections: this.opts.maxConnections },
      "connection dropped: too many connections",
    );
  }

  private refuse(
    tls: TLSSocket,
    reason: RefusalReason,
    detail: string,
    startedAt: Date,
    identity?: PeerIdentity,
  ): void {
    this.metrics.handshakeFailures.inc({ tunnel: this.name, reason });
    this.audit({
      tunnel: this.name,
      peer: this.peer(tls),
      allowed: false,
      reason,
      detail,
      ...(identity ? { identity: auditIdentity(identity) } : {}),
      ...(typeof tls.servername === "string" ? { serverName: tls.servername } : {}),
      bytesIn: 0,
      bytesOut: 0,
      durationMs: this.clock().getTime() - startedAt.getTime(),
      startedAt,
    });
    tls.destroy();
  }

  private peer(tls: TLSSocket): string {
    const l = this.opts.listen;
    return peerOf(tls, l.kind === "unix" ? l.path : undefined);
  }

  private route(serverName: string | false | null | undefined): Route | undefined {
    const name = typeof serverName === "string" ? serverName.toLowerCase() : undefined;
    const routes = this.routes;
    if (name) {
      const exact = routes.find((r) => r.serverName?.toLowerCase() === name);
      if (exact) return exact;
      const dot = name.indexOf(".");
      const wild = dot > 0 ? `*${name.slice(dot)}` : undefined;
      const w = wild && routes.find((r) => r.serverName?.toLowerCase() === wild);
      if (w) return w;
    }
    return routes.find((r) => r.serverName === undefined);
  }

  private async onSecure(tls: TLSSocket): Promise<void> {
    const startedAt = this.clock();
    // From here on, errors are reported by the refusal or the pipe; never crash on one.
    tls.on("error", () => undefined);
    if (this.stopping) {
      tls.destroy();
      return;
    }
    const resumed = tls.isSessionReused();
    if (resumed) this.metrics.resumed.inc({ tunnel: this.name });
    const v = await this.verify(tls, {
      purpose: "client",
      ...(this.revocation ? { revocation: this.revocation } : {}),
      peerChain: this.peerChain(),
      clock: this.clock,
    });
    if (!v.ok) return this.refuse(tls, v.reason, v.detail, startedAt, v.identity);
    const route = this.route(tls.servername);
    if (!route) {
      const detail =
        typeof tls.servername === "string"
          ? `no route for server name ${tls.servername}`
          : "no route for a connection without a server name (SNI)";
      return this.refuse(tls, "not_allowed", detail, startedAt, v.identity);
    }
    const decision = route.policy.authorize(v.identity);
    if (!decision.allowed) return this.refuse(tls, "not_allowed", decision.reason, startedAt, v.identity);
    if (tls.destroyed || this.stopping) {
      tls.destroy();
      return;
    }

    // FTP routes: the preamble says control or data; a data connection goes to its announced port.
    let ftp: FtpAccepted | undefined;
    if (route.protocol === "ftp") {
      ftp = await this.ftp().accept(tls, v.identity.fingerprint, routeKey(route));
      if (!ftp.ok) {
        this.audit({
          tunnel: this.name,
          peer: this.peer(tls),
          identity: auditIdentity(v.identity),
          allowed: false,
          reason: ftp.reason,
          detail: ftp.detail,
          ...(typeof tls.servername === "string" ? { serverName: tls.servername } : {}),
          bytesIn: 0,
          bytesOut: 0,
          durationMs: this.clock().getTime() - startedAt.getTime(),
          startedAt,
        });
        return;
      }
    }
    const ftpData = ftp?.ok && ftp.channel === "data" ? ftp : undefined;
    const targetAddress = ftpData ? ftpData.target : route.target;
    let ftpSession = ftpData?.session;

    const report = (result: PipeResult, detail?: string) =>
      this.audit({
        tunnel: this.name,
        peer: this.peer(tls),
        target: formatAddress(targetAddress),
        identity: auditIdentity(v.identity),
        allowed: true,
        reason: result.reason,
        ...(detail || result.error ? { detail: detail ?? result.error?.message } : {}),
        ...(decision.rule ? { rule: decision.rule } : {}),
        ...(typeof tls.servername === "string" ? { serverName: tls.servername } : {}),
        ...(ftpSession !== undefined
          ? { ftp: { channel: ftpData ? "data" : "control", session: ftpSession } }
          : {}),
        resumed,
        bytesIn: result.bytesIn,
        bytesOut: result.bytesOut,
        durationMs: this.clock().getTime() - startedAt.getTime(),
        startedAt,
      });

    let target: Socket;
    try {
      target = await connectWithTimeout(
        targetAddress,
        this.opts.connectTimeoutMs ?? DEFAULT_TIMEOUTS.connectTimeoutMs,
      );
    } catch (err) {
      const reason = err instanceof ConnectError ? err.reason : "target_unreachable";
      this.metrics.rejected.inc({ tunnel: this.name, reason });
      if (ftpData) this.ftp().dataResult("target_unreachable");
      if (ftp) this.ftp().refuse(tls, reason, reason, (err as Error).message);
      else tls.destroy();
      report({ bytesIn: 0, bytesOut: 0, reason }, (err as Error).message);
      return;
    }
    if (tls.destroyed || this.stopping) {
      target.destroy();
      tls.destroy();
      return;
    }
    if (this.opts.proxyProtocol && !ftpData) target.write(this.proxyHeader(tls, v.identity, resumed));
    // A TLS target: the PROXY header (if any) went in clear first, as HAProxy's accept-proxy expects.
    if (route.targetTls && !ftp) {
      try {
        target = await route.targetTls.wrap(
          target,
          v.identity,
          this.opts.handshakeTimeoutMs ?? DEFAULT_TIMEOUTS.handshakeTimeoutMs,
        );
      } catch (err) {
        target.destroy();
        tls.destroy();
        const detail = (err as Error).message;
        const reason = err instanceof TargetTlsError ? err.reason : "target_tls";
        this.metrics.rejected.inc({ tunnel: this.name, reason });
        this.log.warn({ peer: this.peer(tls), err: detail }, "TLS to the target failed");
        report({ bytesIn: 0, bytesOut: 0, reason }, detail);
        return;
      }
      if (tls.destroyed || this.stopping) {
        target.destroy();
        tls.destroy();
        return;
      }
    }
    let ftpControl: ReturnType<FtpServerEnd["control"]> | undefined;
    if (ftp) {
      this.ftp().acknowledge(tls);
      if (ftpData) this.ftp().dataResult("allowed");
      else {
        ftpControl = this.ftp().control(target, tls, v.identity.fingerprint, routeKey(route));
        ftpSession = ftpControl.session;
      }
    }

    const labels = { tunnel: this.name };
    const pipe = pipeSockets(tls, ftpControl?.stream ?? target, {
      ...(this.opts.idleTimeoutMs ? { idleTimeoutMs: this.opts.idleTimeoutMs } : {}),
      onData: this.pipeOnData(ftpData?.touch),
    });
    let closeDetail: string | undefined;
    ftpControl?.stream.once("problem", (p: { detail: string }) => {
      closeDetail ??= p.detail;
    });
    const conn: LiveConnection = {
      id: this.nextId++,
      startedAt,
      leaf: v.leaf,
      tls,
      close: (reason, detail) => {
        closeDetail ??= detail;
        pipe.close(reason);
      },
    };
    this.live.add(conn);
    this.metrics.connectionsOpen.inc(labels);
    const lifetime = this.lifetimeTimer(conn);
    this.log.debug(
      {
        peer: this.peer(tls),
        serial: v.leaf.serial,
        rule: decision.rule,
        target: formatAddress(targetAddress),
      },
      "connection allowed",
    );
    const result = await pipe.done;
    lifetime.cancel();
    this.live.delete(conn);
    this.metrics.connectionsOpen.dec(labels);
    report(result, closeDetail);
  }

  private ftp(): FtpServerEnd {
    this.ftpEnd ??= new FtpServerEnd({
      tunnel: this.name,
      log: this.log,
      registry: this.common.registry ?? defaultRegistry(),
      preambleTimeoutMs: this.opts.handshakeTimeoutMs ?? DEFAULT_TIMEOUTS.handshakeTimeoutMs,
      ...(this.opts.idleTimeoutMs ? { idleTimeoutMs: this.opts.idleTimeoutMs } : {}),
      ...(this.opts.ftpDataTimeoutMs ? { dataTimeoutMs: this.opts.ftpDataTimeoutMs } : {}),
      clock: this.clock,
    });
    return this.ftpEnd;
  }

  private proxyHeader(tls: TLSSocket, identity: PeerIdentity, resumed: boolean): Buffer {
    let source: ProxyEndpoint | undefined = endpointOf(tls.remoteAddress, tls.remotePort);
    let destination: ProxyEndpoint | undefined = endpointOf(tls.localAddress, tls.localPort);
    const l = this.opts.listen;
    if (l.kind === "unix") {
      source = { family: "unix", path: "" };
      destination = { family: "unix", path: l.path };
    }
    const protocol = tls.getProtocol();
    const cipher = tls.getCipher()?.name;
    return buildProxyHeaderV2({
      command: "proxy",
      ...(source && destination ? { source, destination } : {}),
      ...(typeof tls.alpnProtocol === "string" ? { alpn: tls.alpnProtocol } : {}),
      ...(typeof tls.servername === "string" ? { authority: tls.servername } : {}),
      ssl: {
        // HAProxy's meaning: CERT_CONN when the certificate came in this very handshake, CERT_SESS
        // when the TLS session (a resumed one included) carries one.
        client: PP2_CLIENT.SSL | PP2_CLIENT.CERT_SESS | (resumed ? 0 : PP2_CLIENT.CERT_CONN),
        verify: 0,
        ...(protocol ? { version: protocol } : {}),
        ...(identity.commonName ? { cn: identity.commonName } : {}),
        ...(cipher ? { cipher } : {}),
        ...certificateAlgorithms(identity.der),
        clientCert: identity.der,
      },
    });
  }
}

/** A route's identity across reloads (updateRoutes makes new objects): its server name. */
function routeKey(route: Route): string {
  return route.serverName?.toLowerCase() ?? "";
}

function validateRoutes(routes: Route[], unsafeTarget: boolean | undefined): void {
  if (routes.length === 0) throw new MtlsError("E_USAGE", "a tunnel server needs at least one route");
  const names = new Set<string>();
  for (const r of routes) {
    const key = r.serverName?.toLowerCase() ?? "";
    if (names.has(key)) {
      throw new MtlsError(
        "E_USAGE",
        r.serverName
          ? `two routes for server name ${r.serverName}`
          : "two default routes (without a server name)",
      );
    }
    names.add(key);
    if (r.protocol === "ftp" && r.target.kind !== "tcp") {
      throw new MtlsError(
        "E_USAGE",
        `--protocol ftp needs a TCP target (host:port), not ${formatAddress(r.target)}: FTP data ports are TCP ports`,
      );
    }
    if (r.targetTls && r.protocol === "ftp") {
      throw new MtlsError(
        "E_USAGE",
        "TLS to the target (--target-tls) is for TCP routes, not --protocol ftp",
      );
    }
    // A TLS target's leg is encrypted and its certificate verified: it may cross a network.
    if (!unsafeTarget && !isLoopback(r.target) && !r.targetTls) {
      throw new MtlsError(
        "E_USAGE",
        `the target ${formatAddress(r.target)} is neither loopback nor a Unix socket: its plain-text leg would cross a network (pass --unsafe-target if that is intended)`,
      );
    }
  }
}

function contextOptionsOf(material: TlsMaterial): SecureContextOptions | undefined {
  const m = material as TlsMaterial & { contextOptions?: () => SecureContextOptions };
  return typeof m.contextOptions === "function" ? m.contextOptions() : undefined;
}
