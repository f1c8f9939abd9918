import { EventEmitter } from "node:events";
import {
  Agent,
  createServer as createHttpServer,
  type Server as HttpServer,
  request as httpRequest,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type ServerResponse,
  STATUS_CODES,
} from "node:http";
import {
  createServer as createH2Server,
  type Http2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  constants as h2constants,
  type ServerHttp2Session,
} from "node:http2";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { type AddressInfo, connect, isIP, type ListenOptions, type Socket } from "node:net";
import {
  createServer as createTlsServer,
  type TLSSocket,
  type Server as TlsServer,
  connect as tlsConnect,
} from "node:tls";
import { MtlsError } from "../errors.js";
import {
  type AuditIdentity,
  defaultRegistry,
  type Logger,
  type Registry,
  silentLogger,
  tunnelMetrics,
} from "../observe/index.js";
import type { CertInfo } from "../pki/certinfo.js";
import { type PeerIdentity, summarizeIdentity } from "../policy/index.js";
import type { RevocationChecker, TlsMaterial, VerifyPeer } from "../tls/index.js";
import { verifyPeer as defaultVerifyPeer } from "../tls/index.js";
import { closeRouteTokens, type TokenClaims } from "./bound-token.js";
import { ClientAuth, type InvalidVerdict } from "./client-auth.js";
import { type IdentityHeaderFormat, identityHeaders, STRIPPED_HEADERS } from "./identity-headers.js";
import { type GatewayMetrics, gatewayMetrics } from "./metrics.js";
import { type GatewayRefusal, refusalAnswer, renderRefusal } from "./refusal.js";
import { compileRelaySettings, RelayService, type RelaySettings } from "./relay.js";
import {
  asksClientCertificate,
  type GatewayRoute,
  hostOf,
  matchRoute,
  normalizeTarget,
  type UpstreamTlsOptions,
  upstreamPath,
} from "./routes.js";

export interface GatewayLimits {
  /** Largest request body accepted, in bytes (0: no limit). Default 100 MiB. */
  maxBodyBytes?: number;
  /** The whole request (headers and body) must arrive within this (Node's server.requestTimeout). Default 5 min. */
  requestTimeoutMs?: number;
  /** The request headers must arrive within this. Default 30 s. */
  headersTimeoutMs?: number;
  /** The upstream must answer (and then keep sending) without a pause longer than this. Default 60 s. */
  upstreamTimeoutMs?: number;
  /** An idle keep-alive connection from a client is closed after this. Default 60 s. */
  keepAliveTimeoutMs?: number;
  /** A TLS handshake must finish within this. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** Offer HTTP/2 by ALPN (next to HTTP/1.1). Default true. */
  http2?: boolean;
  /** Most client connections at once (0: no limit). */
  maxConnections?: number;
}

export const GATEWAY_DEFAULTS = {
  maxBodyBytes: 100 * 1024 * 1024,
  requestTimeoutMs: 300_000,
  headersTimeoutMs: 30_000,
  upstreamTimeoutMs: 60_000,
  keepAliveTimeoutMs: 60_000,
  handshakeTimeoutMs: 10_000,
  identityHeaders: "rfc9440" as IdentityHeaderFormat,
};

export interface GatewayOptions extends GatewayLimits {
  /** The `gateway` label of metrics and log lines (default: the listen address). */
  name?: string;
  /** `{ host, port }` or `{ path }`. */
  listen: ListenOptions;
  material: TlsMaterial;
  revocation?: RevocationChecker;
  routes: GatewayRoute[];
  /** Which identity headers upstreams get (default rfc9440; X-Client-Identity always). */
  identityHeaders?: IdentityHeaderFormat;
  /** Linked from the page people without a valid certificate see. */
  enrollUrl?: string;
  logger?: Logger;
  registry?: Registry;
  verifyPeer?: VerifyPeer;
  clock?: () => Date;
  /** WebSocket relays for mtls/web at /.mtls/relay/NAME (src/gateway/relay.ts). */
  relay?: RelaySettings;
}

/** One request as its audit line records it. */
export interface RequestAuditFields {
  gateway: string;
  route: string;
  peer: string;
  method: string;
  host: string | undefined;
  path: string;
  status: number;
  /** Whether the request went upstream. */
  allowed: boolean;
  /** Allowed: "proxied", "client_aborted", "upstream_reset"...; refused: the refusal reason. */
  reason: string;
  detail?: string;
  rule?: string;
  identity?: AuditIdentity;
  /**
   * The access token's sub, iss and jti (routes that require one; never the token itself; not named
   * `token`, which the logger redacts).
   */
  tokenClaims?: TokenClaims;
  upstream?: string;
  bytesIn: number;
  bytesOut: number;
  durationMs: number;
}

/** Hop-by-hop headers (RFC 9110 7.6.1), never forwarded either way. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "expect",
  "http2-settings",
]);

/** Headers grouped by name (first spelling kept), without hop-by-hop ones and those `drop` names. */
function forwardHeaders(raw: string[], drop: ReadonlySet<string>): OutgoingHttpHeaders {
  const out: Record<string, string | string[]> = {};
  const spelled = new Map<string, string>();
  let connectionTokens: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    if ((raw[i] as string).toLowerCase() === "connection") {
      connectionTokens ??= new Set();
      for (const t of (raw[i + 1] as string).split(",")) connectionTokens.add(t.trim().toLowerCase());
    }
  }
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const value = raw[i + 1] as string;
    const lower = name.toLowerCase();
    // HTTP/2 pseudo-headers (":authority", ":path", ...) are not headers to forward.
    if (lower.startsWith(":") || HOP_BY_HOP.has(lower) || drop.has(lower) || connectionTokens?.has(lower))
      continue;
    const key = spelled.get(lower);
    if (key === undefined) {
      spelled.set(lower, name);
      out[name] = value;
    } else {
      const prev = out[key] as string | string[];
      out[key] = Array.isArray(prev) ? [...prev, value] : [prev, value];
    }
  }
  return out;
}

const NOTHING: ReadonlySet<string> = new Set();

const clientAddress = (s: Socket): string =>
  (s.remoteAddress ?? "").replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, "");

const peerOf = (s: Socket): string => {
  const a = clientAddress(s);
  if (!a) return "unknown";
  return a.includes(":") ? `[${a}]:${s.remotePort ?? 0}` : `${a}:${s.remotePort ?? 0}`;
};

