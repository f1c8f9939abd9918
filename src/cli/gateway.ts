import type { Command } from "commander";
import { parseDuration } from "../config/duration.js";
import type { GatewayConfig, MtlsConfig } from "../config/index.js";
import { resolveStateDir } from "../config/state.js";
import { MtlsError } from "../errors.js";
import {
  type BuiltGateway,
  buildGateway,
  compileRelaySettings,
  GATEWAY_DEFAULTS,
  type GatewaySpec,
  IDENTITY_HEADER_FORMATS,
  type IdentityHeaderFormat,
  modeOf,
  parseRelayFlag,
  parseRouteFlag,
  parseSize,
  type RelaySettings,
} from "../gateway/index.js";
import {
  createLogger,
  defaultRegistry,
  type Logger,
  parseLogLevel,
  type StatusServer,
  startStatusServer,
} from "../observe/index.js";
import { type AllowFlags, rulesFromFlags } from "../policy/index.js";
import { feedStreamUrl } from "../tls/index.js";
import { listenOptions, parseAddress } from "../tunnel/index.js";
import { addAllowOptions, collect, note } from "./common.js";
import { serveUntilSignal, statusSuffix } from "./run.js";
import { exitSoon } from "./tunnel.js";
import { isWorkerProcess, parseWorkers, runWorkers } from "./workers.js";

interface GatewayOpts extends AllowFlags {
  listen: string;
  route?: string[];
  mode: string;
  allowMethod?: string[];
  cert?: string;
  key?: string;
  ca?: string;
  state?: string;
  name?: string;
  crl?: string[];
  ocsp?: boolean;
  ocspRecheck?: string;
  revocationFeed?: string;
  reloadInterval?: string;
  identityHeaders: string;
  enrollUrl?: string;
  maxBody: string;
  requestTimeout: string;
  upstreamTimeout: string;
  keepaliveTimeout: string;
  handshakeTimeout: string;
  maxConnections: string;
  shutdownTimeout: string;
  unsafeUpstream?: boolean;
  upstreamCa?: string;
  upstreamCert?: string;
  upstreamKey?: string;
  upstreamIdentity?: string;
  http2: boolean;
  status?: string;
  logLevel: string;
  workers: string;
  relay?: string[];
  relayOrigin?: string[];
  relayMaxSessions?: string;
  relayMaxPerClient?: string;
  relayMaxMessage?: string;
  relayConnectTimeout?: string;
  relayIdleTimeout?: string;
}

