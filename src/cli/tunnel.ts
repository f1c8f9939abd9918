import type { Command } from "commander";
import { parseDuration } from "../config/duration.js";
import { TUNNEL_DEFAULTS } from "../config/schema.js";
import { resolveStateDir } from "../config/state.js";
import { MtlsError } from "../errors.js";
import {
  createLogger,
  defaultRegistry,
  type Logger,
  parseLogLevel,
  type StatusServer,
  startStatusServer,
} from "../observe/index.js";
import { type AllowFlags, compilePolicy, rulesFromFlags } from "../policy/index.js";
import { feedStreamUrl } from "../tls/index.js";
import {
  type Address,
  type BuiltTunnel,
  buildTunnel,
  formatAddress,
  listenOptions,
  type MintSpec,
  parseAddress,
  type TargetTlsSpec,
  type TlsSource,
  type TunnelSpec,
} from "../tunnel/index.js";
import { addAllowOptions, collect, note } from "./common.js";
import { serveUntilSignal, statusSuffix } from "./run.js";

/** The defaults of the flags (config/schema.ts explains them; mtls.yaml shares them). */
export { TUNNEL_DEFAULTS };

interface CommonOpts {
  listen: string;
  target: string;
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
  handshakeTimeout: string;
  connectTimeout: string;
  idleTimeout: string;
  maxConnections: string;
  maxConnLifetime: string;
  shutdownTimeout: string;
  status?: string;
  logLevel: string;
  protocol: string;
}

interface ServerOpts extends CommonOpts, AllowFlags {
  proxyProtocol?: boolean;
  unsafeTarget?: boolean;
  targetTls?: boolean;
  targetCa?: string;
  targetServerName?: string;
  targetCert?: string;
  targetKey?: string;
  targetIdentity?: string;
  mintTtl?: string;
  passphraseFile?: string;
}

interface ClientOpts extends CommonOpts {
  serverName?: string;
  verifyDns?: string[];
  verifyUri?: string[];
  proxy?: string;
  unsafeListen?: boolean;
}

function addCommonOptions(cmd: Command): Command {
  return cmd
    .option("--cert <file>", "certificate chain (PEM: leaf, then intermediates)")
    .option("--key <file>", "private key (PEM)")
    .option("--ca <file>", "trusted root CA certificate(s) (PEM)")
    .option(
      "--state <dir>",
      "take --cert/--key/--ca from this state directory (default $MTLS_STATE or ./.mtls)",
    )
    .option("--name <name>", "with --state: the name the certificate was issued under")
    .option("--crl <file|url>", "CRL to check peers against, reloaded when it changes (repeatable)", collect)
    .option("--ocsp", "ask the OCSP responder in the peer certificate's AIA")
    .option(
      "--ocsp-recheck <duration>",
      'with --ocsp: re-ask about peers in use this often, so revocations reach open connections (default 30s; "off": never)',
    )
    .option(
      "--revocation-feed <url>",
      "follow this CA's revocation feed (https://ca:8443, trusted through --ca): revoked peers lose their connections within seconds; CRL and OCSP still apply while it is down",
    )
    .option("--reload-interval <duration>", "also re-read the certificate files this often (e.g. 1h)")
    .option("--handshake-timeout <duration>", "TLS handshake deadline", TUNNEL_DEFAULTS.handshakeTimeout)
    .option(
      "--connect-timeout <duration>",
      "deadline to connect to the target",
      TUNNEL_DEFAULTS.connectTimeout,
    )
    .option(
      "--idle-timeout <duration>",
      'close after this long without traffic ("off": never)',
      TUNNEL_DEFAULTS.idleTimeout,
    )
    .option("--max-connections <n>", "most connections at once (0: no limit)", TUNNEL_DEFAULTS.maxConnections)
    .option(
      "--max-conn-lifetime <duration>",
      'close connections older than this, so they re-authenticate ("off": never)',
      TUNNEL_DEFAULTS.maxConnLifetime,
    )
    .option(
      "--shutdown-timeout <duration>",
      "on SIGTERM, how long open connections may drain",
      TUNNEL_DEFAULTS.shutdownTimeout,
    )
    .option("--status <address>", "serve /healthz, /readyz and /metrics here (e.g. 127.0.0.1:9090)")
    .option(
      "--protocol <tcp|ftp>",
      "ftp: carry FTP passive-mode data connections over mTLS too (both ends); active mode is refused",
      "tcp",
    )
    .option(
      "--log-level <level>",
      "fatal, error, warn, info, debug, trace or silent",
      TUNNEL_DEFAULTS.logLevel,
    );
}

