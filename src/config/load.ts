import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { dirname, isAbsolute, resolve } from "node:path";
import { parseDocument } from "yaml";
import type { z } from "zod";
import { MtlsError } from "../errors.js";
import { parseDuration } from "./duration.js";
import {
  type AgentEntry,
  CLIENT_ONLY_KEYS,
  configSchema,
  formatIssue,
  formatPath,
  type GatewayEntry,
  RULE_CONDITIONS,
  type RuleEntry,
  SERVER_ONLY_KEYS,
  type SettingsEntry,
  type SniRouteEntry,
  type TargetTlsEntry,
  TUNNEL_DEFAULTS,
  type TunnelEntry,
} from "./schema.js";
import { statePaths } from "./state.js";

/** Certificate, key and trust anchors as files (absolute paths). */
export interface TlsFilesConfig {
  cert: string;
  key: string;
  ca: string;
}

/** A certificate the local CA issued under `identity`, from the state directory `state`. */
export interface TlsIdentityConfig {
  state: string;
  identity: string;
}

export type TlsSourceConfig = TlsFilesConfig | TlsIdentityConfig;

/** An allow rule as written (strings as lists); policy/compilePolicy checks the values. */
export interface RuleConfig {
  name?: string;
  all?: boolean;
  cn?: string[];
  ou?: string[];
  dns?: string[];
  uri?: string[];
  email?: string[];
  fingerprint?: string[];
  spki?: string[];
}

export interface TunnelSettings {
  handshakeTimeoutMs: number;
  connectTimeoutMs: number;
  /** 0: never. */
  idleTimeoutMs: number;
  /** 0: no limit. */
  maxConnections: number;
  /** 0: never. */
  maxConnLifetimeMs: number;
  shutdownTimeoutMs: number;
  /** Re-read the certificate files this often, besides watching them (absent: only watching). */
  reloadIntervalMs?: number;
  /** FTP: how long a data port stays usable (absent: the tunnel's default, 30 s). */
  ftpDataTimeoutMs?: number;
}

/** TLS to a server tunnel's target (paths absolute); see schema.ts targetTlsSchema. */
export interface TargetTlsConfig {
  /** Trust anchors for the target (absent: the tunnel's own). */
  ca?: string;
  serverName?: string;
  cert?: string;
  key?: string;
  identity?: "mint";
}

export interface SniRouteConfig {
  /** Its place in the file, for error lines: "tunnels[0].sni[1]". */
  path: string;
  serverName: string;
  target: string;
  /** The route's own protocol, else the tunnel's. */
  protocol: "tcp" | "ftp";
  /** The route's own rules, else the tunnel's. */
  allow: RuleConfig[];
  /** The route's own certificate, else the tunnel's. */
  tls?: TlsSourceConfig;
  /** TLS to the route's target: its own target_tls, else the tunnel's. */
  targetTls?: TargetTlsConfig;
}

export interface TunnelConfig {
  /** Its place in the file, for error lines: "tunnels[0]". */
  path: string;
  name: string;
  mode: "server" | "client";
  listen: string;
  /** Server: where connections without a matching SNI route go (absent: refused). Client: the tunnel server. */
  target?: string;
  /** "ftp": FTP with passive data connections carried too (both ends of a tunnel must say so). */
  protocol: "tcp" | "ftp";
  tls: TlsSourceConfig;
  /** CRL files (absolute) and URLs. */
  crl: string[];
  ocsp: boolean;
  /** How often OCSP answers of peers in use are re-polled (absent: the checker's default; 0: never). */
  ocspRecheckMs?: number;
  /** A CA's revocation feed URL (checked in full when the tunnel is built). */
  revocationFeed?: string;
  settings: TunnelSettings;
  /** Server: the rules of the route to `target`, and of SNI routes without rules of their own. */
  allow?: RuleConfig[];
  sni: SniRouteConfig[];
  proxyProtocol: boolean;
  unsafeTarget: boolean;
  /** Server: TLS to `target` (and to SNI routes without a target_tls of their own). */
  targetTls?: TargetTlsConfig;
  /** Server: the local CA minting caller certificates, when a route has target_tls.identity: mint. */
  mint?: { state: string; ttlMs?: number };
  serverName?: string;
  verifyDns?: string[];
  verifyUri?: string[];
  proxy?: string;
  unsafeListen: boolean;
}