interface Admission {
  ok: true;
  identity?: PeerIdentity;
  chain?: CertInfo[];
  rule?: string;
  /** Optional routes: why no identity was sent although a certificate was presented. */
  note?: string;
  token?: TokenClaims;
}

interface Refused {
  ok: false;
  reason: GatewayRefusal;
  detail: string;
  identity?: PeerIdentity;
  /** A token whose signature verified but that is refused (expired, bound to another certificate). */
  token?: TokenClaims;
}

/**
 * The mTLS gateway: an HTTPS reverse proxy on node:https. The TLS handshake asks for a client
 * certificate but never fails over it (`rejectUnauthorized: false`); each request's route decides
 * (require / optional / none), the certificate is verified by tls/verifyPeer (chain, purpose,
 * validity, revocation) and authorized by the route's policy, so a refused person gets an HTTP
 * answer (a page or JSON) rather than a TLS alert. Allowed requests go to the route's upstream over
 * keep-alive HTTP/1.1 connections, bodies streamed both ways with backpressure, with the verified
 * identity in RFC 9440 / XFCC headers and every client-sent identity header stripped.
 *
 * Events: "listening" (address), "request" (audit fields, when a request ends), "relay" (a relay
 * session's audit fields, when it ends).
 */
export class Gateway extends EventEmitter {
  readonly name: string;
  private readonly opts: GatewayOptions;
  /** Accepts TLS (SNI, ALPN, client certificates) and hands each connection to the HTTP/1.1 or HTTP/2 server. */
  private readonly server: TlsServer;
  private readonly http1: HttpServer;
  private readonly h2: Http2Server | undefined;
  private readonly sessions = new Set<ServerHttp2Session>();
  private readonly log: Logger;
  private readonly metrics: GatewayMetrics;
  private readonly clock: () => Date;
  private readonly auth: ClientAuth;
  private readonly agents = new Map<string, Agent>();
  private readonly limits: Required<Omit<GatewayLimits, "maxConnections" | "http2">>;
  private format: IdentityHeaderFormat;
  private routes: readonly GatewayRoute[];
  private bound: AddressInfo | string | undefined;
  private stopping = false;
  private inFlight = 0;
  private idleWaiters: (() => void)[] = [];
  /** Upgraded (WebSocket) connections: no longer the HTTP server's, cut by stop() or `cut(reason, detail)`. */
  private readonly upgraded = new Map<Socket, (reason: string, detail: string) => void>();
  /** HTTP/2 sessions by their `socket` (the object requests' TLS connection is known by). */
  private readonly sessionBySocket = new Map<object, ServerHttp2Session>();
  /** Requests being proxied, by their TLS connection: their audit line says why a connection was cut. */
  private readonly busy = new Map<object, Set<RequestAuditFields>>();
  private readonly unwatch: (() => void)[] = [];
  /** The WebSocket relays (/.mtls/relay/NAME), answered before routing and without a client certificate. */
  private readonly relay: RelayService;
  private readonly onReload = () => {
    this.server.setSecureContext(this.opts.material.contextOptions());
    const c = this.opts.material.certificate;
    this.log.info({ serial: c.serial, subject: c.subject, notAfter: c.notAfter }, "TLS certificate reloaded");
  };
  private readonly onReloadError = (err: Error) =>
    this.log.warn({ err: err.message }, "new TLS files refused; the previous ones stay in force");