export function registerTunnel(program: Command): void {
  const tunnel = program
    .command("tunnel")
    .description(
      "mTLS tunnels: put mutual TLS in front of any TCP service (server) or carry TCP over it (client)",
    );

  const server = addAllowOptions(
    tunnel
      .command("server")
      .description(
        "accept mTLS, verify and authorize the client certificate, forward plain TCP to the target",
      )
      .requiredOption(
        "--listen <address>",
        "where to accept mTLS: host:port, [::1]:port, :port or unix:/path",
      )
      .requiredOption(
        "--target <address>",
        "where to forward: 127.0.0.1:port or unix:/path (loopback unless --unsafe-target)",
      ),
  )
    .option(
      "--proxy-protocol",
      "send a PROXY protocol v2 header (peer address, TLS, client certificate) to the target",
    )
    .option("--unsafe-target", "allow a target that is not loopback (its plain-text leg crosses a network)")
    .option("--target-tls", "the target speaks TLS: connect to it with TLS and verify its certificate")
    .option(
      "--target-ca <file>",
      "with --target-tls: CA certificate(s) the target's must chain to (default: --ca)",
    )
    .option(
      "--target-server-name <name>",
      "with --target-tls: SNI and the name the target's certificate must carry (default: the target host)",
    )
    .option("--target-cert <file>", "with --target-tls: client certificate to present to the target")
    .option("--target-key <file>", "with --target-cert: its private key")
    .option(
      "--target-identity <mint>",
      "with --target-tls: present a short-lived certificate minted by the local CA (--state) for each caller's identity",
    )
    .option(
      "--mint-ttl <duration>",
      "with --target-identity mint: lifetime of a minted certificate (default 1h)",
    )
    .option(
      "--passphrase-file <file>",
      "with --target-identity mint: the CA key passphrase (else $MTLS_PASSPHRASE, else STATE/passphrase)",
    );
  addCommonOptions(server).action((opts: ServerOpts) => runServer(opts));

  const client = tunnel
    .command("client")
    .description("accept plain TCP locally and carry it over mTLS to a tunnel server")
    .requiredOption(
      "--listen <address>",
      "where to accept plain TCP: 127.0.0.1:port or unix:/path (loopback unless --unsafe-listen)",
    )
    .requiredOption("--target <address>", "the tunnel server: host:port")
    .option(
      "--server-name <name>",
      "TLS server name (SNI) and the name its certificate must carry (default: the target host)",
    )
    .option("--verify-dns <name>", "the server's certificate must carry this DNS name (repeatable)", collect)
    .option(
      "--verify-uri <uri>",
      "the server's certificate must carry this URI, e.g. a SPIFFE ID (repeatable)",
      collect,
    )
    .option("--proxy <url>", "reach the server through this HTTP CONNECT proxy: http://[user:pass@]host:port")
    .option(
      "--unsafe-listen",
      "allow listening on a non-loopback address (anyone reaching it uses this certificate)",
    );
  addCommonOptions(client).action((opts: ClientOpts) => runClient(opts));
}

// ---------------------------------------------------------------------------------------------

/** --protocol: "tcp" (any TCP protocol, byte for byte) or "ftp" (control and passive data connections). */
function protocolOf(text: string): "tcp" | "ftp" {
  if (text !== "tcp" && text !== "ftp")
    throw new MtlsError("E_USAGE", `invalid --protocol "${text}" (tcp or ftp)`);
  return text;
}

/** A duration, or "off"/"0" for none. */
function optionalDuration(text: string, what: string): number {
  if (text === "off" || text === "0") return 0;
  return parseDuration(text, what);
}

function count(text: string, what: string): number {
  if (!/^\d+$/.test(text))
    throw new MtlsError("E_USAGE", `invalid ${what} "${text}" (a whole number, 0 for no limit)`);
  return Number(text);
}

interface Settings {
  handshakeTimeoutMs: number;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  maxConnections: number;
  maxConnLifetimeMs: number;
  shutdownTimeoutMs: number;
  reloadIntervalMs: number | undefined;
  ocspRecheckMs: number | undefined;
  revocationFeed: string | undefined;
  status: Address | undefined;
  logLevel: string;
}

/** Every flag checked before anything is opened, so a typo costs nothing. */
function settingsOf(opts: CommonOpts): Settings {
  return {
    handshakeTimeoutMs: parseDuration(opts.handshakeTimeout, "--handshake-timeout"),
    connectTimeoutMs: parseDuration(opts.connectTimeout, "--connect-timeout"),
    idleTimeoutMs: optionalDuration(opts.idleTimeout, "--idle-timeout"),
    maxConnections: count(opts.maxConnections, "--max-connections"),
    maxConnLifetimeMs: optionalDuration(opts.maxConnLifetime, "--max-conn-lifetime"),
    shutdownTimeoutMs: parseDuration(opts.shutdownTimeout, "--shutdown-timeout"),
    reloadIntervalMs: opts.reloadInterval
      ? parseDuration(opts.reloadInterval, "--reload-interval")
      : undefined,
    ocspRecheckMs: ocspRecheckOf(opts),
    revocationFeed: opts.revocationFeed !== undefined ? feedUrlOf(opts.revocationFeed) : undefined,
    status: opts.status
      ? parseAddress(opts.status, "--status", { allowPortZero: true, allowAnyHost: true })
      : undefined,
    logLevel: parseLogLevel(opts.logLevel),
  };
}

