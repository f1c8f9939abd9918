import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { isIP, type ListenOptions } from "node:net";
import { createSecureContext } from "node:tls";
import { MtlsError } from "../errors.js";
import { defaultRegistry, feedMetrics, type Logger, type Registry } from "../observe/index.js";
import {
  createRevocationChecker,
  loadTlsMaterial,
  logFeedStatus,
  type RevocationChecker,
  type TlsFiles,
  type TlsMaterial,
  tlsFilesFromState,
  type VerifyPeer,
} from "../tls/index.js";
import { Gateway, type GatewayLimits } from "./gateway.js";
import type { IdentityHeaderFormat } from "./identity-headers.js";
import type { RelaySettings } from "./relay.js";
import {
  asksClientCertificate,
  compileRoutes,
  type GatewayRoute,
  type GatewayRouteSpec,
  type UpstreamTlsOptions,
} from "./routes.js";

/** A gateway described as data (from `mtls gateway` flags, mtls.yaml or a program). */
export interface GatewaySpec extends GatewayLimits {
  name?: string;
  listen: ListenOptions;
  /** The gateway's certificate, key and the CA client certificates must chain to; or a name in a local CA. */
  tls: TlsFiles | { state: string; identity: string };
  routes: GatewayRouteSpec[];
  crl?: string[];
  ocsp?: boolean;
  ocspRecheckMs?: number;
  /**
   * A CA's revocation feed (https://ca…): revoked client certificates lose their open connections
   * within a second or two. Trusted through the gateway's own CA file; down, CRL and OCSP still apply.
   */
  revocationFeed?: string;
  /** Also re-read the certificate files this often (they are watched anyway). */
  reloadIntervalMs?: number;
  identityHeaders?: IdentityHeaderFormat;
  enrollUrl?: string;
  /** Allow plain-HTTP upstreams off loopback. */
  unsafeUpstream?: boolean;
  /** How long requests in flight may finish on a graceful stop. */
  shutdownTimeoutMs?: number;
  /** WebSocket relays for mtls/web (/.mtls/relay/NAME); changed in place by reconfigure(). */
  relay?: RelaySettings;
}

export interface GatewayDeps {
  logger: Logger;
  registry?: Registry;
  verifyPeer?: VerifyPeer;
  clock?: () => Date;
}

/**
 * What only a new gateway can change: the listener, its TLS files, revocation sources, HTTP/2 and
 * the handshake timeout. Two specs with the same key differ in what BuiltGateway.reconfigure puts
 * in force in place (routes, rules, modes, upstreams, identity headers, limits).
 */
export function restartKeyOf(spec: GatewaySpec): string {
  return JSON.stringify([
    spec.name,
    spec.listen,
    spec.tls,
    spec.crl ?? [],
    spec.ocsp ?? false,
    spec.ocspRecheckMs,
    spec.revocationFeed ?? null,
    spec.reloadIntervalMs,
    spec.http2 ?? true,
    spec.handshakeTimeoutMs,
    asksClientCertificate(spec.routes),
  ]);
}

/** A gateway with the material and revocation data it holds; stop() closes them too. */
export class BuiltGateway {
  private current: GatewaySpec;
  /** Stops reporting the feed's metrics. */
  private readonly unwatchFeed: () => void;

  constructor(
    spec: GatewaySpec,
    readonly gateway: Gateway,
    private readonly material: TlsMaterial,
    private readonly revocation: RevocationChecker | undefined,
    private readonly log?: Logger,
    registry?: Registry,
  ) {
    this.current = spec;
    const checker = revocation;
    this.unwatchFeed = checker?.feedState
      ? feedMetrics(registry ?? defaultRegistry()).watch({ component: "gateway", name: gateway.name }, () =>
          checker.feedState?.(),
        )
      : () => undefined;
  }

  /** The spec in force (reconfigure() replaces it). */
  get spec(): GatewaySpec {
    return this.current;
  }

  start() {
    return this.gateway.start();
  }

  ready() {
    return this.gateway.ready();
  }