  constructor(opts: GatewayOptions) {
    super();
    if (opts.routes.length === 0 && !opts.relay?.targets.length) {
      throw new MtlsError("E_USAGE", "a gateway needs at least one route or relay");
    }
    this.opts = opts;
    this.name = opts.name ?? describeListen(opts.listen);
    this.log = (opts.logger ?? silentLogger()).child({ gateway: this.name });
    const registry = opts.registry ?? defaultRegistry();
    this.metrics = gatewayMetrics(registry);
    this.clock = opts.clock ?? (() => new Date());
    this.routes = [...opts.routes];
    this.format = opts.identityHeaders ?? GATEWAY_DEFAULTS.identityHeaders;
    this.relay = new RelayService({
      gateway: this.name,
      log: this.log,
      registry,
      onSession: (r) => this.emit("relay", r),
    });
    this.relay.configure(opts.relay);
    this.limits = {
      maxBodyBytes: opts.maxBodyBytes ?? GATEWAY_DEFAULTS.maxBodyBytes,
      requestTimeoutMs: opts.requestTimeoutMs ?? GATEWAY_DEFAULTS.requestTimeoutMs,
      headersTimeoutMs: opts.headersTimeoutMs ?? GATEWAY_DEFAULTS.headersTimeoutMs,
      upstreamTimeoutMs: opts.upstreamTimeoutMs ?? GATEWAY_DEFAULTS.upstreamTimeoutMs,
      keepAliveTimeoutMs: opts.keepAliveTimeoutMs ?? GATEWAY_DEFAULTS.keepAliveTimeoutMs,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? GATEWAY_DEFAULTS.handshakeTimeoutMs,
    };
    this.auth = new ClientAuth({
      verify: opts.verifyPeer ?? defaultVerifyPeer,
      material: opts.material,
      ...(opts.revocation ? { revocation: opts.revocation } : {}),
      clock: this.clock,
      // Revocation data updated or the certificate expired: the connection is cut.
      onInvalid: (tls, verdict) => this.cutConnection(tls, verdict),
    });
    const http2 = opts.http2 ?? true;
    this.server = createTlsServer({
      ...opts.material.contextOptions(),
      requestCert: asksClientCertificate(opts.routes),
      rejectUnauthorized: false,
      ALPNProtocols: http2 ? ["h2", "http/1.1"] : ["http/1.1"],
      handshakeTimeout: this.limits.handshakeTimeoutMs,
      noDelay: true,
    });
    if (opts.maxConnections && opts.maxConnections > 0) this.server.maxConnections = opts.maxConnections;
    // The HTTP servers never listen: they are handed connections that finished their TLS handshake
    // (what https.Server does inside), so one TLS listener serves both protocols.
    this.http1 = createHttpServer({
      requestTimeout: this.limits.requestTimeoutMs,
      headersTimeout: Math.min(this.limits.headersTimeoutMs, this.limits.requestTimeoutMs),
    });
    this.http1.keepAliveTimeout = this.limits.keepAliveTimeoutMs;
    // Starts the HTTP server's connection tracking (request and header timeouts, closeIdleConnections).
    this.http1.emit("listening");
    this.http1.on("request", (req: IncomingMessage, res: ServerResponse) => this.handle(req, res));
    // "Expect: 100-continue": the client waits for a 100 before it sends the body, which it gets only
    // once the request is admitted; a refused upload is then never sent at all.
    this.http1.on("checkContinue", (req: IncomingMessage, res: ServerResponse) =>
      this.handle(req, res, true),
    );
    this.http1.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
      if (this.relay.claims(req)) {
        this.relay.upgrade(req, socket, head);
        return;
      }
      this.onUpgrade(req, socket as TLSSocket, head).catch((err: Error) => {
        this.log.error({ err: err.message }, "unexpected error on an upgrade");
        socket.destroy();
      });
    });
    if (http2) {
      this.h2 = createH2Server({ maxSessionMemory: 64 });
      this.h2.setTimeout(this.limits.keepAliveTimeoutMs);
      this.h2.on("request", (req: Http2ServerRequest, res: Http2ServerResponse) =>
        this.handle(req as unknown as IncomingMessage, res as unknown as ServerResponse),
      );
      this.h2.on("session", (session: ServerHttp2Session) => {
        this.sessions.add(session);
        const key = session.socket;
        this.sessionBySocket.set(key, session);
        session.once("close", () => {
          this.sessions.delete(session);
          this.sessionBySocket.delete(key);
        });
        session.on("error", () => undefined);
        if (this.stopping) session.close();
      });
    }
    this.server.on("secureConnection", (tls: TLSSocket) => {
      if (this.stopping) {
        tls.destroy();
        return;
      }
      if (tls.alpnProtocol === "h2" && this.h2) this.h2.emit("connection", tls);
      else this.http1.emit("connection", tls);
    });
    this.server.on("tlsClientError", (err: NodeJS.ErrnoException, tls: TLSSocket) => {
      const reason = err.code === "ERR_TLS_HANDSHAKE_TIMEOUT" ? "handshake_timeout" : "handshake_error";
      this.metrics.refusals.inc({ gateway: this.name, route: "-", reason });
      this.log.debug({ peer: peerOf(tls), err: err.message }, "TLS handshake failed");
    });
    this.http1.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
      this.log.debug({ peer: peerOf(socket), err: err.code ?? err.message }, "bad request from a client");
      if (socket.writable && err.code !== "ECONNRESET") {
        const status = err.code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
        socket.end(
          `HTTP/1.1 ${status} ${status === 408 ? "Request Timeout" : "Bad Request"}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`,
        );
      } else socket.destroy();
    });
    const labels = { gateway: this.name };
    this.metrics.inFlight.inc(labels, 0);
    for (const direction of ["in", "out"]) this.metrics.bytes.inc({ ...labels, direction }, 0);
    for (const reason of ["revoked", "expired"]) this.metrics.connectionsCut.inc({ ...labels, reason }, 0);
    const expiry = tunnelMetrics(registry);
    const m = opts.material;
    this.unwatch.push(expiry.watchCertificate(this.name, "leaf", () => m.certificate.notAfter));
    m.on("reload", this.onReload);
    m.on("reloadError", this.onReloadError);
  }

  /** Starts listening; rejects with an E_IO MtlsError (address in use, ...). */
  async start(): Promise<AddressInfo | string> {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        reject(
          new MtlsError(
            "E_IO",
            `gateway: cannot listen on ${describeListen(this.opts.listen)}: ${err.code ?? err.message}`,
          ),
        );
      };
      this.server.once("error", onError);
      this.server.listen(this.opts.listen, () => {
        this.server.off("error", onError);
        resolve();
      });
    });
    this.bound = this.server.address() ?? undefined;
    this.server.on("error", (err: Error) => this.log.error({ err: err.message }, "gateway server error"));
    this.log.info(
      {
        listen: this.address(),
        routes: this.routes.map((r) => ({ route: r.name, upstream: r.upstream.origin, mode: r.mode })),
        ...(this.relay.relays.length ? { relays: this.relay.relays } : {}),
      },
      "gateway listening",
    );
    this.emit("listening", this.bound);
    return this.bound as AddressInfo | string;
  }

  /** "127.0.0.1:8443", "[::1]:8443" or "unix:/path". */
  address(): string {
    const a = this.bound;
    if (!a) throw new MtlsError("E_USAGE", "the gateway is not listening");
    if (typeof a === "string") return `unix:${a}`;
    return a.address.includes(":") ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  }

  currentRoutes(): readonly GatewayRoute[] {
    return this.routes;
  }

  /**
   * Puts new routes in force for new requests; requests in flight and open connections (keep-alive,
   * HTTP/2, WebSocket) stay as they are. The connection pools of upstreams no route uses any more
   * are closed (their connections in use finish their request first).
   */
  updateRoutes(routes: GatewayRoute[]): void {
    if (routes.length === 0 && this.relay.relays.length === 0) {
      throw new MtlsError("E_USAGE", "a gateway needs at least one route or relay");
    }
    // Token verifiers of routes that are gone stop watching their JWKS files.
    closeRouteTokens(this.routes, routes);
    this.routes = [...routes];
    const inUse = new Set(routes.map(agentKey));
    for (const [key, agent] of [...this.agents]) {
      if (inUse.has(key)) continue;
      this.agents.delete(key);
      // Sockets in use are destroyed when their request ends instead of going back to the pool.
      agent.maxFreeSockets = 0;
      for (const list of Object.values(agent.freeSockets)) for (const s of list ?? []) s.destroy();
    }
    this.log.info({ routes: routes.map((r) => r.name) }, "routes updated");
  }

  /**
   * Changes what applies to new requests without touching the listener or open connections: the
   * routes (rules, modes, upstreams) and the settings that are not the listener's (identity header
   * format, enroll URL, body and timeout limits, connection limit). Listen address, TLS files,
   * revocation sources, HTTP/2 and the handshake timeout need a new gateway (GatewayGroup restarts it).
   */
  reconfigure(
    change: {
      routes: GatewayRoute[];
      identityHeaders?: IdentityHeaderFormat;
      enrollUrl?: string;
      relay?: RelaySettings;
    } & Omit<GatewayLimits, "http2" | "handshakeTimeoutMs">,
  ): void {
    if (asksClientCertificate(change.routes) !== asksClientCertificate(this.routes)) {
      throw new MtlsError(
        "E_USAGE",
        "whether a route needs client certificates changed: the listener must be made anew (restart the gateway)",
      );
    }
    // Relays checked first: a bad relay list changes nothing. Open relay sessions keep their target.
    const relays = compileRelaySettings(change.relay);
    if (change.routes.length === 0 && !change.relay?.targets.length) {
      throw new MtlsError("E_USAGE", "a gateway needs at least one route or relay");
    }
    this.relay.apply(relays);
    this.updateRoutes(change.routes);
    this.format = change.identityHeaders ?? GATEWAY_DEFAULTS.identityHeaders;
    if (change.enrollUrl !== undefined) this.opts.enrollUrl = change.enrollUrl;
    else delete this.opts.enrollUrl;
    const l = this.limits;
    l.maxBodyBytes = change.maxBodyBytes ?? GATEWAY_DEFAULTS.maxBodyBytes;
    l.upstreamTimeoutMs = change.upstreamTimeoutMs ?? GATEWAY_DEFAULTS.upstreamTimeoutMs;
    l.requestTimeoutMs = change.requestTimeoutMs ?? GATEWAY_DEFAULTS.requestTimeoutMs;
    l.headersTimeoutMs = change.headersTimeoutMs ?? GATEWAY_DEFAULTS.headersTimeoutMs;
    l.keepAliveTimeoutMs = change.keepAliveTimeoutMs ?? GATEWAY_DEFAULTS.keepAliveTimeoutMs;
    this.http1.requestTimeout = l.requestTimeoutMs;
    this.http1.headersTimeout = Math.min(l.headersTimeoutMs, l.requestTimeoutMs);
    this.http1.keepAliveTimeout = l.keepAliveTimeoutMs;
    this.h2?.setTimeout(l.keepAliveTimeoutMs);
    const max = change.maxConnections ?? 0;
    // net.Server: undefined (or a negative number) means no limit.
    this.server.maxConnections = max > 0 ? max : (undefined as unknown as number);
  }

  /** The relays in force (name, target) and how many sessions are open. */
  get relays(): { relays: { name: string; target: string }[]; active: number } {
    return { relays: this.relay.relays, active: this.relay.active };
  }

  /** Connections whose client certificate is being watched for revocation and expiry. */
  get watchedConnections(): number {
    return this.auth.watched;
  }

  /** For /readyz: listening, not stopping, and every upstream accepts connections (https: a TLS handshake). */
  async ready(): Promise<{ ok: boolean; detail: string }> {
    if (!this.bound || !this.server.listening) return { ok: false, detail: "not listening" };
    if (this.stopping) return { ok: false, detail: "shutting down" };
    const byKey = new Map(this.routes.map((r) => [agentKey(r), r]));
    const probes = await Promise.all(
      [...byKey.values()].map((r) =>
        r.upstream.protocol === "https:"
          ? probeTlsUpstream(r.upstream, tlsOptionsOf(r), 2000)
          : probeUpstream(r.upstream, 2000),
      ),
    );
    return {
      ok: probes.every((p) => p.ok),
      detail: `listening on ${this.address()}; upstream ${probes.map((p) => p.detail).join("; ")}`,
    };
  }

  /**
   * Cuts an open connection whose client certificate no longer passes (revoked, expired): an
   * upgraded one (WebSocket) is closed, an HTTP/2 session ends with GOAWAY, an HTTP/1.1 one is
   * closed, idle or not. Requests in flight on it end with that reason in their audit line.
   */
  private cutConnection(tls: TLSSocket, verdict: InvalidVerdict): void {
    const reason = verdict.reason;
    const detail = `client certificate no longer valid: ${verdict.detail}`;
    for (const record of this.busy.get(tls) ?? []) {
      record.reason = reason;
      record.detail = detail;
    }
    this.metrics.connectionsCut.inc({ gateway: this.name, reason });
    const upgrade = this.upgraded.get(tls);
    const session = this.sessionBySocket.get(tls);
    const kind = upgrade ? "upgraded" : session ? "http2" : "http1";
    this.log.warn(
      {
        event: "connection_cut",
        peer: peerOf(tls),
        kind,
        reason,
        detail,
        ...(verdict.identity ? { identity: summarizeIdentity(verdict.identity) } : {}),
      },
      `closed an open connection: its client certificate is ${reason === "revoked" ? "revoked" : `no longer valid (${reason})`}`,
    );
    if (upgrade) upgrade(reason, detail);
    // destroy() sends GOAWAY before the connection closes; streams in flight are cut.
    else if (session) session.destroy(undefined, h2constants.NGHTTP2_NO_ERROR);
    else tls.destroy();
  }

  /**
   * Graceful stop: no new connections, idle keep-alive connections closed, requests in flight may
   * finish until `deadlineMs`, then every connection is cut.
   */
  async stop(deadlineMs = 30_000): Promise<{ drained: number; cut: number }> {
    const before = this.inFlight;
    if (!this.stopping) {
      this.stopping = true;
      this.log.info({ inFlight: before, deadlineMs }, "stopping: no new connections, draining");
      this.server.close();
      this.http1.closeIdleConnections();
      // HTTP/2: GOAWAY; streams in flight finish.
      for (const session of this.sessions) session.close();
    }
    let timer: NodeJS.Timeout | undefined;
    // Relay sessions are told (close 1001) at once and may finish their close within the drain.
    const relaysClosed = this.relay.shutdown(deadlineMs);
    const timedOut = await Promise.race([
      Promise.all([this.whenIdle(), relaysClosed]).then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), deadlineMs);
      }),
    ]);
    clearTimeout(timer);
    const cut = (timedOut ? this.inFlight : 0) + this.upgraded.size + this.relay.cutAll();
    this.http1.closeAllConnections();
    // Never listening, but closing stops its connection-checking timer.
    this.http1.close();
    for (const session of this.sessions) session.destroy();
    for (const s of this.upgraded.keys()) s.destroy();
    for (const agent of this.agents.values()) agent.destroy();
    this.agents.clear();
    this.detach();
    this.log.info({ drained: before - cut, cut }, "stopped");
    return { drained: before - cut, cut };
  }

  private whenIdle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private detach(): void {
    for (const u of this.unwatch.splice(0)) u();
    this.opts.material.off("reload", this.onReload);
    this.opts.material.off("reloadError", this.onReloadError);
    this.auth.close();
    closeRouteTokens(this.routes);
  }

  /** The keep-alive connection pool of a route's upstream (one per origin and TLS options). */
  private agentFor(route: GatewayRoute): Agent {
    const key = agentKey(route);
    let agent = this.agents.get(key);
    if (!agent) {
      const pool = {
        keepAlive: true,
        keepAliveMsecs: 1000,
        maxSockets: 512,
        maxFreeSockets: 64,
        // Free sockets are closed before common upstream keep-alive timeouts (Node's 5 s) expire.
        timeout: 4000,
        scheduling: "lifo" as const,
      };
      agent =
        route.upstream.protocol === "https:"
          ? new HttpsAgent({ ...pool, ...tlsOptionsOf(route), rejectUnauthorized: true })
          : new Agent(pool);
      this.agents.set(key, agent);
    }
    return agent;
  }

  /** Who may pass to `route`, and with which identity. */
  /**
   * Who may pass to `route`, and with which identity: the client certificate and the route's rules
   * first, then the route's access token (bound ones to the certificate verified on this connection).
   */
  private async admit(req: IncomingMessage, route: GatewayRoute): Promise<Admission | Refused> {
    const admitted = await this.admitCertificate(req, route);
    const verifier = route.token;
    if (!admitted.ok || !verifier) return admitted;
    verifier.watch({
      onReload: () => this.log.info({ route: route.name, jwks: verifier.source }, "JWKS reloaded"),
      onError: (err) =>
        this.log.warn(
          { route: route.name, err: err.message },
          "new JWKS refused; the previous keys stay in force",
        ),
    });
    const authorization: string[] = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      if ((req.rawHeaders[i] as string).toLowerCase() === "authorization") {
        authorization.push(req.rawHeaders[i + 1] as string);
      }
    }
    const t = await verifier.verify(authorization, admitted.identity?.der, this.clock());
    if (!t.ok) {
      return {
        ok: false,
        reason: t.reason,
        detail: t.detail,
        ...(admitted.identity ? { identity: admitted.identity } : {}),
        ...(t.claims ? { token: t.claims } : {}),
      };
    }
    return { ...admitted, token: t.claims };
  }

  /** The client certificate's verdict and the route's rules. */
  private async admitCertificate(req: IncomingMessage, route: GatewayRoute): Promise<Admission | Refused> {
    if (route.mode === "none") return { ok: true };
    const v = await this.auth.verify(tlsOf(req));
    if (route.mode === "optional") {
      if (v.ok) return { ok: true, identity: v.identity, chain: v.chain ?? [v.leaf] };
      return v.reason === "no_certificate"
        ? { ok: true }
        : { ok: true, note: `certificate not accepted (${v.reason}): ${v.detail}` };
    }
    if (!v.ok) {
      return {
        ok: false,
        reason: v.reason,
        detail: v.detail,
        ...(v.identity ? { identity: v.identity } : {}),
      };
    }
    const decision = route.policy.authorize(v.identity, { method: req.method ?? "GET" });
    if (!decision.allowed) {
      return { ok: false, reason: "not_allowed", detail: decision.reason, identity: v.identity };
    }
    return {
      ok: true,
      identity: v.identity,
      chain: v.chain ?? [v.leaf],
      ...(decision.rule ? { rule: decision.rule } : {}),
    };
  }

  private handle(req: IncomingMessage, res: ServerResponse, expectContinue = false): void {
    if (this.relay.claims(req)) {
      this.relay.answer(req, res);
      return;
    }
    this.onRequest(req, res, expectContinue).catch((err: Error) => {
      this.log.error({ err: err.message }, "unexpected error on a request");
      res.destroy();
    });
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse, expectContinue: boolean): Promise<void> {
    const started = process.hrtime.bigint();
    const labels = { gateway: this.name };
    this.inFlight++;
    this.metrics.inFlight.inc(labels);
    const method = req.method ?? "GET";
    const h2 = req.httpVersionMajor === 2;
    const rawHost = req.headers.host ?? req.headers[":authority"] ?? (req.socket as TLSSocket).servername;
    const host = hostOf(typeof rawHost === "string" ? rawHost : undefined);
    const record: RequestAuditFields = {
      gateway: this.name,
      route: "-",
      peer: peerOf(req.socket),
      method,
      host,
      path: (req.url ?? "").slice(0, 2048),
      status: 0,
      allowed: false,
      reason: "proxied",
      bytesIn: 0,
      bytesOut: 0,
      durationMs: 0,
    };
    if (this.stopping && !h2) res.setHeader("connection", "close");
    res.once("close", () => {
      this.inFlight--;
      this.metrics.inFlight.dec(labels);
      if (record.allowed && !res.writableFinished && record.reason === "proxied")
        record.reason = "client_aborted";
      record.status = res.headersSent ? res.statusCode : 0;
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      record.durationMs = Math.round(seconds * 1e6) / 1000;
      this.metrics.requests.inc({ gateway: this.name, route: record.route, status: String(record.status) });
      this.metrics.duration.observe({ gateway: this.name, route: record.route }, seconds);
      this.metrics.bytes.inc({ ...labels, direction: "in" }, record.bytesIn);
      this.metrics.bytes.inc({ ...labels, direction: "out" }, record.bytesOut);
      this.auditRequest(record);
      if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
    });

    const target = normalizeTarget(req.url ?? "");
    if (!target)
      return this.refuse(req, res, record, "bad_request", `request target ${record.path} is not a path`);
    record.path = target.path.slice(0, 2048);
    const route = matchRoute(this.routes, host, target.path);
    if (!route) return this.refuse(req, res, record, "no_route", `no route for ${host ?? "*"}${target.path}`);
    record.route = route.name;
    const admission = await this.admit(req, route);
    if (admission.token) record.tokenClaims = admission.token;
    if (!admission.ok) {
      if (admission.identity) record.identity = summarizeIdentity(admission.identity);
      return this.refuse(req, res, record, admission.reason, admission.detail, route, admission.identity);
    }
    if (admission.identity) record.identity = summarizeIdentity(admission.identity);
    if (admission.rule) record.rule = admission.rule;
    if (admission.note) record.detail = admission.note;

    const declared = Number(req.headers["content-length"] ?? 0);
    const max = this.limits.maxBodyBytes;
    if (max > 0 && declared > max) {
      return this.refuse(req, res, record, "too_large", `content-length ${declared} > ${max}`, route);
    }
    if (gone(res) || req.socket.destroyed) return;
    record.allowed = true;
    record.upstream = route.upstream.origin;
    if (expectContinue) res.writeContinue();
    this.proxy(req, res, route, target, admission, record);
  }

  private proxy(
    req: IncomingMessage,
    res: ServerResponse,
    route: GatewayRoute,
    target: { path: string; search: string },
    admission: Admission,
    record: RequestAuditFields,
  ): void {
    const headers = this.upstreamHeaders(req, admission);
    const hasBody = requestHasBody(req);
    // A body of unknown length (HTTP/1.1 chunked, HTTP/2 without content-length) goes chunked:
    // said explicitly, since Node would otherwise send a GET's body unframed.
    if (hasBody && req.headers["content-length"] === undefined) headers["Transfer-Encoding"] = "chunked";
    const path = upstreamPath(route, target.path, target.search);
    const max = this.limits.maxBodyBytes;
    let answered = false;
    // Known by its connection until it ends: a connection cut on revocation names it in its audit line.
    const conn = tlsOf(req);
    let onConn = this.busy.get(conn);
    if (!onConn) {
      onConn = new Set();
      this.busy.set(conn, onConn);
    }
    onConn.add(record);
    res.once("close", () => {
      const set = this.busy.get(conn);
      set?.delete(record);
      if (set?.size === 0) this.busy.delete(conn);
    });

    const send = (attempt: number): void => {
      const upReq = upstreamRequest(route, {
        method: req.method ?? "GET",
        path,
        headers,
        agent: this.agentFor(route),
      });
      let timedOut = false;
      upReq.setTimeout(this.limits.upstreamTimeoutMs, () => {
        timedOut = true;
        upReq.destroy(new Error(`no answer from the upstream within ${this.limits.upstreamTimeoutMs} ms`));
      });
      const onClientGone = () => {
        if (!res.writableFinished) upReq.destroy();
      };
      res.once("close", onClientGone);
      upReq.on("error", (err: NodeJS.ErrnoException) => {
        res.off("close", onClientGone);
        if (answered || gone(res)) return;
        // A kept-alive upstream connection may be closed by the upstream just as it is reused.
        if (
          attempt === 0 &&
          upReq.reusedSocket &&
          !hasBody &&
          err.code === "ECONNRESET" &&
          !res.headersSent
        ) {
          send(1);
          return;
        }
        const reason = timedOut ? "upstream_timeout" : "upstream_unreachable";
        this.metrics.upstreamErrors.inc({ gateway: this.name, route: route.name, reason });
        if (!res.headersSent) {
          record.allowed = false;
          this.refuse(
            req,
            res,
            record,
            reason,
            `${route.upstream.origin}: ${err.code ?? err.message}`,
            route,
          );
        } else {
          record.reason = "upstream_reset";
          record.detail = err.message;
          res.destroy();
        }
      });
      upReq.on("response", (upRes: IncomingMessage) => {
        answered = true;
        const status = upRes.statusCode ?? 502;
        const out = forwardHeaders(upRes.rawHeaders, NOTHING);
        // HTTP/2 has no reason phrase.
        if (req.httpVersionMajor === 2) res.writeHead(status, out);
        else res.writeHead(status, upRes.statusMessage, out);
        upRes.on("data", (chunk: Buffer) => {
          record.bytesOut += chunk.length;
        });
        // pipe() rather than stream.pipeline(): pipeline builds an AbortController per call and an
        // error with a stack trace when it ends (~45 µs of CPU per request on Node 20, 18% of a small
        // proxied request). What pipeline did besides piping is done here: a broken upstream answer
        // or a client that went away ends both sides and says which it was.
        let broken = false;
        const broke = (err?: Error) => {
          if (broken) return;
          broken = true;
          if (record.reason === "proxied") {
            record.reason = gone(res) && !upRes.destroyed ? "client_aborted" : "upstream_reset";
            record.detail = err?.message ?? "the upstream closed before the end of its answer";
          }
          upReq.destroy();
          upRes.destroy();
          res.destroy();
        };
        upRes.on("error", broke);
        upRes.once("close", () => {
          if (!upRes.complete) broke();
        });
        res.once("close", () => {
          if (!res.writableFinished) broke(new Error("the client closed the connection"));
        });
        upRes.pipe(res);
      });
      if (attempt > 0 || !hasBody) {
        upReq.end();
        return;
      }
      req.on("data", (chunk: Buffer) => {
        record.bytesIn += chunk.length;
        if (max > 0 && record.bytesIn > max) {
          req.unpipe(upReq);
          answered = true;
          upReq.destroy();
          record.allowed = false;
          if (!res.headersSent) {
            this.refuse(req, res, record, "too_large", `request body beyond ${max} bytes`, route);
          } else res.destroy();
        }
      });
      req.pipe(upReq);
    };
    send(0);
  }

  /**
   * A WebSocket (or other) upgrade: routed and admitted as a request, then the upstream's 101 and
   * the two connections piped both ways, with backpressure. Refusals are written as plain HTTP.
   */
  private async onUpgrade(req: IncomingMessage, socket: TLSSocket, head: Buffer): Promise<void> {
    const started = process.hrtime.bigint();
    socket.on("error", () => undefined);
    const rawHost = req.headers.host ?? socket.servername;
    const host = hostOf(typeof rawHost === "string" ? rawHost : undefined);
    const record: RequestAuditFields = {
      gateway: this.name,
      route: "-",
      peer: peerOf(socket),
      method: req.method ?? "GET",
      host,
      path: (req.url ?? "").slice(0, 2048),
      status: 0,
      allowed: false,
      reason: "upgraded",
      bytesIn: 0,
      bytesOut: 0,
      durationMs: 0,
    };
    const finish = (status: number) => {
      record.status = status;
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      record.durationMs = Math.round(seconds * 1e6) / 1000;
      this.metrics.requests.inc({ gateway: this.name, route: record.route, status: String(status) });
      this.metrics.bytes.inc({ gateway: this.name, direction: "in" }, record.bytesIn);
      this.metrics.bytes.inc({ gateway: this.name, direction: "out" }, record.bytesOut);
      this.auditRequest(record);
    };
    const refuse = (
      reason: GatewayRefusal,
      detail: string,
      route?: GatewayRoute,
      identity?: PeerIdentity,
    ) => {
      if (record.status !== 0) return;
      record.reason = reason;
      record.detail = detail;
      this.metrics.refusals.inc({ gateway: this.name, route: route?.name ?? "-", reason });
      const answer = refusalAnswer(reason);
      const { body, headers } = renderRefusal(answer, req.headers.accept, {
        ...(this.opts.enrollUrl ? { enrollUrl: this.opts.enrollUrl } : {}),
        ...(identity ? { identity } : {}),
        method: record.method,
        path: record.path,
      });
      writeRaw(socket, answer.status, headers, body);
      finish(answer.status);
    };
    if (this.stopping) return refuse("upstream_unreachable", "the gateway is shutting down");
    const target = normalizeTarget(req.url ?? "");
    if (!target) return refuse("bad_request", `request target ${record.path} is not a path`);
    record.path = target.path.slice(0, 2048);
    const route = matchRoute(this.routes, host, target.path);
    if (!route) return refuse("no_route", `no route for ${host ?? "*"}${target.path}`);
    record.route = route.name;
    const admission = await this.admit(req, route);
    if (admission.token) record.tokenClaims = admission.token;
    if (admission.identity) record.identity = summarizeIdentity(admission.identity);
    if (!admission.ok) return refuse(admission.reason, admission.detail, route, admission.identity);
    if (admission.rule) record.rule = admission.rule;
    if (socket.destroyed) return;
    record.allowed = true;
    record.upstream = route.upstream.origin;

    const headers = this.upstreamHeaders(req, admission);
    headers.Connection = "Upgrade";
    headers.Upgrade = req.headers.upgrade ?? "websocket";
    // A connection of its own (it will not go back to a pool), plain or TLS as the upstream says.
    const upReq = upstreamRequest(route, {
      method: req.method ?? "GET",
      path: upstreamPath(route, target.path, target.search),
      headers,
      agent: false,
    });
    upReq.setTimeout(this.limits.upstreamTimeoutMs, () => {
      upReq.destroy(new Error(`no answer from the upstream within ${this.limits.upstreamTimeoutMs} ms`));
    });
    upReq.on("error", (err: NodeJS.ErrnoException) => {
      this.metrics.upstreamErrors.inc({
        gateway: this.name,
        route: route.name,
        reason: "upstream_unreachable",
      });
      record.allowed = false;
      refuse("upstream_unreachable", `${route.upstream.origin}: ${err.code ?? err.message}`, route);
    });
    upReq.on("response", (upRes: IncomingMessage) => {
      // The upstream declined the upgrade: pass its answer on and close.
      record.reason = "not_upgraded";
      const lines = [`HTTP/1.1 ${upRes.statusCode ?? 502} ${upRes.statusMessage ?? ""}`];
      const h = forwardHeaders(upRes.rawHeaders, NOTHING);
      for (const [k, v] of Object.entries(h)) for (const one of [v].flat()) lines.push(`${k}: ${one}`);
      socket.write(`${lines.join("\r\n")}\r\nconnection: close\r\n\r\n`);
      upRes.pipe(socket);
      upRes.once("end", () => finish(upRes.statusCode ?? 502));
    });
    upReq.on("upgrade", (upRes: IncomingMessage, upSocket: Socket, upHead: Buffer) => {
      upReq.setTimeout(0);
      upSocket.setTimeout(0);
      // The client left (or its connection was cut) while the upstream answered.
      if (socket.destroyed) {
        upSocket.destroy();
        record.reason = "client_aborted";
        finish(0);
        return;
      }
      const lines = [`HTTP/1.1 ${upRes.statusCode ?? 101} ${upRes.statusMessage ?? "Switching Protocols"}`];
      for (let i = 0; i < upRes.rawHeaders.length; i += 2) {
        lines.push(`${upRes.rawHeaders[i]}: ${upRes.rawHeaders[i + 1]}`);
      }
      socket.write(`${lines.join("\r\n")}\r\n\r\n`);
      if (upHead.length) socket.write(upHead);
      if (head.length) upSocket.write(head);
      this.upgraded.set(socket, (reason, detail) => {
        record.reason = reason;
        record.detail = detail;
        socket.destroy();
        upSocket.destroy();
      });
      upSocket.on("error", () => socket.destroy());
      socket.on("error", () => upSocket.destroy());
      socket.on("data", (c: Buffer) => {
        record.bytesIn += c.length;
      });
      upSocket.on("data", (c: Buffer) => {
        record.bytesOut += c.length;
      });
      socket.pipe(upSocket);
      upSocket.pipe(socket);
      let closed = 0;
      const onClose = () => {
        closed++;
        if (closed === 1) {
          socket.destroy();
          upSocket.destroy();
          this.upgraded.delete(socket);
          finish(101);
        }
      };
      socket.once("close", onClose);
      upSocket.once("close", onClose);
    });
    upReq.end();
  }

  /** The request headers an upstream gets: the client's, without hop-by-hop and forgeable ones, plus identity. */
  private upstreamHeaders(req: IncomingMessage, admission: Admission): OutgoingHttpHeaders {
    const headers = forwardHeaders(req.rawHeaders, STRIPPED_HEADERS);
    if (admission.identity) {
      Object.assign(
        headers,
        identityHeaders(admission.identity, admission.chain ?? [], this.format, this.gatewayUri()),
      );
    }
    headers["X-Forwarded-For"] = clientAddress(req.socket);
    headers["X-Forwarded-Proto"] = "https";
    const authority = req.headers.host ?? req.headers[":authority"];
    // HTTP/2 carries the host as :authority; an HTTP/1.1 upstream needs a Host header.
    if (typeof authority === "string") {
      if (req.headers.host === undefined) headers.Host = authority;
      headers["X-Forwarded-Host"] = authority;
    }
    return headers;
  }

  private gatewayUri(): string | undefined {
    return this.opts.material.certificate.sans.find((s) => s.type === "uri")?.value;
  }

  /** Answers a refused request with a page or JSON, counts and records it. */
  private refuse(
    req: IncomingMessage,
    res: ServerResponse,
    record: RequestAuditFields,
    reason: GatewayRefusal,
    detail: string,
    route?: GatewayRoute,
    identity?: PeerIdentity,
  ): void {
    record.reason = reason;
    record.detail = detail;
    this.metrics.refusals.inc({ gateway: this.name, route: route?.name ?? "-", reason });
    if (res.headersSent || gone(res)) {
      res.destroy();
      return;
    }
    const answer = refusalAnswer(reason);
    const { body, headers } = renderRefusal(answer, req.headers.accept, {
      ...(this.opts.enrollUrl ? { enrollUrl: this.opts.enrollUrl } : {}),
      ...(identity ? { identity } : {}),
      method: req.method ?? "GET",
      path: record.path,
    });
    // A body not read (or read only in part) cannot be skipped reliably: close after answering.
    const unread = !req.complete;
    const closeAfter = unread && req.httpVersionMajor < 2;
    res.writeHead(answer.status, closeAfter ? { ...headers, connection: "close" } : headers);
    res.end(req.method === "HEAD" ? undefined : body);
    if (unread) req.resume();
  }

  private auditRequest(r: RequestAuditFields): void {
    const line = { event: "request", ...r };
    const msg = r.allowed ? `${r.method} ${r.path} ${r.status}` : `request refused: ${r.reason}`;
    if (r.allowed) this.log.info(line, msg);
    else this.log.warn(line, msg);
    this.emit("request", r);
  }
}

