import type { ListenOptions } from "node:net";
import type { Logger, Registry } from "../observe/index.js";
import {
  createRevocationChecker,
  loadTlsMaterial,
  type RevocationChecker,
  type TlsFiles,
  type TlsMaterial,
  tlsFilesFromState,
  type VerifyPeer,
} from "../tls/index.js";
import { Gateway, type GatewayLimits } from "./gateway.js";
import type { IdentityHeaderFormat } from "./identity-headers.js";
import { compileRoutes, type GatewayRouteSpec } from "./routes.js";

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
  /** Also re-read the certificate files this often (they are watched anyway). */
  reloadIntervalMs?: number;
  identityHeaders?: IdentityHeaderFormat;
  enrollUrl?: string;
  /** Allow plain-HTTP upstreams off loopback. */
  unsafeUpstream?: boolean;
  /** How long requests in flight may finish on a graceful stop. */
  shutdownTimeoutMs?: number;
}

export interface GatewayDeps {
  logger: Logger;
  registry?: Registry;
  verifyPeer?: VerifyPeer;
  clock?: () => Date;
}

/** A gateway with the material and revocation data it holds; stop() closes them too. */
export class BuiltGateway {
  constructor(
    readonly spec: GatewaySpec,
    readonly gateway: Gateway,
    private readonly material: TlsMaterial,
    private readonly revocation: RevocationChecker | undefined,
  ) {}

  start() {
    return this.gateway.start();
  }

  ready() {
    return this.gateway.ready();
  }

  /** Re-reads the certificate files now (SIGHUP); true if they changed. */
  reloadFiles(): Promise<boolean> {
    return this.material.reload();
  }

  async stop(deadlineMs = this.spec.shutdownTimeoutMs ?? 30_000) {
    try {
      return await this.gateway.stop(deadlineMs);
    } finally {
      this.close();
    }
  }

  close(): void {
    this.material.close();
    this.revocation?.close();
  }
}

/** Checks the routes, opens the certificate files and revocation sources, and makes the gateway (not yet listening). */
export async function buildGateway(spec: GatewaySpec, deps: GatewayDeps): Promise<BuiltGateway> {
  const routes = compileRoutes(spec.routes, { unsafeUpstream: spec.unsafeUpstream ?? false });
  const log = spec.name !== undefined ? deps.logger.child({ gateway: spec.name }) : deps.logger;
  const files =
    "identity" in spec.tls ? await tlsFilesFromState(spec.tls.state, spec.tls.identity) : spec.tls;
  const material = await loadTlsMaterial(files);
  let revocation: RevocationChecker | undefined;
  try {
    material.watch(spec.reloadIntervalMs ? { intervalMs: spec.reloadIntervalMs } : {});
    if (spec.crl?.length || spec.ocsp) {
      revocation = await createRevocationChecker({
        ...(spec.crl?.length ? { crl: spec.crl } : {}),
        ...(spec.ocsp ? { ocsp: true } : {}),
        ...(spec.ocspRecheckMs !== undefined ? { ocspRecheckMs: spec.ocspRecheckMs } : {}),
        onError: (err, source) => log.warn({ err: err.message, source }, "revocation data problem"),
      });
    }
    const {
      tls: _tls,
      routes: _routes,
      crl: _crl,
      ocsp: _ocsp,
      ocspRecheckMs: _recheck,
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
    return new BuiltGateway(spec, gateway, material, revocation);
  } catch (err) {
    material.close();
    revocation?.close();
    throw err;
  }
}