  /**
   * Puts a changed spec in force without a restart: routes (with their upstream TLS files read
   * again), identity headers, enroll URL and limits, for new requests; the listener and open
   * connections stay. Throws (E_USAGE, E_IO...) and changes nothing when the new routes do not pass,
   * or when `spec` differs in what needs a restart (restartKeyOf).
   */
  async reconfigure(spec: GatewaySpec): Promise<void> {
    if (restartKeyOf(spec) !== restartKeyOf(this.current)) {
      throw new MtlsError(
        "E_USAGE",
        "the listen address, TLS settings or whether a route needs client certificates changed: the gateway needs a restart",
      );
    }
    const routes = await loadRoutes(spec);
    this.gateway.reconfigure({ ...settingsOf(spec), routes });
    this.current = spec;
  }

  /**
   * Re-reads the certificate files now (SIGHUP), the gateway's own and the upstream TLS files of
   * its https:// routes; true if any changed. Upstream files that cannot be read are reported and
   * the ones in force stay.
   */
  async reloadFiles(): Promise<boolean> {
    const own = await this.material.reload();
    let upstream = false;
    try {
      // The routes in force (same rules, same token verifiers), their upstream files read again.
      const current = this.gateway.currentRoutes();
      const fresh = await withUpstreamTls(current);
      const ids = (rs: readonly GatewayRoute[]) => rs.map((r) => r.tls?.id ?? "").join(",");
      if (ids(fresh) !== ids(current)) {
        this.gateway.updateRoutes(fresh);
        upstream = true;
      }
    } catch (err) {
      this.log?.warn(
        { err: (err as Error).message },
        "upstream TLS files not reloaded; the ones in force stay",
      );
    }
    return own || upstream;
  }

  async stop(deadlineMs = this.spec.shutdownTimeoutMs ?? 30_000) {
    try {
      return await this.gateway.stop(deadlineMs);
    } finally {
      this.close();
    }
  }

  close(): void {
    this.unwatchFeed();
    this.material.close();
    this.revocation?.close();
  }
}

/** The settings of a spec that a running gateway takes in place (Gateway.reconfigure). */
function settingsOf(spec: GatewaySpec) {
  return {
    ...(spec.identityHeaders !== undefined ? { identityHeaders: spec.identityHeaders } : {}),
    ...(spec.enrollUrl !== undefined ? { enrollUrl: spec.enrollUrl } : {}),
    ...(spec.maxBodyBytes !== undefined ? { maxBodyBytes: spec.maxBodyBytes } : {}),
    ...(spec.requestTimeoutMs !== undefined ? { requestTimeoutMs: spec.requestTimeoutMs } : {}),
    ...(spec.headersTimeoutMs !== undefined ? { headersTimeoutMs: spec.headersTimeoutMs } : {}),
    ...(spec.upstreamTimeoutMs !== undefined ? { upstreamTimeoutMs: spec.upstreamTimeoutMs } : {}),
    ...(spec.keepAliveTimeoutMs !== undefined ? { keepAliveTimeoutMs: spec.keepAliveTimeoutMs } : {}),
    ...(spec.maxConnections !== undefined ? { maxConnections: spec.maxConnections } : {}),
    ...(spec.relay !== undefined ? { relay: spec.relay } : {}),
  };
}

/** Checks and compiles the routes of a spec, and reads the TLS files of its https:// upstreams. */
export async function loadRoutes(spec: GatewaySpec): Promise<GatewayRoute[]> {
  return withUpstreamTls(
    compileRoutes(spec.routes, {
      unsafeUpstream: spec.unsafeUpstream ?? false,
      relays: (spec.relay?.targets.length ?? 0) > 0,
    }),
  );
}

/** The routes with the TLS files of their https:// upstreams read (again). */
function withUpstreamTls(routes: readonly GatewayRoute[]): Promise<GatewayRoute[]> {
  return Promise.all(
    routes.map(async (r) => (r.upstream.protocol === "https:" ? { ...r, tls: await loadUpstreamTls(r) } : r)),
  );
}