export function registerGateway(program: Command): void {
  addAllowOptions(
    program
      .command("gateway")
      .description(
        "HTTPS reverse proxy with client certificates: routes by host and path, identity headers upstream, friendly refusals",
      )
      .requiredOption(
        "--listen <address>",
        "where to accept HTTPS: host:port, [::1]:port, :port or unix:/path",
      )
      .option(
        "--route <spec>",
        "[HOST]/PATH=http(s)://HOST:PORT[/BASE][;mode=require|optional|none][;allow-uri=…][;methods=GET,HEAD][;upstream-ca=FILE][;upstream-servername=NAME][;token=bound|bearer;jwks=FILE|URL;issuer=…;audience=…;algorithms=ES256,…;clock-tolerance=30s;jwks-reload=1h] (repeatable; longest path wins)",
        collect,
      )
      .option("--mode <mode>", "default mode of routes: require, optional or none", "require"),
  )
    .option(
      "--allow-method <method>",
      "the --allow-* rules allow only these HTTP methods (repeatable)",
      collect,
    )
    .option("--cert <file>", "the gateway's certificate chain (PEM: leaf, then intermediates)")
    .option("--key <file>", "its private key (PEM)")
    .option("--ca <file>", "CA certificate(s) client certificates must chain to (PEM)")
    .option(
      "--state <dir>",
      "take --cert/--key/--ca from this state directory (default $MTLS_STATE or ./.mtls)",
    )
    .option("--name <name>", "with --state: the name the gateway's certificate was issued under")
    .option(
      "--crl <file|url>",
      "CRL to check client certificates against, reloaded when it changes (repeatable)",
      collect,
    )
    .option("--ocsp", "ask the OCSP responder in the client certificate's AIA")
    .option(
      "--ocsp-recheck <duration>",
      "with --ocsp: re-ask about certificates in use this often (default 30s)",
    )
    .option(
      "--revocation-feed <url>",
      "follow this CA's revocation feed (https://ca:8443, trusted through --ca): revoked peers lose their connections within seconds; CRL and OCSP still apply while it is down",
    )
    .option("--reload-interval <duration>", "also re-read the certificate files this often (e.g. 1h)")
    .option(
      "--identity-headers <format>",
      "identity headers upstream: rfc9440 (Client-Cert, Client-Cert-Chain), xfcc (x-forwarded-client-cert) or both",
      "rfc9440",
    )
    .option(
      "--enroll-url <url>",
      "where people without a valid certificate get one (linked from the refusal page)",
    )
    .option("--max-body <size>", 'largest request body: 100m, 1g, 512k ("0": no limit)', "100m")
    .option("--request-timeout <duration>", "a whole request must arrive within this", "5m")
    .option(
      "--upstream-timeout <duration>",
      "the upstream must answer without a pause longer than this",
      "60s",
    )
    .option("--keepalive-timeout <duration>", "close idle client connections after this", "60s")
    .option("--handshake-timeout <duration>", "TLS handshake deadline", "10s")
    .option("--max-connections <n>", "most client connections at once (0: no limit)", "0")
    .option("--shutdown-timeout <duration>", "on SIGTERM, how long requests in flight may finish", "30s")
    .option("--no-http2", "offer HTTP/1.1 only (no HTTP/2 by ALPN)")
    .option("--unsafe-upstream", "allow a plain-HTTP upstream that is not loopback")
    .option(
      "--upstream-ca <file>",
      "https:// upstreams: CA certificate(s) their certificate must chain to (default: Node's CA store)",
    )
    .option(
      "--upstream-cert <file>",
      "https:// upstreams: client certificate to present (with --upstream-key)",
    )
    .option("--upstream-key <file>", "its private key (PEM)")
    .option(
      "--upstream-identity <name>",
      "https:// upstreams: present this name's certificate from the local CA (--state)",
    )
    .option(
      "--relay <name=host:port>",
      "WebSocket relay for mtls/web at wss://GATEWAY/.mtls/relay/NAME to this one mTLS server (repeatable; no client certificate asked at the gateway)",
      collect,
    )
    .option(
      "--relay-origin <origin>",
      "pages from this origin may use the relays (repeatable; * for any; default: the gateway's own origin)",
      collect,
    )
    .option("--relay-max-sessions <n>", "most relay sessions at once (default 1000)")
    .option("--relay-max-per-client <n>", "most relay sessions at once from one IP address (default 32)")
    .option("--relay-max-message <size>", "largest WebSocket message a relay accepts (default 1m)")
    .option("--relay-connect-timeout <duration>", "a relay's target must accept within this (default 10s)")
    .option("--relay-idle-timeout <duration>", "close relay sessions idle this long (default 10m)")
    .option("--status <address>", "serve /healthz, /readyz and /metrics here (e.g. 127.0.0.1:9090)")
    .option("--log-level <level>", "fatal, error, warn, info, debug, trace or silent", "info")
    .option(
      "--workers <n>",
      "processes serving the one listening socket: a number, or auto (one per CPU)",
      "1",
    )
    .action((opts: GatewayOpts) => runGateway(opts));
}

function count(text: string, what: string): number {
  if (!/^\d+$/.test(text)) throw new MtlsError("E_USAGE", `invalid ${what} "${text}" (a whole number)`);
  return Number(text);
}

function identityHeadersOf(text: string): IdentityHeaderFormat {
  if (!(IDENTITY_HEADER_FORMATS as readonly string[]).includes(text)) {
    throw new MtlsError("E_USAGE", `invalid --identity-headers "${text}" (rfc9440, xfcc or both)`);
  }
  return text as IdentityHeaderFormat;
}

function enrollUrlOf(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new MtlsError("E_USAGE", `invalid --enroll-url "${text}" (an http:// or https:// URL)`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new MtlsError("E_USAGE", `invalid --enroll-url "${text}" (an http:// or https:// URL)`);
  }
  return url.href;
}