/** mtls.yaml, checked, with defaults applied and paths made absolute. */
export interface MtlsConfig {
  /** The file as the user named it, the first word of every error line. */
  source: string;
  /** Absolute path of the file, and of its folder (relative paths inside are relative to it). */
  file: string;
  dir: string;
  /** SHA-256 of the file's text (loadConfig), to tell a real change from a touch. */
  digest?: string;
  logLevel: string;
  status?: string;
  tunnels: TunnelConfig[];
  /** The `gateways:` section (mtls up runs them next to the tunnels). */
  gateways?: GatewayConfig[];
  /** The `agent:` section (mtls agent, mtls renew NAME -c). */
  agent?: AgentConfig;
}

/** What the agent runs after writing a renewed certificate (see schema.ts reloadSchema). */
export type ReloadConfig =
  | { kind: "signal"; signal: NodeJS.Signals; pidFile: string }
  /** argv: run without a shell; shell: the config's string run by /bin/sh -c. */
  | { kind: "command"; argv: string[]; shell: boolean; timeoutMs: number };

/** One certificate the agent keeps fresh (paths absolute). */
export interface AgentCertificateConfig {
  /** Its place in the file: "agent.certificates[0]". */
  path: string;
  name: string;
  cert: string;
  key: string;
  caUrl: string;
  caCert: string;
  /** A new key with every renewal. */
  rekey: boolean;
  reload?: ReloadConfig;
}

export interface AgentConfig {
  status?: string;
  certificates: AgentCertificateConfig[];
}

/** How long a reload command may run before it is killed. */
export const RELOAD_COMMAND_TIMEOUT_MS = 60_000;

export interface ParseConfigOptions {
  /** How the file is named in error lines (default "mtls.yaml"). */
  source?: string;
  /** The folder relative paths are resolved against (default: the current directory). */
  dir?: string;
  /** For MTLS_STATE, the default state directory (default: process.env). */
  env?: NodeJS.ProcessEnv;
  /** The section the caller runs and so needs: "tunnels" (mtls up, the default) or "agent". */
  require?: "tunnels" | "agent";
}

/** An error about the config file: "mtls.yaml: tunnels[0].allow[1]: unknown key "urii"". */
export function configError(source: string, path: string, message: string, cause?: unknown): MtlsError {
  return new MtlsError("E_BAD_INPUT", `${source}: ${path ? `${path}: ` : ""}${message}`, { cause });
}

/** Reads and checks a config file; every problem is an E_BAD_INPUT MtlsError of one line. */
export async function loadConfig(
  file: string,
  opts: Omit<ParseConfigOptions, "dir"> = {},
): Promise<MtlsConfig> {
  const source = opts.source ?? file;
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new MtlsError("E_NOT_FOUND", `${source}: no such file`, { cause: err });
    if (code === "EISDIR") throw new MtlsError("E_BAD_INPUT", `${source}: a directory, not a config file`);
    throw new MtlsError("E_IO", `${source}: cannot read: ${(err as Error).message}`, { cause: err });
  }
  const abs = resolve(file);
  const config = parseConfig(text, { ...opts, source, dir: dirname(abs) });
  return { ...config, file: abs, digest: createHash("sha256").update(text).digest("hex") };
}