/** An https:// route's TLS options: files read and checked, server name decided. */
async function loadUpstreamTls(route: GatewayRoute): Promise<UpstreamTlsOptions> {
  const t = route.upstreamTls ?? {};
  const where = `route ${route.name}: upstream ${route.upstream.origin}`;
  const read = async (file: string, what: string): Promise<string> => {
    try {
      return await readFile(file, "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new MtlsError(
        code === "ENOENT" ? "E_NOT_FOUND" : "E_IO",
        `${where}: cannot read the ${what} ${file}: ${code ?? (err as Error).message}`,
      );
    }
  };
  let cert: string | undefined;
  let key: string | undefined;
  if (t.identity) {
    const files = await tlsFilesFromState(t.identity.state, t.identity.name);
    cert = await read(files.cert, "client certificate");
    key = await read(files.key, "client key");
  } else if (t.cert !== undefined && t.key !== undefined) {
    cert = await read(t.cert, "client certificate");
    key = await read(t.key, "client key");
  }
  const ca = t.ca !== undefined ? await read(t.ca, "CA file") : undefined;
  try {
    // Refuses what OpenSSL would refuse at the first request: bad PEM, a key that does not match.
    createSecureContext({ ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) });
  } catch (err) {
    throw new MtlsError("E_BAD_INPUT", `${where}: unusable upstream TLS files: ${(err as Error).message}`);
  }
  const host = route.upstream.hostname.replace(/^\[|\]$/g, "");
  const servername = t.serverName ?? (isIP(host) ? "" : host);
  const id = createHash("sha256")
    .update(JSON.stringify([ca ?? null, cert ?? null, key ?? null, servername]))
    .digest("hex")
    .slice(0, 16);
  return {
    ...(ca !== undefined ? { ca } : {}),
    ...(cert !== undefined ? { cert } : {}),
    ...(key !== undefined ? { key } : {}),
    servername,
    id,
  };
}

/** Checks the routes, opens the certificate files and revocation sources, and makes the gateway (not yet listening). */
export async function buildGateway(spec: GatewaySpec, deps: GatewayDeps): Promise<BuiltGateway> {
  const routes = await loadRoutes(spec);
  const log = spec.name !== undefined ? deps.logger.child({ gateway: spec.name }) : deps.logger;
  const files =
    "identity" in spec.tls ? await tlsFilesFromState(spec.tls.state, spec.tls.identity) : spec.tls;
  const material = await loadTlsMaterial(files);
  let revocation: RevocationChecker | undefined;
  try {
    material.watch(spec.reloadIntervalMs ? { intervalMs: spec.reloadIntervalMs } : {});
    const feedUrl = spec.revocationFeed;
    if (spec.crl?.length || spec.ocsp || feedUrl) {
      revocation = await createRevocationChecker({
        ...(spec.crl?.length ? { crl: spec.crl } : {}),
        ...(spec.ocsp ? { ocsp: true } : {}),
        ...(spec.ocspRecheckMs !== undefined ? { ocspRecheckMs: spec.ocspRecheckMs } : {}),
        ...(feedUrl
          ? {
              feed: {
                url: feedUrl,
                // The gateway's own CA file, as reloaded: read at each connection to the feed.
                anchors: () => material.anchors,
                onStatus: logFeedStatus(log, feedUrl),
                onError: (err: Error) =>
                  log.debug({ err: err.message, feed: feedUrl }, "revocation feed error"),
              },
            }
          : {}),
        onError: (err, source) => log.warn({ err: err.message, source }, "revocation data problem"),
      });
    }
    const {
      tls: _tls,
      routes: _routes,
      crl: _crl,
      ocsp: _ocsp,
      ocspRecheckMs: _recheck,
      revocationFeed: _feed,
      reloadIntervalMs: _reload,
      shutdownTimeoutMs: _shutdown,
      unsafeUpstream: _unsafe,
      ...rest
    } = spec;
    const gateway = new Gateway({
      ...rest,
      material,
      ...(revocation ? { revocation } : {}),
      routes,
      logger: deps.logger,
      ...(deps.registry ? { registry: deps.registry } : {}),
      ...(deps.verifyPeer ? { verifyPeer: deps.verifyPeer } : {}),
      ...(deps.clock ? { clock: deps.clock } : {}),
    });
    return new BuiltGateway(spec, gateway, material, revocation, log, deps.registry);
  } catch (err) {
    material.close();
    revocation?.close();
    throw err;
  }
}
