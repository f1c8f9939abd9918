import { MtlsError } from "../errors.js";
import { defaultRegistry, feedMetrics, type Logger, type Registry, tunnelMetrics } from "../observe/index.js";
import { compilePolicy, type RuleSpec } from "../policy/index.js";
import {
  createRevocationChecker,
  loadTlsMaterial,
  logFeedStatus,
  type RevocationChecker,
  SwappableMaterial,
  SwappableRevocation,
  type TlsFiles,
  type TlsMaterial,
  tlsFilesFromState,
  type VerifyPeer,
} from "../tls/index.js";
import { type Address, formatAddress } from "./address.js";
import type { StopResult } from "./base.js";
import { TunnelClient } from "./client.js";
import { type IdentityMinter, openIdentityMinter } from "./mint.js";
import { type Route, TunnelServer } from "./server.js";
import { TargetTls } from "./target-tls.js";

/**
 * A tunnel described as data, whatever it came from (`mtls tunnel` flags, a tunnels entry of
 * mtls.yaml, a program): buildTunnel() opens what it needs and makes the TunnelServer or
 * TunnelClient, and a later spec can be put in force on the running tunnel (BuiltTunnel.prepare).
 */
export type TlsSource = TlsFiles | { state: string; identity: string };

export interface RouteSpec {
  /** Exact server name or "*.example.test"; absent: the route for every other name (and none). */
  serverName?: string;
  target: Address;
  /** Allow rules (OR'd; the conditions of one rule AND'ed). At least one. */
  rules: RuleSpec[];
  /** The certificate this server name is answered with (default: the tunnel's). */
  tls?: TlsSource;
  /** "ftp": the target is an FTP server, its passive data connections carried too (ftp.ts). Default "tcp". */
  protocol?: "tcp" | "ftp";
  /** The target speaks TLS (or mTLS): verify it, and present a fixed or minted client certificate. */
  targetTls?: TargetTlsSpec;
}

/** TLS to a route's target (target-tls.ts). */
export interface TargetTlsSpec {
  /** PEM trust anchors for the target's certificate (default: the tunnel's own CA file). */
  ca?: string;
  /** Name sent as SNI and required in the target's certificate (default: the target's host). */
  serverName?: string;
  /** A fixed client certificate and key for the target. */
  cert?: string;
  key?: string;
  /** "mint": a short-lived certificate minted by the local CA for each caller (needs `mint`). */
  identity?: "mint";
}

/** Where certificates for `targetTls.identity: "mint"` come from: the local CA of a state directory. */
export interface MintSpec {
  state: string;
  /** The CA key's passphrase file (else MTLS_PASSPHRASE, else STATE/passphrase). */
  passphraseFile?: string;
  /** Lifetime of a minted certificate (default 1 h). */
  ttlMs?: number;
}

interface CommonSpec {
  /** The `tunnel` label of metrics and log lines (default: the listen address). */
  name?: string;
  listen: Address;
  tls: TlsSource;
  /** CRL files or URLs, reloaded when they change. */
  crl?: string[];
  ocsp?: boolean;
  /** How often OCSP answers of peers in use are re-polled (default 30 s; 0: never). */
  ocspRecheckMs?: number;
  /**
   * A CA's revocation feed (https://ca…): revocations reach open connections within a second or
   * two. Trusted through the tunnel's own CA file; down or stale, CRL and OCSP still apply.
   */
  revocationFeed?: string;
  /** Also re-read the certificate files this often (they are watched anyway). */
  reloadIntervalMs?: number;
  handshakeTimeoutMs?: number;
  connectTimeoutMs?: number;
  idleTimeoutMs?: number;
  maxConnections?: number;
  maxConnLifetimeMs?: number;
  /** How long open connections may drain on a graceful stop. */
  shutdownTimeoutMs?: number;
}