/** Parses and checks the text of a config file (see loadConfig). */
export function parseConfig(text: string, opts: ParseConfigOptions = {}): MtlsConfig {
  const source = opts.source ?? "mtls.yaml";
  const dir = resolve(opts.dir ?? ".");
  const env = opts.env ?? process.env;
  const fail = (path: string, message: string): never => {
    throw configError(source, path, message);
  };

  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  const yamlError = doc.errors[0];
  if (yamlError) {
    const where = yamlError.linePos?.[0];
    const what = (yamlError.message.split("\n")[0] ?? "").replace(/ at line \d+, column \d+:?$/, "");
    fail(where ? `line ${where.line}, column ${where.col}` : "", `invalid YAML: ${what}`);
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    fail("", `invalid YAML: ${(err as Error).message}`);
  }
  const needs = opts.require ?? "tunnels";
  if (raw === null || raw === undefined) fail("", `the file is empty: it needs at least "${needs}:"`);
  const parsed = configSchema.safeParse(raw, { reportInput: true });
  if (!parsed.success) {
    fail("", formatIssue(firstIssue(parsed.error.issues)));
  }
  const cfg = parsed.data as NonNullable<typeof parsed.data>;
  // mtls up runs tunnels, gateways or both.
  if (cfg[needs] === undefined && !(needs === "tunnels" && cfg.gateways)) fail("", `missing key "${needs}"`);

  const file = (p: string) => (isAbsolute(p) ? p : resolve(dir, p));
  const envState = env.MTLS_STATE ? resolve(env.MTLS_STATE) : undefined;
  const topState = cfg.state ? file(cfg.state) : (envState ?? resolve(dir, ".mtls"));
  const base = settingsOf(cfg.defaults ?? {}, undefined);
  const names = new Map<string, string>();

  const tunnels = (cfg.tunnels ?? []).map((t, i): TunnelConfig => {
    const path = formatPath(["tunnels", i]);
    const seen = names.get(t.name);
    if (seen) fail(`${path}.name`, `"${t.name}" is already the name of ${seen}`);
    names.set(t.name, path);
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(t.name)) {
      fail(`${path}.name`, `"${t.name}" is not a tunnel name (letters, digits, ".", "_", "-")`);
    }
    const wrongKeys = t.mode === "server" ? CLIENT_ONLY_KEYS : SERVER_ONLY_KEYS;
    for (const k of wrongKeys) {
      if (t[k] !== undefined)
        fail(`${path}.${k}`, `only for ${t.mode === "server" ? "client" : "server"} tunnels`);
    }
    const tls = tunnelTls(t, path, topState, file, fail);
    const settings = settingsOf(t, base);
    const crl = (t.crl ?? []).map((c) => (/^https?:\/\//i.test(c) ? c : file(c)));
    const allow = t.allow?.map((r, j) => rule(r, `${path}.allow[${j}]`, fail));
    if (t.ocsp_recheck !== undefined && !t.ocsp) fail(`${path}.ocsp_recheck`, 'goes with "ocsp: true"');
    const ocspRecheck = t.ocsp_recheck !== undefined ? { ocspRecheckMs: t.ocsp_recheck } : {};
    if (t.revocation_feed !== undefined && !/^https?:\/\/[^/]/i.test(t.revocation_feed))
      fail(`${path}.revocation_feed`, "expected an https:// URL (the CA service)");
    const feed = t.revocation_feed !== undefined ? { revocationFeed: t.revocation_feed } : {};
    const targetTls = t.target_tls ? targetTlsOf(t.target_tls, `${path}.target_tls`, file, fail) : undefined;

    if (t.mode === "client") {
      if (t.target === undefined) fail(path, 'missing key "target" (the tunnel server: host:port)');
      return {
        path,
        name: t.name,
        mode: "client",
        listen: t.listen,
        target: t.target as string,
        protocol: t.protocol ?? "tcp",
        tls,
        crl,
        ocsp: t.ocsp ?? false,
        ...ocspRecheck,
        ...feed,
        settings,
        sni: [],
        proxyProtocol: false,
        unsafeTarget: false,
        ...(t.server_name !== undefined ? { serverName: t.server_name } : {}),
        ...(t.verify_dns ? { verifyDns: t.verify_dns } : {}),
        ...(t.verify_uri ? { verifyUri: t.verify_uri } : {}),
        ...(t.proxy !== undefined ? { proxy: t.proxy } : {}),
        unsafeListen: t.unsafe_listen ?? false,
      };
    }

    if (t.target === undefined && t.sni === undefined) {
      fail(path, 'missing key "target" (or "sni": routes by server name)');
    }
    if (t.target !== undefined && allow === undefined) {
      fail(path, 'missing key "allow" (deny by default: a server tunnel needs at least one rule)');
    }
    const serverNames = new Map<string, string>();
    const sni = (t.sni ?? []).map((r, k): SniRouteConfig => {
      const rpath = `${path}.sni[${k}]`;
      const key = r.server_name.toLowerCase().replace(/\.$/, "");
      const dup = serverNames.get(key);
      if (dup) fail(`${rpath}.server_name`, `"${r.server_name}" is already routed by ${dup}`);
      serverNames.set(key, rpath);
      const own = r.allow?.map((x, j) => rule(x, `${rpath}.allow[${j}]`, fail));
      const routeAllow = own ?? allow;
      if (!routeAllow) {
        fail(rpath, 'missing key "allow" (no rules for this name, and none on the tunnel)');
      }
      const routeTls = routeTlsOf(r, rpath, tls, t.state ? file(t.state) : topState, file, fail);
      const routeTargetTls = r.target_tls
        ? targetTlsOf(r.target_tls, `${rpath}.target_tls`, file, fail)
        : targetTls;
      return {
        path: rpath,
        serverName: r.server_name,
        target: r.target,
        protocol: r.protocol ?? t.protocol ?? "tcp",
        allow: routeAllow as RuleConfig[],
        ...(routeTls ? { tls: routeTls } : {}),
        ...(routeTargetTls ? { targetTls: routeTargetTls } : {}),
      };
    });
    const mint = mintOf(t, sni, path, t.state ? file(t.state) : topState, fail);
    return {
      path,
      name: t.name,
      mode: "server",
      listen: t.listen,
      ...(t.target !== undefined ? { target: t.target } : {}),
      protocol: t.protocol ?? "tcp",
      tls,
      crl,
      ocsp: t.ocsp ?? false,
      ...ocspRecheck,
      ...feed,
      settings,
      ...(allow ? { allow } : {}),
      sni,
      proxyProtocol: t.proxy_protocol ?? false,
      unsafeTarget: t.unsafe_target ?? false,
      ...(targetTls ? { targetTls } : {}),
      ...(mint ? { mint } : {}),
      unsafeListen: false,
    };
  });

  return {
    source,
    file: resolve(dir, source),
    dir,
    logLevel: cfg.log?.level ?? TUNNEL_DEFAULTS.logLevel,
    ...(cfg.status !== undefined ? { status: cfg.status } : {}),
    tunnels,
    ...(cfg.gateways
      ? { gateways: cfg.gateways.map((g, i) => gatewayOf(g, i, names, topState, file, fail)) }
      : {}),
    ...(cfg.agent ? { agent: agentOf(cfg.agent, file, fail) } : {}),
  };
}

/** The agent section, checked, with defaults applied and paths made absolute. */
function agentOf(a: AgentEntry, file: (p: string) => string, fail: Fail): AgentConfig {
  const names = new Map<string, string>();
  const certificates = a.certificates.map((c, i): AgentCertificateConfig => {
    const path = formatPath(["agent", "certificates", i]);
    const seen = names.get(c.name);
    if (seen) fail(`${path}.name`, `"${c.name}" is already the name of ${seen}`);
    names.set(c.name, path);
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(c.name)) {
      fail(`${path}.name`, `"${c.name}" is not a certificate name (letters, digits, ".", "_", "-")`);
    }
    const caUrl = c.ca_url ?? a.ca_url;
    if (caUrl === undefined) fail(path, 'missing key "ca_url" (here or in the agent section)');
    if (!/^https:\/\/[^/?#\s]+(\/[^?#\s]*)?$/i.test(caUrl as string)) {
      fail(`${path}.ca_url`, `"${caUrl}" is not an https:// URL (e.g. https://ca.acme.test:8443)`);
    }
    const caCert = c.ca_cert ?? a.ca_cert;
    if (caCert === undefined) fail(path, 'missing key "ca_cert" (here or in the agent section)');
    if (file(c.cert) === file(c.key))
      fail(`${path}.key`, "the key needs a file of its own, not the certificate's");
    const reload = c.reload ? reloadOf(c.reload, `${path}.reload`, file, fail) : undefined;
    return {
      path,
      name: c.name,
      cert: file(c.cert),
      key: file(c.key),
      caUrl: caUrl as string,
      caCert: file(caCert as string),
      rekey: c.rekey ?? false,
      ...(reload ? { reload } : {}),
    };
  });
  return { ...(a.status !== undefined ? { status: a.status } : {}), certificates };
}

function reloadOf(
  r: NonNullable<AgentEntry["certificates"][number]["reload"]>,
  path: string,
  file: (p: string) => string,
  fail: Fail,
): ReloadConfig | undefined {
  if (r.command !== undefined) {
    if (r.signal !== undefined || r.pid_file !== undefined) {
      fail(path, "give either command or signal and pid_file, not both");
    }
    const shell = typeof r.command === "string";
    return {
      kind: "command",
      argv: shell ? [r.command as string] : (r.command as string[]),
      shell,
      timeoutMs: r.timeout ?? RELOAD_COMMAND_TIMEOUT_MS,
    };
  }
  if (r.timeout !== undefined) fail(`${path}.timeout`, 'goes with "command"');
  if (r.signal === undefined && r.pid_file === undefined) return undefined;
  if (r.pid_file === undefined) fail(path, 'missing key "pid_file" (the process to signal)');
  return {
    kind: "signal",
    signal: `SIG${r.signal ?? "HUP"}` as NodeJS.Signals,
    pidFile: file(r.pid_file as string),
  };
}

type Fail = (path: string, message: string) => never;

/**
 * The issue to report: the first, except that a key missing from a mapping that also holds an
 * unknown key is most likely that key misspelt ("tunnel:" for "tunnels:"), so the unknown key wins.
 */
function firstIssue(issues: readonly z.core.$ZodIssue[]): z.core.$ZodIssue {
  const first = issues[0] as z.core.$ZodIssue;
  const missing =
    (first.code === "invalid_type" || first.code === "invalid_value") && first.input === undefined;
  if (!missing) return first;
  const parent = JSON.stringify(first.path.slice(0, -1));
  return issues.find((i) => i.code === "unrecognized_keys" && JSON.stringify(i.path) === parent) ?? first;
}

function settingsOf(entry: SettingsEntry, base: TunnelSettings | undefined): TunnelSettings {
  const b = base ?? {
    handshakeTimeoutMs: parseDuration(TUNNEL_DEFAULTS.handshakeTimeout),
    connectTimeoutMs: parseDuration(TUNNEL_DEFAULTS.connectTimeout),
    idleTimeoutMs: parseDuration(TUNNEL_DEFAULTS.idleTimeout),
    maxConnections: Number(TUNNEL_DEFAULTS.maxConnections),
    maxConnLifetimeMs: 0,
    shutdownTimeoutMs: parseDuration(TUNNEL_DEFAULTS.shutdownTimeout),
  };
  const reload = entry.reload_interval ?? b.reloadIntervalMs;
  const ftpData = entry.ftp_data_timeout ?? b.ftpDataTimeoutMs;
  return {
    handshakeTimeoutMs: entry.handshake_timeout ?? b.handshakeTimeoutMs,
    connectTimeoutMs: entry.connect_timeout ?? b.connectTimeoutMs,
    idleTimeoutMs: entry.idle_timeout ?? b.idleTimeoutMs,
    maxConnections: entry.max_connections ?? b.maxConnections,
    maxConnLifetimeMs: entry.max_conn_lifetime ?? b.maxConnLifetimeMs,
    shutdownTimeoutMs: entry.shutdown_timeout ?? b.shutdownTimeoutMs,
    ...(reload ? { reloadIntervalMs: reload } : {}),
    ...(ftpData ? { ftpDataTimeoutMs: ftpData } : {}),
  };
}

function rule(r: RuleEntry, path: string, fail: Fail): RuleConfig {
  const out: RuleConfig = {};
  if (r.name !== undefined) out.name = r.name;
  if (r.all !== undefined) out.all = r.all;
  let conditions = 0;
  for (const k of RULE_CONDITIONS) {
    const v = r[k];
    if (v !== undefined) {
      out[k] = v;
      conditions++;
    }
  }
  if (r.all !== true && conditions === 0) {
    fail(path, `an empty rule: give at least one condition (all: true, ${RULE_CONDITIONS.join(", ")})`);
  }
  return out;
}

function tunnelTls(
  t: TunnelEntry,
  path: string,
  topState: string,
  file: (p: string) => string,
  fail: Fail,
): TlsSourceConfig {
  const given = (["cert", "key", "ca"] as const).filter((k) => t[k] !== undefined);
  if (t.identity !== undefined) {
    if (given.length)
      fail(path, `give either cert, key and ca or identity, not both (${given.join(", ")} given)`);
    return { state: t.state ? file(t.state) : topState, identity: t.identity };
  }
  // state also names the CA that mints caller certificates (target_tls.identity: mint).
  const mints =
    t.target_tls?.identity === "mint" || (t.sni ?? []).some((r) => r.target_tls?.identity === "mint");
  if (t.state !== undefined && !mints)
    fail(`${path}.state`, 'goes with "identity" (the name the certificate was issued under)');
  if (given.length === 0)
    fail(path, "no certificate: give cert, key and ca (or identity, from the local CA)");
  if (given.length < 3) {
    const lacking = (["cert", "key", "ca"] as const).filter((k) => t[k] === undefined);
    fail(path, `give cert, key and ca together (missing: ${lacking.join(", ")})`);
  }
  // A key in a PKCS#11 token (docs/hsm.md) is named by its URI, not a path.
  const key = t.key as string;
  return {
    cert: file(t.cert as string),
    key: key.startsWith("pkcs11:") ? key : file(key),
    ca: file(t.ca as string),
  };
}

/** A target_tls mapping, checked, its paths made absolute. */
function targetTlsOf(
  e: TargetTlsEntry,
  path: string,
  file: (p: string) => string,
  fail: Fail,
): TargetTlsConfig {
  if ((e.cert === undefined) !== (e.key === undefined)) {
    fail(path, `give cert and key together (missing: ${e.cert === undefined ? "cert" : "key"})`);
  }
  if (e.identity === "mint" && e.cert !== undefined) {
    fail(path, "give either cert and key or identity: mint, not both");
  }
  if (e.mint_ttl !== undefined && e.identity !== "mint") {
    fail(`${path}.mint_ttl`, 'goes with "identity: mint"');
  }
  return {
    ...(e.ca !== undefined ? { ca: file(e.ca) } : {}),
    ...(e.server_name !== undefined ? { serverName: e.server_name } : {}),
    ...(e.cert !== undefined ? { cert: file(e.cert) } : {}),
    ...(e.key !== undefined ? { key: file(e.key) } : {}),
    ...(e.identity ? { identity: e.identity } : {}),
  };
}

/** The minting CA of a server tunnel (one per tunnel, so one mint_ttl), when a route mints. */
function mintOf(
  t: TunnelEntry,
  sni: SniRouteConfig[],
  path: string,
  state: string,
  fail: Fail,
): { state: string; ttlMs?: number } | undefined {
  const entries: [string, TargetTlsEntry][] = [];
  if (t.target_tls) entries.push([`${path}.target_tls`, t.target_tls]);
  for (const [k, r] of (t.sni ?? []).entries())
    if (r.target_tls) entries.push([`${path}.sni[${k}].target_tls`, r.target_tls]);
  const minting = t.target_tls?.identity === "mint" || sni.some((r) => r.targetTls?.identity === "mint");
  if (!minting) return undefined;
  let ttl: number | undefined;
  for (const [where, e] of entries) {
    if (e.mint_ttl === undefined) continue;
    if (ttl !== undefined && ttl !== e.mint_ttl)
      fail(`${where}.mint_ttl`, "one mint_ttl per tunnel (its routes share one minting CA)");
    ttl = e.mint_ttl;
  }
  return { state, ...(ttl !== undefined ? { ttlMs: ttl } : {}) };
}

/** A route's own certificate: cert + key (ca: the route's, else the tunnel's), or an identity. */
function routeTlsOf(
  r: SniRouteEntry,
  path: string,
  tunnel: TlsSourceConfig,
  state: string,
  file: (p: string) => string,
  fail: Fail,
): TlsSourceConfig | undefined {
  if (r.identity !== undefined) {
    const given = (["cert", "key", "ca"] as const).filter((k) => r[k] !== undefined);
    if (given.length)
      fail(path, `give either cert and key or identity, not both (${given.join(", ")} given)`);
    return { state: "state" in tunnel ? tunnel.state : state, identity: r.identity };
  }
  if (r.cert === undefined && r.key === undefined) {
    if (r.ca !== undefined) fail(`${path}.ca`, 'goes with "cert" and "key" (the route\'s own certificate)');
    return undefined;
  }
  if (r.cert === undefined || r.key === undefined) {
    fail(path, `give cert and key together (missing: ${r.cert === undefined ? "cert" : "key"})`);
  }
  // Trust anchors: the route's, else the tunnel's (its ca file, or the root of its local CA).
  const ca = r.ca !== undefined ? file(r.ca) : "ca" in tunnel ? tunnel.ca : statePaths(tunnel.state).rootCert;
  return { cert: file(r.cert as string), key: file(r.key as string), ca };
}

/** A gateway route's allow rule (a rule, plus HTTP methods). */
export interface GatewayRuleConfig extends RuleConfig {
  methods?: string[];
}

export interface GatewayRouteConfig {
  /** Its place in the file: "gateways[0].routes[1]". */
  path: string;
  host?: string;
  /** The path prefix. */
  prefix: string;
  upstream: string;
  mode: "require" | "optional" | "none";
  allow: GatewayRuleConfig[];
  /** An access token the route requires (jwks: an absolute path, or a URL as written). */
  token?: {
    bind: "certificate" | "none";
    jwks: string;
    issuer?: string;
    audience?: string;
    algorithms?: string[];
    clockToleranceMs?: number;
    reloadIntervalMs?: number;
  };
  /** TLS to an https:// upstream (paths absolute; the gateway's upstream_* as defaults). */
  upstreamTls?: {
    ca?: string;
    cert?: string;
    key?: string;
    identity?: { state: string; name: string };
    serverName?: string;
  };
}

/** One `gateways:` entry, checked, paths absolute (gateway/build.ts GatewaySpec is made from it). */
export interface GatewayConfig {
  /** Its place in the file: "gateways[0]". */
  path: string;
  name: string;
  listen: string;
  tls: TlsSourceConfig;
  crl: string[];
  ocsp: boolean;
  ocspRecheckMs?: number;
  revocationFeed?: string;
  routes: GatewayRouteConfig[];
  identityHeaders: "rfc9440" | "xfcc" | "both";
  enrollUrl?: string;
  /** As written ("100m", a number of bytes); parsed by the gateway. */
  maxBody?: string | number;
  requestTimeoutMs?: number;
  upstreamTimeoutMs?: number;
  keepAliveTimeoutMs?: number;
  handshakeTimeoutMs?: number;
  maxConnections?: number;
  shutdownTimeoutMs?: number;
  reloadIntervalMs?: number;
  http2: boolean;
  unsafeUpstream: boolean;
  /** `relay:` as written (max_message parsed by the gateway); see gateway/relay.ts RelaySettings. */
  relay?: {
    targets: { name: string; target: string }[];
    origins?: string[];
    maxSessions?: number;
    maxPerClient?: number;
    maxMessage?: string | number;
    connectTimeoutMs?: number;
    idleTimeoutMs?: number;
  };
}

/**
 * A route's TLS to its https:// upstream: its own upstream_* keys, else the gateway's (a route's own
 * client certificate, files or identity, replaces the gateway's as a whole). Undefined for http://.
 */
function gatewayUpstreamTls(
  g: GatewayEntry,
  r: GatewayEntry["routes"][number],
  rpath: string,
  topState: string,
  file: (p: string) => string,
  fail: Fail,
): GatewayRouteConfig["upstreamTls"] {
  const own = [r.upstream_ca, r.upstream_cert, r.upstream_key, r.upstream_identity, r.upstream_servername];
  const https = /^https:/i.test(r.upstream);
  if (!https) {
    if (own.some((v) => v !== undefined)) fail(rpath, "the upstream_* keys go with an https:// upstream");
    return undefined;
  }
  const ownClient =
    r.upstream_cert !== undefined || r.upstream_key !== undefined || r.upstream_identity !== undefined;
  const cert = ownClient ? r.upstream_cert : g.upstream_cert;
  const key = ownClient ? r.upstream_key : g.upstream_key;
  const identity = ownClient ? r.upstream_identity : g.upstream_identity;
  const ca = r.upstream_ca ?? g.upstream_ca;
  if ((cert === undefined) !== (key === undefined))
    fail(rpath, "give upstream_cert and upstream_key together");
  if (cert !== undefined && identity !== undefined) {
    fail(rpath, "give either upstream_cert/upstream_key or upstream_identity, not both");
  }
  const state = g.state !== undefined ? file(g.state) : topState;
  const out: NonNullable<GatewayRouteConfig["upstreamTls"]> = {
    ...(ca !== undefined ? { ca: file(ca) } : {}),
    ...(cert !== undefined ? { cert: file(cert) } : {}),
    ...(key !== undefined ? { key: file(key) } : {}),
    ...(identity !== undefined ? { identity: { state, name: identity } } : {}),
    ...(r.upstream_servername !== undefined ? { serverName: r.upstream_servername } : {}),
  };
  return Object.keys(out).length ? out : undefined;
}

function gatewayOf(
  g: GatewayEntry,
  i: number,
  names: Map<string, string>,
  topState: string,
  file: (p: string) => string,
  fail: Fail,
): GatewayConfig {
  const path = formatPath(["gateways", i]);
  const seen = names.get(g.name);
  if (seen) fail(`${path}.name`, `"${g.name}" is already the name of ${seen}`);
  names.set(g.name, path);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(g.name)) {
    fail(`${path}.name`, `"${g.name}" is not a gateway name (letters, digits, ".", "_", "-")`);
  }
  // The same certificate keys as a tunnel's: cert/key/ca, or identity (+ state).
  const tls = tunnelTls(g as unknown as TunnelEntry, path, topState, file, fail);
  const gatewayRule = (r: GatewayEntry["routes"][number]["allow"] & object, p: string) =>
    r.map((x, j): GatewayRuleConfig => {
      const out: GatewayRuleConfig = rule(x, `${p}[${j}]`, fail);
      if (x.methods) out.methods = x.methods.map((m) => m.toUpperCase());
      return out;
    });
  const defaults = g.allow ? gatewayRule(g.allow, `${path}.allow`) : [];
  const routes = g.routes.map((r, k): GatewayRouteConfig => {
    const rpath = `${path}.routes[${k}]`;
    const mode = r.mode ?? g.mode ?? "require";
    const allow = r.allow ? gatewayRule(r.allow, `${rpath}.allow`) : defaults;
    if (mode === "require" && allow.length === 0) {
      fail(rpath, 'missing key "allow" (deny by default: no rules for this route, and none on the gateway)');
    }
    const upstreamTls = gatewayUpstreamTls(g, r, rpath, topState, file, fail);
    return {
      path: rpath,
      ...(r.host !== undefined ? { host: r.host } : {}),
      prefix: r.path,
      upstream: r.upstream,
      mode,
      allow,
      ...(upstreamTls ? { upstreamTls } : {}),
      ...(r.token
        ? {
            token: {
              bind: r.token.bind,
              jwks: /^[a-z][a-z0-9+.-]*:\/\//i.test(r.token.jwks) ? r.token.jwks : file(r.token.jwks),
              ...(r.token.issuer !== undefined ? { issuer: r.token.issuer } : {}),
              ...(r.token.audience !== undefined ? { audience: r.token.audience } : {}),
              ...(r.token.algorithms ? { algorithms: r.token.algorithms } : {}),
              ...(r.token.clock_tolerance !== undefined ? { clockToleranceMs: r.token.clock_tolerance } : {}),
              ...(r.token.reload_interval ? { reloadIntervalMs: r.token.reload_interval } : {}),
            },
          }
        : {}),
    };
  });
  if (g.ocsp_recheck !== undefined && !g.ocsp) fail(`${path}.ocsp_recheck`, 'goes with "ocsp: true"');
  if (g.revocation_feed !== undefined && !/^https?:\/\/[^/]/i.test(g.revocation_feed))
    fail(`${path}.revocation_feed`, "expected an https:// URL (the CA service)");
  const opt = <K extends string, V>(key: K, v: V | undefined) =>
    (v !== undefined ? { [key]: v } : {}) as { [P in K]?: V };
  return {
    path,
    name: g.name,
    listen: g.listen,
    tls,
    crl: (g.crl ?? []).map((c) => (/^https?:\/\//i.test(c) ? c : file(c))),
    ocsp: g.ocsp ?? false,
    ...opt("ocspRecheckMs", g.ocsp_recheck),
    ...opt("revocationFeed", g.revocation_feed),
    routes,
    identityHeaders: g.identity_headers ?? "rfc9440",
    ...opt("enrollUrl", g.enroll_url),
    ...opt("maxBody", g.max_body),
    ...opt("requestTimeoutMs", g.request_timeout),
    ...opt("upstreamTimeoutMs", g.upstream_timeout),
    ...opt("keepAliveTimeoutMs", g.keepalive_timeout),
    ...opt("handshakeTimeoutMs", g.handshake_timeout),
    ...opt("maxConnections", g.max_connections),
    ...opt("shutdownTimeoutMs", g.shutdown_timeout),
    ...opt("reloadIntervalMs", g.reload_interval || undefined),
    http2: g.http2 ?? true,
    unsafeUpstream: g.unsafe_upstream ?? false,
    ...(g.relay
      ? {
          relay: {
            targets: g.relay.targets,
            ...opt("origins", g.relay.origins),
            ...opt("maxSessions", g.relay.max_sessions),
            ...opt("maxPerClient", g.relay.max_per_client),
            ...opt("maxMessage", g.relay.max_message),
            ...opt("connectTimeoutMs", g.relay.connect_timeout),
            ...opt("idleTimeoutMs", g.relay.idle_timeout),
          },
        }
      : {}),
  };
}