/** Every flag checked before anything is opened. */
export function gatewaySpecOf(opts: GatewayOpts): GatewaySpec {
  const listen = parseAddress(opts.listen, "--listen", { allowPortZero: true, allowAnyHost: true });
  const mode = modeOf(opts.mode, "--mode");
  const methods = opts.allowMethod?.map((m) => m.toUpperCase());
  const rules = rulesFromFlags(opts);
  if (methods && rules.length === 0)
    throw new MtlsError("E_USAGE", "--allow-method goes with --allow-* rules");
  if ((opts.upstreamCert === undefined) !== (opts.upstreamKey === undefined))
    throw new MtlsError("E_USAGE", "give --upstream-cert and --upstream-key together");
  if (opts.upstreamCert !== undefined && opts.upstreamIdentity !== undefined)
    throw new MtlsError(
      "E_USAGE",
      "give either --upstream-cert/--upstream-key or --upstream-identity, not both",
    );
  const upstreamTls = {
    ...(opts.upstreamCa !== undefined ? { ca: opts.upstreamCa } : {}),
    ...(opts.upstreamCert !== undefined ? { cert: opts.upstreamCert } : {}),
    ...(opts.upstreamKey !== undefined ? { key: opts.upstreamKey } : {}),
    ...(opts.upstreamIdentity !== undefined
      ? { identity: { state: resolveStateDir(opts.state), name: opts.upstreamIdentity } }
      : {}),
  };
  const routes = (opts.route ?? []).map((r) =>
    parseRouteFlag(r, {
      mode,
      rules,
      ...(methods ? { methods } : {}),
      ...(Object.keys(upstreamTls).length ? { upstreamTls } : {}),
      state: resolveStateDir(opts.state),
    }),
  );
  const direct = [opts.cert, opts.key, opts.ca].filter((v) => v !== undefined).length;
  let tls: GatewaySpec["tls"];
  if (opts.name !== undefined) {
    if (direct > 0)
      throw new MtlsError("E_USAGE", "give either --cert/--key/--ca or --state/--name, not both");
    tls = { state: resolveStateDir(opts.state), identity: opts.name };
  } else if (opts.cert && opts.key && opts.ca) {
    tls = { cert: opts.cert, key: opts.key, ca: opts.ca };
  } else {
    throw new MtlsError("E_USAGE", "give --cert, --key and --ca (or --state DIR --name NAME)");
  }
  if (opts.ocspRecheck !== undefined && !opts.ocsp)
    throw new MtlsError("E_USAGE", "--ocsp-recheck goes with --ocsp");
  // Checked now (one E_USAGE line) rather than when the gateway is built.
  if (opts.revocationFeed !== undefined) feedStreamUrl(opts.revocationFeed);
  const enrollUrl = enrollUrlOf(opts.enrollUrl);
  const relay = relayOf(opts);
  return {
    name: opts.listen,
    listen: listenOptions(listen),
    tls,
    routes,
    ...(opts.crl?.length ? { crl: opts.crl } : {}),
    ...(opts.ocsp ? { ocsp: true } : {}),
    ...(opts.ocspRecheck !== undefined
      ? { ocspRecheckMs: opts.ocspRecheck === "off" ? 0 : parseDuration(opts.ocspRecheck, "--ocsp-recheck") }
      : {}),
    ...(opts.revocationFeed !== undefined ? { revocationFeed: opts.revocationFeed } : {}),
    ...(opts.reloadInterval
      ? { reloadIntervalMs: parseDuration(opts.reloadInterval, "--reload-interval") }
      : {}),
    identityHeaders: identityHeadersOf(opts.identityHeaders),
    ...(enrollUrl ? { enrollUrl } : {}),
    maxBodyBytes: parseSize(opts.maxBody, "--max-body"),
    requestTimeoutMs: parseDuration(opts.requestTimeout, "--request-timeout"),
    upstreamTimeoutMs: parseDuration(opts.upstreamTimeout, "--upstream-timeout"),
    keepAliveTimeoutMs: parseDuration(opts.keepaliveTimeout, "--keepalive-timeout"),
    handshakeTimeoutMs: parseDuration(opts.handshakeTimeout, "--handshake-timeout"),
    headersTimeoutMs: GATEWAY_DEFAULTS.headersTimeoutMs,
    maxConnections: count(opts.maxConnections, "--max-connections"),
    shutdownTimeoutMs: parseDuration(opts.shutdownTimeout, "--shutdown-timeout"),
    unsafeUpstream: opts.unsafeUpstream ?? false,
    http2: opts.http2 !== false,
    ...(relay ? { relay } : {}),
  };
}