export interface ServerTunnelSpec extends CommonSpec {
  mode: "server";
  routes: RouteSpec[];
  proxyProtocol?: boolean;
  unsafeTarget?: boolean;
  /** FTP routes: how long an announced data port stays usable. */
  ftpDataTimeoutMs?: number;
  /** The local CA that mints caller certificates for routes with `targetTls.identity: "mint"`. */
  mint?: MintSpec;
}

export interface ClientTunnelSpec extends CommonSpec {
  mode: "client";
  target: Address;
  serverName?: string;
  verifyDns?: string[];
  verifyUri?: string[];
  proxy?: string;
  unsafeListen?: boolean;
  /** "ftp": local FTP clients, to a tunnel server whose route has protocol "ftp". Default "tcp". */
  protocol?: "tcp" | "ftp";
  /** FTP: how long a local data port waits for the FTP client. */
  ftpDataTimeoutMs?: number;
}

export type TunnelSpec = ServerTunnelSpec | ClientTunnelSpec;

export interface BuildDeps {
  /** Where the tunnel and what it holds (certificate files, CRLs) log. */
  logger: Logger;
  registry?: Registry;
  verifyPeer?: VerifyPeer;
  clock?: () => Date;
}

/** What may change on a running tunnel without a restart: the rest of a spec must stay equal. */
const SWAPPABLE = new Set([
  "tls",
  "crl",
  "ocsp",
  "ocspRecheckMs",
  "revocationFeed",
  "routes",
  "reloadIntervalMs",
  "shutdownTimeoutMs",
]);

/**
 * Why `next` cannot be put in force on a tunnel running `current` (undefined: it can). Listen
 * address, mode, timeouts, limits and the client's server are fixed for the life of a tunnel;
 * certificates, revocation sources and routes (targets, rules, per-name certificates) are not.
 */
export function restartReason(current: TunnelSpec, next: TunnelSpec): string | undefined {
  const changed: string[] = [];
  const keys = new Set([...Object.keys(current), ...Object.keys(next)]);
  for (const k of keys) {
    if (SWAPPABLE.has(k)) continue;
    const a = stable((current as unknown as Record<string, unknown>)[k]);
    const b = stable((next as unknown as Record<string, unknown>)[k]);
    if (a !== b) changed.push(k);
  }
  return changed.length ? `${changed.sort().join(", ")} changed` : undefined;
}