/**
 * Whether a request carries a body: HTTP/1.1 says so by Content-Length or Transfer-Encoding; an
 * HTTP/2 request has one unless its HEADERS frame ended the stream.
 */
function requestHasBody(req: IncomingMessage): boolean {
  if (req.httpVersionMajor === 2) {
    return !(req as unknown as Http2ServerRequest).stream.endAfterHeaders;
  }
  return req.headers["transfer-encoding"] !== undefined || Number(req.headers["content-length"] ?? 0) > 0;
}

/**
 * The TLS connection of a request: the socket itself for HTTP/1.1; for HTTP/2 the session's socket
 * (one object per connection, so a connection's certificate is verified once, not per stream).
 */
function tlsOf(req: IncomingMessage): TLSSocket {
  if (req.httpVersionMajor === 2) {
    const session = (req as unknown as Http2ServerRequest).stream.session;
    if (session?.socket) return session.socket as TLSSocket;
  }
  return req.socket as TLSSocket;
}

/** Whether a response (HTTP/1.1, or HTTP/2 compat, which has no `destroyed`) can no longer be written. */
function gone(res: ServerResponse): boolean {
  const stream = (res as unknown as { stream?: { destroyed: boolean } }).stream;
  return res.destroyed === true || stream?.destroyed === true;
}