/** --revocation-feed: checked now (one E_USAGE line), kept as given. */
function feedUrlOf(url: string): string {
  feedStreamUrl(url);
  return url;
}

/** --ocsp-recheck: only with --ocsp; "off" or 0 stops re-polling. */
function ocspRecheckOf(opts: CommonOpts): number | undefined {
  if (opts.ocspRecheck === undefined) return undefined;
  if (!opts.ocsp) throw new MtlsError("E_USAGE", "--ocsp-recheck goes with --ocsp");
  return optionalDuration(opts.ocspRecheck, "--ocsp-recheck");
}

/**
 * --target-tls and its companions (any of them turns TLS to the target on), and the local CA that
 * mints caller certificates for --target-identity mint.
 */
function targetTlsOf(opts: ServerOpts): { targetTls?: TargetTlsSpec; mint?: MintSpec } {
  const given =
    opts.targetTls ||
    [opts.targetCa, opts.targetServerName, opts.targetCert, opts.targetKey, opts.targetIdentity].some(
      (v) => v !== undefined,
    );
  if (!given) {
    if (opts.mintTtl !== undefined)
      throw new MtlsError("E_USAGE", "--mint-ttl goes with --target-identity mint");
    return {};
  }
  if ((opts.targetCert === undefined) !== (opts.targetKey === undefined)) {
    throw new MtlsError("E_USAGE", "--target-cert and --target-key go together");
  }
  if (opts.targetIdentity !== undefined && opts.targetIdentity !== "mint") {
    throw new MtlsError("E_USAGE", `invalid --target-identity "${opts.targetIdentity}" (mint)`);
  }
  const mint = opts.targetIdentity === "mint";
  if (mint && opts.targetCert !== undefined) {
    throw new MtlsError(
      "E_USAGE",
      "give either --target-cert/--target-key or --target-identity mint, not both",
    );
  }
  if (!mint && opts.mintTtl !== undefined) {
    throw new MtlsError("E_USAGE", "--mint-ttl goes with --target-identity mint");
  }
  const targetTls: TargetTlsSpec = {
    ...(opts.targetCa !== undefined ? { ca: opts.targetCa } : {}),
    ...(opts.targetServerName !== undefined ? { serverName: opts.targetServerName } : {}),
    ...(opts.targetCert !== undefined ? { cert: opts.targetCert, key: opts.targetKey as string } : {}),
    ...(mint ? { identity: "mint" as const } : {}),
  };
  if (!mint) return { targetTls };
  return {
    targetTls,
    mint: {
      state: resolveStateDir(opts.state),
      ...(opts.passphraseFile ? { passphraseFile: opts.passphraseFile } : {}),
      ...(opts.mintTtl !== undefined ? { ttlMs: parseDuration(opts.mintTtl, "--mint-ttl") } : {}),
    },
  };
}

/** --cert/--key/--ca, or --state/--name (the files are looked up when the tunnel is built). */
function tlsSourceOf(opts: CommonOpts): TlsSource {
  const direct = [opts.cert, opts.key, opts.ca].filter((v) => v !== undefined).length;
  if (opts.name !== undefined) {
    if (direct > 0)
      throw new MtlsError("E_USAGE", "give either --cert/--key/--ca or --state/--name, not both");
    return { state: resolveStateDir(opts.state), identity: opts.name };
  }
  if (direct < 3 || !opts.cert || !opts.key || !opts.ca) {
    throw new MtlsError(
      "E_USAGE",
      opts.state
        ? "--state needs --name: the name the certificate was issued under"
        : "give --cert, --key and --ca (or --state DIR --name NAME)",
    );
  }
  return { cert: opts.cert, key: opts.key, ca: opts.ca };
}