function stable(v: unknown): string {
  return JSON.stringify(v, (_k, value: unknown) =>
    value && typeof value === "object" && !Array.isArray(value)
      ? Object.fromEntries(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : value,
  );
}

/** The routes' targets, for a "listening" line: "127.0.0.1:5900" or "vnc.acme.test → 127.0.0.1:5900, …". */
export function describeTargets(spec: TunnelSpec): string {
  if (spec.mode === "client") return formatAddress(spec.target);
  const only = spec.routes.length === 1 ? spec.routes[0] : undefined;
  if (only && only.serverName === undefined) return formatAddress(only.target);
  return spec.routes.map((r) => `${r.serverName ?? "*"} → ${formatAddress(r.target)}`).join(", ");
}

/** Things a tunnel holds open, opened together and closed together when one fails. */
class Opened {
  readonly materials: TlsMaterial[] = [];
  readonly checkers: RevocationChecker[] = [];
  readonly minters: IdentityMinter[] = [];
  close(): void {
    for (const m of this.materials.splice(0)) m.close();
    for (const c of this.checkers.splice(0)) c.close();
    for (const m of this.minters.splice(0)) void m.close().catch(() => undefined);
  }
}

async function filesOf(source: TlsSource): Promise<TlsFiles> {
  return "identity" in source ? tlsFilesFromState(source.state, source.identity) : source;
}

const filesKey = (f: TlsFiles, intervalMs: number | undefined) =>
  JSON.stringify([f.cert, f.key, f.ca, intervalMs ?? 0]);
const revocationKey = (s: TunnelSpec) =>
  JSON.stringify([s.crl ?? [], s.ocsp ?? false, s.ocspRecheckMs ?? null, s.revocationFeed ?? null]);

interface HeldMaterial {
  key: string;
  material: TlsMaterial;
}

/**
 * A tunnel built from a spec, with the material and revocation data it holds. Its certificate,
 * revocation sources and routes can be replaced while it runs (prepare, then apply); open
 * connections keep running through every such change.
 */
export class BuiltTunnel {
  private current: TunnelSpec;
  private materialKey: string;
  private revKey: string;
  /** Per-route materials by files key. */
  private routeMaterials: Map<string, HeldMaterial>;
  private closed = false;
  private unwatchRoutes: (() => void)[] = [];
  private readonly unwatchFeed: () => void;

  private constructor(
    spec: TunnelSpec,
    readonly tunnel: TunnelServer | TunnelClient,
    private readonly material: SwappableMaterial,
    private readonly revocation: SwappableRevocation,
    materialKey: string,
    routeMaterials: Map<string, HeldMaterial>,
    private readonly deps: BuildDeps,
    private readonly minter?: IdentityMinter,
  ) {
    this.current = spec;
    this.materialKey = materialKey;
    this.revKey = revocationKey(spec);
    this.routeMaterials = routeMaterials;
    this.watchRouteCertificates();
    // The feed of the checker in force, whichever a reload put there.
    this.unwatchFeed = feedMetrics(deps.registry ?? defaultRegistry()).watch(
      { component: "tunnel", name: this.name },
      () => this.revocation.feedState(),
    );
  }

  /** Seconds to expiry of every per-name certificate, as certificate="leaf:NAME" (the tunnel's own is "leaf"). */
  private watchRouteCertificates(): void {
    for (const u of this.unwatchRoutes.splice(0)) u();
    if (this.closed || this.current.mode !== "server") return;
    const metrics = tunnelMetrics(this.deps.registry ?? defaultRegistry());
    const server = this.tunnel as TunnelServer;
    for (const r of server.currentRoutes()) {
      const m = r.material;
      if (!m) continue;
      this.unwatchRoutes.push(
        metrics.watchCertificate(this.name, `leaf:${r.serverName ?? "*"}`, () => m.certificate.notAfter),
      );
    }
  }

  /** The spec in force. */
  get spec(): TunnelSpec {
    return this.current;
  }

  get name(): string {
    return this.tunnel.name;
  }

  /** Opens everything `spec` needs and makes the tunnel (not yet listening: call start()). */
  static async build(spec: TunnelSpec, deps: BuildDeps): Promise<BuiltTunnel> {
    const policies = spec.mode === "server" ? spec.routes.map((r) => compilePolicy(r.rules)) : [];
    const opened = new Opened();
    const log = ownLogger(spec, deps);
    try {
      const files = await filesOf(spec.tls);
      const inner = await openMaterial(files, spec.reloadIntervalMs, log, opened);
      const routeMaterials = new Map<string, HeldMaterial>();
      const routes: Route[] = [];
      const minter = await openMinter(spec, log, deps, opened);
      if (spec.mode === "server") {
        for (const [i, r] of spec.routes.entries()) {
          const m = await routeMaterial(r, spec, routeMaterials, new Map(), log, opened);
          const t = await targetTlsOf(r, files, minter);
          routes.push(routeOf(r, policies[i] as Route["policy"], m?.material, t));
        }
      }
      const material = new SwappableMaterial(inner);
      const checker = await openRevocation(spec, material, log, opened);
      const revocation = new SwappableRevocation(checker);
      const common = {
        ...(spec.name !== undefined ? { name: spec.name } : {}),
        listen: spec.listen,
        material,
        revocation,
        logger: deps.logger,
        ...(deps.registry ? { registry: deps.registry } : {}),
        ...(deps.verifyPeer ? { verifyPeer: deps.verifyPeer } : {}),
        ...(deps.clock ? { clock: deps.clock } : {}),
        ...(spec.handshakeTimeoutMs !== undefined ? { handshakeTimeoutMs: spec.handshakeTimeoutMs } : {}),
        ...(spec.connectTimeoutMs !== undefined ? { connectTimeoutMs: spec.connectTimeoutMs } : {}),
        ...(spec.idleTimeoutMs !== undefined ? { idleTimeoutMs: spec.idleTimeoutMs } : {}),
        ...(spec.maxConnections !== undefined ? { maxConnections: spec.maxConnections } : {}),
        ...(spec.maxConnLifetimeMs !== undefined ? { maxConnLifetimeMs: spec.maxConnLifetimeMs } : {}),
      };
      const tunnel =
        spec.mode === "server"
          ? new TunnelServer({
              ...common,
              routes,
              proxyProtocol: spec.proxyProtocol ?? false,
              unsafeTarget: spec.unsafeTarget ?? false,
              ...(spec.ftpDataTimeoutMs !== undefined ? { ftpDataTimeoutMs: spec.ftpDataTimeoutMs } : {}),
            })
          : new TunnelClient({
              ...common,
              target: spec.target,
              ...(spec.serverName ? { serverName: spec.serverName } : {}),
              ...(spec.verifyDns ? { verifyDns: spec.verifyDns } : {}),
              ...(spec.verifyUri ? { verifyUri: spec.verifyUri } : {}),
              ...(spec.proxy ? { proxy: spec.proxy } : {}),
              unsafeListen: spec.unsafeListen ?? false,
              ...(spec.protocol ? { protocol: spec.protocol } : {}),
              ...(spec.ftpDataTimeoutMs !== undefined ? { ftpDataTimeoutMs: spec.ftpDataTimeoutMs } : {}),
            });
      return new BuiltTunnel(
        spec,
        tunnel,
        material,
        revocation,
        filesKey(files, spec.reloadIntervalMs),
        routeMaterials,
        deps,
        minter,
      );
    } catch (err) {
      opened.close();
      throw err;
    }
  }

  start(): Promise<Address> {
    return this.tunnel.start();
  }

  ready(): Promise<{ ok: boolean; detail: string }> {
    return this.tunnel.ready();
  }

  /**
   * Graceful stop (stop accepting, drain until `deadlineMs`, default the spec's shutdown timeout),
   * then closes what the tunnel holds.
   */
  async stop(deadlineMs = this.current.shutdownTimeoutMs ?? 30_000): Promise<StopResult> {
    try {
      return await this.tunnel.stop(deadlineMs);
    } finally {
      this.close();
    }
  }

  /** Closes the material and revocation data (the tunnel itself is stopped by stop()). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const u of this.unwatchRoutes.splice(0)) u();
    this.unwatchFeed();
    this.material.close();
    this.revocation.close();
    for (const m of this.routeMaterials.values()) m.material.close();
    this.routeMaterials.clear();
    void this.minter?.close().catch(() => undefined);
  }

  /** Re-reads every certificate file now (SIGHUP); true if any changed. */
  async reloadFiles(): Promise<boolean> {
    const results = await Promise.all([
      this.material.reload(),
      ...[...this.routeMaterials.values()].map((m) => m.material.reload()),
      ...(this.tunnel instanceof TunnelServer ? this.tunnel.currentRoutes() : []).map(
        (r) => r.targetTls?.reload() ?? false,
      ),
    ]);
    return results.some(Boolean);
  }

  /**
   * Gets `next` ready to be put in force: compiles its rules and opens the certificates and
   * revocation sources that differ from those in force. Throws (having closed what it opened) when
   * something is wrong, leaving the tunnel as it was; `restartReason` must be undefined.
   * The result's apply() swaps everything in at once; discard() closes what was opened.
   */
  async prepare(next: TunnelSpec): Promise<PreparedUpdate> {
    const reason = restartReason(this.current, next);
    if (reason) throw new MtlsError("E_USAGE", `the tunnel needs a restart: ${reason}`);
    const log = ownLogger(next, this.deps);
    const policies = next.mode === "server" ? next.routes.map((r) => compilePolicy(r.rules)) : [];
    const opened = new Opened();
    try {
      const files = await filesOf(next.tls);
      const key = filesKey(files, next.reloadIntervalMs);
      const material =
        key === this.materialKey ? undefined : await openMaterial(files, next.reloadIntervalMs, log, opened);
      const revKey = revocationKey(next);
      const checker =
        revKey === this.revKey
          ? undefined
          : { value: await openRevocation(next, this.material, log, opened) };
      const routeMaterials = new Map<string, HeldMaterial>();
      const routes: Route[] = [];
      if (next.mode === "server") {
        for (const [i, r] of next.routes.entries()) {
          const m = await routeMaterial(r, next, routeMaterials, this.routeMaterials, log, opened);
          const t = await targetTlsOf(r, files, this.minter);
          routes.push(routeOf(r, policies[i] as Route["policy"], m?.material, t));
        }
      }
      // Same targets, rules and per-name certificates: nothing to swap.
      const routesChanged =
        next.mode === "server" &&
        (this.current.mode !== "server" ||
          stable(next.routes) !== stable(this.current.routes) ||
          routeMaterials.size !== this.routeMaterials.size ||
          [...routeMaterials.keys()].some((k) => !this.routeMaterials.has(k)));
      let done = false;
      return {
        changes: [
          ...(material ? ["certificate"] : []),
          ...(checker ? ["revocation"] : []),
          ...(routesChanged ? ["routes"] : []),
        ],
        apply: () => {
          if (done) return;
          done = true;
          if (material) {
            this.material.swap(material).close();
            this.materialKey = key;
          }
          if (checker) {
            this.revocation.swap(checker.value)?.close();
            this.revKey = revKey;
          }
          if (routesChanged && this.tunnel instanceof TunnelServer) this.tunnel.updateRoutes(routes);
          for (const [k, m] of this.routeMaterials) if (!routeMaterials.has(k)) m.material.close();
          this.routeMaterials = routeMaterials;
          this.current = next;
          if (routesChanged) this.watchRouteCertificates();
        },
        discard: () => {
          if (done) return;
          done = true;
          opened.close();
        },
      };
    } catch (err) {
      opened.close();
      throw err;
    }
  }
}

export interface PreparedUpdate {
  /** What apply() replaces: "certificate", "revocation", "routes". */
  changes: string[];
  apply(): void;
  discard(): void;
}

/** Builds a tunnel from a spec (see BuiltTunnel). */
export function buildTunnel(spec: TunnelSpec, deps: BuildDeps): Promise<BuiltTunnel> {
  return BuiltTunnel.build(spec, deps);
}

/** What the builder itself logs (files refused, revocation problems) carries the tunnel's name. */
function ownLogger(spec: TunnelSpec, deps: BuildDeps): Logger {
  return spec.name !== undefined ? deps.logger.child({ tunnel: spec.name }) : deps.logger;
}

function routeOf(
  r: RouteSpec,
  policy: Route["policy"],
  material: TlsMaterial | undefined,
  targetTls?: TargetTls,
): Route {
  return {
    ...(r.serverName !== undefined ? { serverName: r.serverName } : {}),
    target: r.target,
    policy,
    ...(material ? { material } : {}),
    ...(r.protocol ? { protocol: r.protocol } : {}),
    ...(targetTls ? { targetTls } : {}),
  };
}

/** A route's TLS to its target: the files read and the options checked now (undefined: plain TCP). */
async function targetTlsOf(
  r: RouteSpec,
  files: TlsFiles,
  minter: IdentityMinter | undefined,
): Promise<TargetTls | undefined> {
  const t = r.targetTls;
  if (!t) return undefined;
  return TargetTls.open(
    {
      ca: t.ca ?? files.ca,
      ...(t.serverName !== undefined ? { serverName: t.serverName } : {}),
      ...(t.cert !== undefined ? { cert: t.cert } : {}),
      ...(t.key !== undefined ? { key: t.key } : {}),
      ...(t.identity ? { identity: t.identity } : {}),
    },
    r.target,
    minter,
  );
}

/** The local CA for minting, opened when a route of a server tunnel mints caller certificates. */
async function openMinter(
  spec: TunnelSpec,
  log: Logger,
  deps: BuildDeps,
  opened: Opened,
): Promise<IdentityMinter | undefined> {
  if (spec.mode !== "server" || !spec.routes.some((r) => r.targetTls?.identity === "mint")) return undefined;
  if (!spec.mint) {
    throw new MtlsError(
      "E_USAGE",
      "--target-identity mint needs the local CA that mints the certificates (--state DIR and its passphrase)",
    );
  }
  const minter = await openIdentityMinter({
    state: spec.mint.state,
    tunnel: spec.name ?? formatAddress(spec.listen),
    logger: log,
    ...(spec.mint.passphraseFile ? { passphraseFile: spec.mint.passphraseFile } : {}),
    ...(spec.mint.ttlMs !== undefined ? { ttlMs: spec.mint.ttlMs } : {}),
    ...(deps.clock ? { clock: deps.clock } : {}),
  });
  opened.minters.push(minter);
  return minter;
}

async function openMaterial(
  files: TlsFiles,
  intervalMs: number | undefined,
  log: Logger,
  opened: Opened,
): Promise<TlsMaterial> {
  const material = await loadTlsMaterial(files);
  opened.materials.push(material);
  material.on("reloadError", (err: Error) =>
    log.warn({ err: err.message }, "new TLS files refused; the previous ones stay in force"),
  );
  material.watch(intervalMs ? { intervalMs } : {});
  return material;
}

/** A route's own material: the one in force when its files are the same, else newly loaded. */
async function routeMaterial(
  r: RouteSpec,
  spec: TunnelSpec,
  into: Map<string, HeldMaterial>,
  inForce: Map<string, HeldMaterial>,
  log: Logger,
  opened: Opened,
): Promise<HeldMaterial | undefined> {
  if (!r.tls) return undefined;
  const files = await filesOf(r.tls);
  const key = filesKey(files, spec.reloadIntervalMs);
  let held = into.get(key) ?? inForce.get(key);
  if (!held) held = { key, material: await openMaterial(files, spec.reloadIntervalMs, log, opened) };
  into.set(key, held);
  return held;
}

/**
 * The revocation checker of a spec. A feed trusts the anchors of `material` as they are at each
 * connection (the tunnel's own CA file, reloaded with it); its state changes are logged.
 */
async function openRevocation(
  spec: TunnelSpec,
  material: TlsMaterial,
  log: Logger,
  opened: Opened,
): Promise<RevocationChecker | undefined> {
  if (!spec.crl?.length && !spec.ocsp && !spec.revocationFeed) return undefined;
  const feedUrl = spec.revocationFeed;
  const checker = await createRevocationChecker({
    ...(spec.crl?.length ? { crl: spec.crl } : {}),
    ...(spec.ocsp ? { ocsp: true } : {}),
    ...(spec.ocspRecheckMs !== undefined ? { ocspRecheckMs: spec.ocspRecheckMs } : {}),
    ...(feedUrl
      ? {
          feed: {
            url: feedUrl,
            anchors: () => material.anchors,
            onStatus: logFeedStatus(log, feedUrl),
            // Each failure is in the "down" line already; the details stay at debug level.
            onError: (err: Error) => log.debug({ err: err.message, feed: feedUrl }, "revocation feed error"),
          },
        }
      : {}),
    onError: (err, source) => log.warn({ err: err.message, source }, "revocation data problem"),
  });
  opened.checkers.push(checker);
  return checker;
}