/** A plain HTTP answer on a socket the HTTP server has let go of (an upgrade), then close. */
function writeRaw(socket: Socket, status: number, headers: Record<string, string>, body: string): void {
  if (socket.destroyed) return;
  const lines = [`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ""}`];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  lines.push("connection: close", "", "");
  socket.end(lines.join("\r\n") + body);
}

function describeListen(l: ListenOptions): string {
  if (l.path) return `unix:${l.path}`;
  const host = l.host ?? "";
  return `${host.includes(":") ? `[${host}]` : host}:${l.port ?? 0}`;
}

/** A route's pool key: its upstream's origin and, for https, which TLS options. */
function agentKey(route: GatewayRoute): string {
  return route.upstream.protocol === "https:"
    ? `${route.upstream.origin}|${route.tls?.id ?? ""}`
    : route.upstream.origin;
}

/** The TLS options of an https:// route's upstream connections (defaults: Node's CA store, SNI = its host). */
function tlsOptionsOf(route: GatewayRoute): Omit<UpstreamTlsOptions, "id"> {
  if (route.tls) {
    const { id: _id, ...rest } = route.tls;
    return rest;
  }
  const host = route.upstream.hostname.replace(/^\[|\]$/g, "");
  // No SNI for an address (RFC 6066); "" also keeps Node from taking the name from the Host header.
  return { servername: isIP(host) ? "" : host };
}