/** What server and client specs share, from the common flags (`listen` parsed first). */
function commonSpec(opts: CommonOpts, s: Settings, listen: Address) {
  return {
    listen,
    tls: tlsSourceOf(opts),
    ...(opts.crl?.length ? { crl: opts.crl } : {}),
    ...(opts.ocsp ? { ocsp: true } : {}),
    ...(s.ocspRecheckMs !== undefined ? { ocspRecheckMs: s.ocspRecheckMs } : {}),
    ...(s.revocationFeed !== undefined ? { revocationFeed: s.revocationFeed } : {}),
    ...(s.reloadIntervalMs ? { reloadIntervalMs: s.reloadIntervalMs } : {}),
    handshakeTimeoutMs: s.handshakeTimeoutMs,
    connectTimeoutMs: s.connectTimeoutMs,
    idleTimeoutMs: s.idleTimeoutMs,
    maxConnections: s.maxConnections,
    maxConnLifetimeMs: s.maxConnLifetimeMs,
    shutdownTimeoutMs: s.shutdownTimeoutMs,
  };
}

/**
 * Runs a tunnel until SIGTERM or SIGINT: prints one line when listening, reloads the TLS files on
 * SIGHUP, and on the first SIGTERM/SIGINT stops accepting and drains for --shutdown-timeout (a
 * second signal cuts what is left at once).
 */
async function run(
  kind: "server" | "client",
  tunnel: BuiltTunnel,
  target: Address,
  s: Settings,
  log: Logger,
): Promise<void> {
  let status: StatusServer | undefined;
  try {
    const bound = await tunnel.start();
    if (s.status) {
      status = await startStatusServer({
        listen: listenOptions(s.status),
        registry: defaultRegistry(),
        ready: () => tunnel.ready(),
      });
    }
    note(
      `mtls: tunnel ${kind} listening on ${formatAddress(bound)} → ${formatAddress(target)}${statusSuffix(status)}`,
    );

    await serveUntilSignal({
      log,
      reloadFiles: () => tunnel.reloadFiles(),
      stop: (ms) => tunnel.tunnel.stop(ms),
      deadlineMs: s.shutdownTimeoutMs,
      onStopped: (r) => log.info(r as object, "tunnel stopped"),
    });
  } finally {
    await status?.close();
    tunnel.close();
  }
}

async function runServer(opts: ServerOpts): Promise<void> {
  const s = settingsOf(opts);
  const listen = parseAddress(opts.listen, "--listen", { allowPortZero: true, allowAnyHost: true });
  const target = parseAddress(opts.target, "--target");
  const protocol = protocolOf(opts.protocol);
  const rules = rulesFromFlags(opts);
  if (rules.length === 0) throw new MtlsError("E_USAGE", "deny by default: give at least one --allow-* rule");
  compilePolicy(rules);
  const { targetTls, mint } = targetTlsOf(opts);
  if (targetTls && protocol === "ftp")
    throw new MtlsError("E_USAGE", "--target-tls is for TCP targets, not --protocol ftp");
  const common = commonSpec(opts, s, listen);
  const spec: TunnelSpec = {
    mode: "server",
    ...common,
    routes: [
      { target, rules, ...(protocol === "ftp" ? { protocol } : {}), ...(targetTls ? { targetTls } : {}) },
    ],
    proxyProtocol: opts.proxyProtocol ?? false,
    unsafeTarget: opts.unsafeTarget ?? false,
    ...(mint ? { mint } : {}),
  };
  const log = createLogger({ level: s.logLevel, name: "mtls-tunnel-server" });
  const tunnel = await buildTunnel(spec, { logger: log, registry: defaultRegistry() });
  await run("server", tunnel, target, s, log);
  exitSoon();
}

async function runClient(opts: ClientOpts): Promise<void> {
  const s = settingsOf(opts);
  const protocol = protocolOf(opts.protocol);
  const listen = parseAddress(opts.listen, "--listen", { allowPortZero: true, allowAnyHost: true });
  const target = parseAddress(opts.target, "--target");
  const common = commonSpec(opts, s, listen);
  const spec: TunnelSpec = {
    mode: "client",
    ...common,
    target,
    ...(opts.serverName ? { serverName: opts.serverName } : {}),
    ...(opts.verifyDns ? { verifyDns: opts.verifyDns } : {}),
    ...(opts.verifyUri ? { verifyUri: opts.verifyUri } : {}),
    ...(opts.proxy ? { proxy: opts.proxy } : {}),
    unsafeListen: opts.unsafeListen ?? false,
    ...(protocol === "ftp" ? { protocol } : {}),
  };
  const log = createLogger({ level: s.logLevel, name: "mtls-tunnel-client" });
  const tunnel = await buildTunnel(spec, { logger: log, registry: defaultRegistry() });
  await run("client", tunnel, target, s, log);
  exitSoon();
}

/**
 * After a graceful stop everything is closed and the process ends by itself; should a handle
 * linger (a stuck DNS lookup, a library timer), exit anyway a moment later.
 */
export function exitSoon(): void {
  setTimeout(() => process.exit(process.exitCode ?? 0), 2000).unref();
}