/** The --relay* flags (undefined without --relay; the other --relay-* flags need it). */
function relayOf(opts: GatewayOpts): RelaySettings | undefined {
  const extra = [
    opts.relayOrigin?.length ? "--relay-origin" : undefined,
    opts.relayMaxSessions !== undefined ? "--relay-max-sessions" : undefined,
    opts.relayMaxPerClient !== undefined ? "--relay-max-per-client" : undefined,
    opts.relayMaxMessage !== undefined ? "--relay-max-message" : undefined,
    opts.relayConnectTimeout !== undefined ? "--relay-connect-timeout" : undefined,
    opts.relayIdleTimeout !== undefined ? "--relay-idle-timeout" : undefined,
  ].filter((f) => f !== undefined);
  if (!opts.relay?.length) {
    if (extra.length) throw new MtlsError("E_USAGE", `${extra[0]} goes with --relay NAME=host:port`);
    return undefined;
  }
  const settings: RelaySettings = {
    targets: opts.relay.map(parseRelayFlag),
    ...(opts.relayOrigin?.length ? { origins: opts.relayOrigin } : {}),
    ...(opts.relayMaxSessions !== undefined
      ? { maxSessions: count(opts.relayMaxSessions, "--relay-max-sessions") }
      : {}),
    ...(opts.relayMaxPerClient !== undefined
      ? { maxSessionsPerClient: count(opts.relayMaxPerClient, "--relay-max-per-client") }
      : {}),
    ...(opts.relayMaxMessage !== undefined
      ? { maxMessageBytes: parseSize(opts.relayMaxMessage, "--relay-max-message") }
      : {}),
    ...(opts.relayConnectTimeout !== undefined
      ? { connectTimeoutMs: parseDuration(opts.relayConnectTimeout, "--relay-connect-timeout") }
      : {}),
    ...(opts.relayIdleTimeout !== undefined
      ? { idleTimeoutMs: parseDuration(opts.relayIdleTimeout, "--relay-idle-timeout") }
      : {}),
  };
  // Names, targets, origins and limits checked now (one E_USAGE line).
  compileRelaySettings(settings);
  return settings;
}