/** A request to a route's upstream, over TLS for https:// (certificate and server name checked). */
function upstreamRequest(
  route: GatewayRoute,
  o: { method: string; path: string; headers: OutgoingHttpHeaders; agent: Agent | false },
) {
  const base = {
    hostname: route.upstream.hostname.replace(/^\[|\]$/g, ""),
    method: o.method,
    path: o.path,
    headers: o.headers,
    agent: o.agent,
    setHost: false,
  };
  if (route.upstream.protocol === "https:") {
    return httpsRequest({
      ...base,
      protocol: "https:",
      port: route.upstream.port || 443,
      ...tlsOptionsOf(route),
      rejectUnauthorized: true,
    });
  }
  return httpRequest({ ...base, protocol: "http:", port: route.upstream.port || 80 });
}

/** Whether an https:// upstream completes a TLS handshake (certificate and name verified) within `ms`. */
function probeTlsUpstream(
  url: URL,
  tls: Omit<UpstreamTlsOptions, "id">,
  ms: number,
): Promise<{ ok: boolean; detail: string }> {
  return new Promise((resolve) => {
    const host = url.hostname.replace(/^\[|\]$/g, "");
    const socket = tlsConnect({
      host,
      port: Number(url.port || 443),
      ...tls,
      rejectUnauthorized: true,
      ALPNProtocols: ["http/1.1"],
    });
    const done = (ok: boolean, detail: string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ ok, detail: `${url.origin} ${detail}` });
    };
    const timer = setTimeout(() => done(false, "timed out"), ms);
    socket.once("secureConnect", () => done(true, "completes a TLS handshake"));
    socket.once("error", (err: NodeJS.ErrnoException) => done(false, err.code ?? err.message));
  });
}

/** Whether an upstream accepts a TCP connection within `ms`. */
function probeUpstream(url: URL, ms: number): Promise<{ ok: boolean; detail: string }> {
  return new Promise((resolve) => {
    const socket = connect({ host: url.hostname.replace(/^\[|\]$/g, ""), port: Number(url.port || 80) });
    const done = (ok: boolean, detail: string) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ ok, detail: `${url.origin} ${detail}` });
    };
    const timer = setTimeout(() => done(false, "timed out"), ms);
    socket.once("connect", () => done(true, "accepts connections"));
    socket.once("error", (err: NodeJS.ErrnoException) => done(false, err.code ?? err.message));
  });
}