/** The `gateways:` of mtls.yaml as specs (addresses and sizes checked; errors name their place). */
export function gatewaySpecsFromConfig(config: MtlsConfig): GatewaySpec[] {
  return (config.gateways ?? []).map((g) => {
    try {
      return gatewaySpecOfConfig(g);
    } catch (err) {
      throw new MtlsError("E_BAD_INPUT", `${config.source}: ${g.path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  });
}

function gatewaySpecOfConfig(g: GatewayConfig): GatewaySpec {
  const listen = parseAddress(g.listen, "listen", { allowPortZero: true, allowAnyHost: true });
  const enrollUrl = enrollUrlOf(g.enrollUrl);
  return {
    name: g.name,
    listen: listenOptions(listen),
    tls: g.tls,
    routes: g.routes.map((r) => ({
      ...(r.host !== undefined ? { host: r.host } : {}),
      path: r.prefix,
      upstream: r.upstream,
      mode: r.mode,
      rules: r.allow,
      ...(r.upstreamTls ? { upstreamTls: r.upstreamTls } : {}),
      ...(r.token ? { token: r.token } : {}),
    })),
    ...(g.crl.length ? { crl: g.crl } : {}),
    ...(g.ocsp ? { ocsp: true } : {}),
    ...(g.ocspRecheckMs !== undefined ? { ocspRecheckMs: g.ocspRecheckMs } : {}),
    ...(g.revocationFeed !== undefined ? { revocationFeed: g.revocationFeed } : {}),
    ...(g.reloadIntervalMs ? { reloadIntervalMs: g.reloadIntervalMs } : {}),
    identityHeaders: g.identityHeaders,
    ...(enrollUrl ? { enrollUrl } : {}),
    ...(g.maxBody !== undefined ? { maxBodyBytes: parseSize(g.maxBody, "max_body") } : {}),
    ...(g.requestTimeoutMs !== undefined ? { requestTimeoutMs: g.requestTimeoutMs } : {}),
    ...(g.upstreamTimeoutMs !== undefined ? { upstreamTimeoutMs: g.upstreamTimeoutMs } : {}),
    ...(g.keepAliveTimeoutMs !== undefined ? { keepAliveTimeoutMs: g.keepAliveTimeoutMs } : {}),
    ...(g.handshakeTimeoutMs !== undefined ? { handshakeTimeoutMs: g.handshakeTimeoutMs } : {}),
    ...(g.maxConnections !== undefined ? { maxConnections: g.maxConnections } : {}),
    ...(g.shutdownTimeoutMs !== undefined ? { shutdownTimeoutMs: g.shutdownTimeoutMs } : {}),
    http2: g.http2,
    unsafeUpstream: g.unsafeUpstream,
    ...(g.relay ? { relay: relayOfConfig(g.relay) } : {}),
  };
}

function relayOfConfig(r: NonNullable<GatewayConfig["relay"]>): RelaySettings {
  const settings: RelaySettings = {
    targets: r.targets,
    ...(r.origins ? { origins: r.origins } : {}),
    ...(r.maxSessions !== undefined ? { maxSessions: r.maxSessions } : {}),
    ...(r.maxPerClient !== undefined ? { maxSessionsPerClient: r.maxPerClient } : {}),
    ...(r.maxMessage !== undefined ? { maxMessageBytes: parseSize(r.maxMessage, "relay.max_message") } : {}),
    ...(r.connectTimeoutMs !== undefined ? { connectTimeoutMs: r.connectTimeoutMs } : {}),
    ...(r.idleTimeoutMs !== undefined ? { idleTimeoutMs: r.idleTimeoutMs } : {}),
  };
  compileRelaySettings(settings);
  return settings;
}

/** "listening on 127.0.0.1:8443: *\/ → http://127.0.0.1:3000 (require), …" */
export function describeGateway(built: BuiltGateway): string {
  const routes = built.gateway
    .currentRoutes()
    .map(
      (r) =>
        `${r.name} → ${r.upstream.origin}${r.upstream.pathname === "/" ? "" : r.upstream.pathname} (${r.mode})`,
    )
    .join(", ");
  const relays = built.gateway.relays.relays.map((r) => `${r.name} → ${r.target}`).join(", ");
  return `listening on ${built.gateway.address()}: ${routes || "no routes"}${relays ? `; relays /.mtls/relay/ ${relays}` : ""}`;
}

async function runGateway(opts: GatewayOpts): Promise<void> {
  const spec = gatewaySpecOf(opts);
  const workers = parseWorkers(opts.workers);
  const status = opts.status
    ? parseAddress(opts.status, "--status", { allowPortZero: true, allowAnyHost: true })
    : undefined;
  const log = createLogger({ level: parseLogLevel(opts.logLevel), name: "mtls-gateway" });
  if (workers > 1 || isWorkerProcess()) {
    // Several processes on the one socket (src/cli/workers.ts); the primary serves --status.
    await runWorkers({
      workers,
      log,
      what: "gateway",
      ...(status ? { statusListen: listenOptions(status) } : {}),
      deadlineMs: spec.shutdownTimeoutMs ?? 30_000,
      start: async (workerLog) => {
        const built = await buildGateway(spec, { logger: workerLog, registry: defaultRegistry() });
        try {
          await built.start();
        } catch (err) {
          built.close();
          throw err;
        }
        return {
          describe: describeGateway(built),
          ready: () => built.ready(),
          reload: () => built.reloadFiles(),
          stop: (ms) => built.gateway.stop(ms),
          close: () => built.close(),
        };
      },
      onListening: (describe, s) => note(`mtls: gateway ${describe}; ${workers} workers${statusSuffix(s)}`),
    });
    exitSoon();
    return;
  }
  const built = await buildGateway(spec, { logger: log, registry: defaultRegistry() });
  await run(built, spec, status ? listenOptions(status) : undefined, log);
  exitSoon();
}

/**
 * Runs the gateway until SIGTERM or SIGINT: one line when listening, TLS files re-read on SIGHUP,
 * and a graceful stop (requests in flight finish for --shutdown-timeout; a second signal cuts).
 */
async function run(
  built: BuiltGateway,
  spec: GatewaySpec,
  statusListen: ReturnType<typeof listenOptions> | undefined,
  log: Logger,
): Promise<void> {
  let status: StatusServer | undefined;
  try {
    await built.start();
    if (statusListen) {
      status = await startStatusServer({
        listen: statusListen,
        registry: defaultRegistry(),
        ready: () => built.ready(),
      });
    }
    note(`mtls: gateway ${describeGateway(built)}${statusSuffix(status)}`);
    const shutdownMs = spec.shutdownTimeoutMs ?? 30_000;
    await serveUntilSignal({
      log,
      reloadFiles: () => built.reloadFiles(),
      stop: (ms) => built.gateway.stop(ms),
      deadlineMs: shutdownMs,
    });
  } finally {
    await status?.close();
    built.close();
  }
}
