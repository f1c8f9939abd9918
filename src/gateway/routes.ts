import { isIP } from "node:net";
import { MtlsError } from "../errors.js";
import { compilePolicy, type Policy, type RuleSpec } from "../policy/index.js";
import {
  type AccessTokenSpec,
  AccessTokenVerifier,
  isTokenOption,
  tokenSpecFromOptions,
} from "./bound-token.js";

/**
 * Gateway routes: which upstream a request goes to (by Host and the longest path prefix), and what
 * it takes to get there (a mode and allow rules). Pure: parsing, checking and matching only.
 */

/**
 * require: a verified client certificate that the route's rules allow, or no entry;
 * optional: anyone passes, and the upstream sees the identity when a valid certificate was presented;
 * none: anyone passes, and no identity is ever sent upstream.
 */
export type RouteMode = "require" | "optional" | "none";

export const ROUTE_MODES: readonly RouteMode[] = ["require", "optional", "none"];

/**
 * Whether a listener with these routes asks browsers for a client certificate: only when some route
 * uses one. A gateway that only relays (or only has mode none routes) must not ask: Chromium with no
 * certificate to offer cancels a WebSocket's opening handshake when the server sends a
 * CertificateRequest (page loads carry on without one; WebSockets do not).
 */
export const asksClientCertificate = (routes: readonly { mode: RouteMode }[]): boolean =>
  routes.some((r) => r.mode !== "none");

/** A route described as data (from flags, mtls.yaml or a program). */
export interface GatewayRouteSpec {
  /** Host (case-insensitive, no port) or "*.acme.test" (one label); absent: any host. */
  host?: string;
  /** Path prefix, starting with "/". "/api/" also takes "/api" itself. */
  path: string;
  /** http(s)://host:port[/base]: with a base path, the route's prefix is replaced by it (as nginx's proxy_pass). */
  upstream: string;
  mode: RouteMode;
  /** Allow rules (require mode: at least one). A rule may name HTTP methods. */
  rules: RuleSpec[];
  /** TLS to an https:// upstream (absent: Node's CA store, no client certificate, SNI = its host). */
  upstreamTls?: UpstreamTlsSpec;
  /** A bearer access token the route requires (bind "certificate": RFC 8705, only with mode require). */
  token?: AccessTokenSpec;
}

/** How the gateway speaks TLS to an https:// upstream, as data (file paths). */
export interface UpstreamTlsSpec {
  /** CA certificate(s) the upstream's certificate must chain to (absent: Node's CA store). */
  ca?: string;
  /** A client certificate (with `key`) for an upstream that requires mTLS. */
  cert?: string;
  key?: string;
  /** Or a name issued by the local CA in `state` (its current certificate and key). */
  identity?: { state: string; name: string };
  /** The name sent as SNI and checked in the upstream's certificate (absent: the upstream's host). */
  serverName?: string;
}

/** An https:// upstream's TLS options, loaded (gateway/build.ts): what https.request gets. */
export interface UpstreamTlsOptions {
  ca?: string;
  cert?: string;
  key?: string;
  /** SNI and the name checked ("" for an IP address: no SNI, the address itself is checked). */
  servername: string;
  /** Tells apart upstreams of one origin with different TLS options (one connection pool each). */
  id: string;
}

/** A route ready to serve. */
export interface GatewayRoute {
  /** "host/path" or "*\/path": the `route` label of metrics and audit lines. */
  name: string;
  host?: string;
  path: string;
  upstream: URL;
  mode: RouteMode;
  policy: Policy;
  upstreamTls?: UpstreamTlsSpec;
  /** The route's token verifier (built once here; its JWKS file watch is closed with the gateway). */
  token?: AccessTokenVerifier;
  /** An https:// upstream's loaded TLS options (set by gateway/build.ts; absent: defaults). */
  tls?: UpstreamTlsOptions;
}

const HOST_RE = /^(\*\.)?[a-z0-9]([a-z0-9-]{0,62})?(\.[a-z0-9]([a-z0-9-]{0,62})?)*$/;

const usage = (msg: string) => new MtlsError("E_USAGE", msg);

/** Options a --route value may carry after the upstream: `;mode=optional;allow-uri=…;methods=GET,HEAD`. */
const ALLOW_KEYS: Record<string, keyof RuleSpec> = {
  "allow-cn": "cn",
  "allow-ou": "ou",
  "allow-dns": "dns",
  "allow-uri": "uri",
  "allow-email": "email",
  "allow-fingerprint": "fingerprint",
  "allow-spki": "spki",
};

export interface RouteFlagDefaults {
  /** The mode of routes that do not say theirs. */
  mode: RouteMode;
  /** The rules of routes without allow-* options of their own (the --allow-* flags). */
  rules: RuleSpec[];
  /** --allow-method: the methods of the default rules (absent: any method). */
  methods?: string[];
  /** --upstream-ca/--upstream-cert/--upstream-key/--upstream-identity: for https:// upstreams. */
  upstreamTls?: UpstreamTlsSpec;
  /** The state directory `upstream-identity=` names a certificate in. */
  state?: string;
}

/**
 * One --route value: `[HOST]/PATH=http://HOST:PORT[/BASE][;OPTION…]`, options `mode=require|optional|none`,
 * `allow-cn=`, `allow-ou=`, `allow-dns=`, `allow-uri=`, `allow-email=`, `allow-fingerprint=`,
 * `allow-spki=` (each one rule, as the --allow-* flags), `allow-all` and `methods=GET,POST` (the
 * methods of this route's rules). A route without allow-* options takes the defaults.
 */
export function parseRouteFlag(text: string, defaults: RouteFlagDefaults): GatewayRouteSpec {
  const eq = text.indexOf("=");
  if (eq <= 0) {
    throw usage(
      `invalid --route "${text}": expected [HOST]/PATH=http://HOST:PORT (e.g. /api/=http://127.0.0.1:4000)`,
    );
  }
  const left = text.slice(0, eq);
  const [upstream, ...options] = text.slice(eq + 1).split(";");
  const slash = left.indexOf("/");
  const host = slash < 0 ? left : left.slice(0, slash);
  const path = slash < 0 ? "/" : left.slice(slash);
  let mode = defaults.mode;
  const own: RuleSpec[] = [];
  let methods: string[] | undefined;
  const tls: UpstreamTlsSpec = {};
  const tokenOptions = new Map<string, string>();
  for (const option of options) {
    if (option === "") continue;
    const i = option.indexOf("=");
    const key = (i < 0 ? option : option.slice(0, i)).trim();
    const value = i < 0 ? "" : option.slice(i + 1).trim();
    const kind = ALLOW_KEYS[key];
    if (key === "mode") mode = modeOf(value, `--route "${text}": mode`);
    else if (key === "allow-all") own.push({ all: true });
    else if (key === "methods") methods = value.split(",").map((m) => m.trim().toUpperCase());
    else if (kind && value) own.push({ [kind]: [value] });
    else if (key === "upstream-ca" && value) tls.ca = value;
    else if (key === "upstream-cert" && value) tls.cert = value;
    else if (key === "upstream-key" && value) tls.key = value;
    else if (key === "upstream-servername" && value) tls.serverName = value;
    else if (key === "upstream-identity" && value) {
      if (defaults.state === undefined) {
        throw usage(`invalid --route "${text}": upstream-identity= needs the local CA (--state DIR)`);
      }
      tls.identity = { state: defaults.state, name: value };
    } else if (isTokenOption(key) && value) tokenOptions.set(key, value);
    else {
      throw usage(
        `invalid --route "${text}": unknown or empty option "${option}" (mode=, allow-cn=, allow-ou=, allow-dns=, allow-uri=, allow-email=, allow-fingerprint=, allow-spki=, allow-all, methods=, upstream-ca=, upstream-cert=, upstream-key=, upstream-identity=, upstream-servername=, token=bound|bearer, jwks=, issuer=, audience=, algorithms=, clock-tolerance=, jwks-reload=)`,
      );
    }
  }
  // A route's own client certificate replaces the default one (files or identity) as a whole.
  const ownClient = tls.cert !== undefined || tls.key !== undefined || tls.identity !== undefined;
  const d = defaults.upstreamTls ?? {};
  const upstreamTls: UpstreamTlsSpec = {
    ...(d.ca !== undefined ? { ca: d.ca } : {}),
    ...(ownClient
      ? {}
      : {
          ...(d.cert !== undefined ? { cert: d.cert } : {}),
          ...(d.key !== undefined ? { key: d.key } : {}),
          ...(d.identity !== undefined ? { identity: d.identity } : {}),
        }),
    ...(d.serverName !== undefined ? { serverName: d.serverName } : {}),
    ...tls,
  };
  const https = (upstream ?? "").toLowerCase().startsWith("https:");
  const hasTls = Object.keys(upstreamTls).length > 0;
  if (Object.keys(tls).length > 0 && !https) {
    throw usage(`invalid --route "${text}": the upstream-* options go with an https:// upstream`);
  }
  const token = tokenSpecFromOptions(tokenOptions, `invalid --route "${text}"`);
  const base = own.length ? own : defaults.rules;
  const withMethods = methods ?? (own.length ? undefined : defaults.methods);
  const rules = withMethods?.length ? base.map((r) => ({ ...r, methods: r.methods ?? withMethods })) : base;
  return {
    ...(host ? { host } : {}),
    path,
    upstream: upstream ?? "",
    mode,
    rules,
    // The --upstream-* defaults apply to the https:// routes only.
    ...(https && hasTls ? { upstreamTls } : {}),
    ...(token ? { token } : {}),
  };
}

export function modeOf(text: string, what = "mode"): RouteMode {
  if (!(ROUTE_MODES as readonly string[]).includes(text)) {
    throw usage(`invalid ${what} "${text}" (require, optional or none)`);
  }
  return text as RouteMode;
}

/** True for localhost, 127.0.0.0/8 and ::1. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, "");
  if (h === "localhost" || h.endsWith(".localhost")) return true;
  if (isIP(h) === 4) return h.startsWith("127.");
  return h === "::1";
}

/**
 * Checks and compiles routes. Throws E_USAGE naming the route: a bad host, path or upstream, a
 * require route without rules (deny by default), two routes for the same host and path, a
 * plain-text upstream off loopback without `unsafeUpstream` (an https:// one may be anywhere), or
 * upstream TLS options that do not fit (on an http:// upstream, a certificate without its key), or a
 * token requirement that does not (a bound token off mode require, bad options). A route's JWKS
 * file is read here (E_IO, E_BAD_INPUT).
 */
export function compileRoutes(
  specs: GatewayRouteSpec[],
  opts: { unsafeUpstream?: boolean; relays?: boolean } = {},
): GatewayRoute[] {
  if (specs.length === 0 && !opts.relays) {
    throw usage(
      "a gateway needs at least one route (--route /=http://127.0.0.1:PORT) or relay (--relay NAME=HOST:PORT)",
    );
  }
  const seen = new Set<string>();
  return specs.map((s) => {
    const host = s.host?.toLowerCase().replace(/\.$/, "");
    const name = `${host ?? "*"}${s.path}`;
    const where = `route ${name}`;
    if (host !== undefined && !HOST_RE.test(host) && isIP(host) === 0) {
      throw usage(`${where}: invalid host "${s.host}" (a name such as app.acme.test or *.acme.test)`);
    }
    if (!s.path.startsWith("/") || /[?#\s]/.test(s.path) || normalizePath(s.path) !== s.path) {
      throw usage(`${where}: the path must start with "/" and be normalized (no "..", "?", "#" or spaces)`);
    }
    if (seen.has(name)) throw usage(`two routes for ${name}`);
    seen.add(name);
    modeOf(s.mode, `${where}: mode`);
    let upstream: URL;
    try {
      upstream = new URL(s.upstream);
    } catch {
      throw usage(`${where}: invalid upstream "${s.upstream}" (http://HOST:PORT or https://HOST:PORT)`);
    }
    if (upstream.protocol !== "http:" && upstream.protocol !== "https:") {
      throw usage(`${where}: upstream ${s.upstream}: only http:// and https:// upstreams are supported`);
    }
    if (upstream.username || upstream.password || upstream.search || upstream.hash) {
      throw usage(`${where}: upstream ${s.upstream}: no credentials, query or fragment`);
    }
    if (s.upstreamTls) checkUpstreamTls(s.upstreamTls, upstream, `${where}: upstream ${s.upstream}`);
    if (upstream.protocol === "http:" && !opts.unsafeUpstream && !isLoopbackHost(upstream.hostname)) {
      throw usage(
        `${where}: upstream ${s.upstream} is not loopback: its plain-text leg would cross a network (pass --unsafe-upstream if that is intended)`,
      );
    }
    if (s.mode === "require" && s.rules.length === 0) {
      throw usage(
        `${where}: deny by default: a route that requires a certificate needs at least one allow rule`,
      );
    }
    let policy: Policy;
    try {
      policy = compilePolicy(s.rules);
    } catch (err) {
      throw usage(`${where}: ${(err as Error).message}`);
    }
    if (s.token?.bind === "certificate" && s.mode !== "require") {
      throw usage(
        `${where}: a certificate-bound token (RFC 8705) needs mode require: the token is checked against the verified client certificate`,
      );
    }
    // Reads a JWKS file now (E_IO / E_BAD_INPUT); it is watched from the first request on.
    const token = s.token ? new AccessTokenVerifier(s.token, where) : undefined;
    return {
      name,
      ...(host !== undefined ? { host } : {}),
      path: s.path,
      upstream,
      mode: s.mode,
      policy,
      ...(s.upstreamTls ? { upstreamTls: s.upstreamTls } : {}),
      ...(token ? { token } : {}),
    };
  });
}

function checkUpstreamTls(t: UpstreamTlsSpec, upstream: URL, where: string): void {
  if (upstream.protocol !== "https:") {
    throw usage(
      `${where}: upstream TLS options (CA, client certificate, server name) need an https:// upstream`,
    );
  }
  if ((t.cert === undefined) !== (t.key === undefined)) {
    throw usage(`${where}: give the upstream client certificate and its key together`);
  }
  if (t.cert !== undefined && t.identity !== undefined) {
    throw usage(
      `${where}: give either an upstream client certificate and key or an upstream identity, not both`,
    );
  }
  if (t.serverName !== undefined) {
    const n = t.serverName.toLowerCase();
    if (isIP(n) !== 0 || !HOST_RE.test(n) || n.startsWith("*.")) {
      throw usage(`${where}: invalid upstream server name "${t.serverName}" (a DNS name)`);
    }
  }
}

/**
 * The path of a request target as the gateway matches and forwards it: dot segments resolved (also
 * percent-encoded ones and backslashes, as WHATWG URL parsing does), so `/public/../admin` is matched
 * as `/admin`, which is also what the upstream receives. Undefined for a target that is not a path
 * (absolute-form, `*`).
 */
export function normalizeTarget(raw: string): { path: string; search: string } | undefined {
  if (!raw.startsWith("/")) return undefined;
  let url: URL;
  try {
    // Concatenated, not resolved against a base: "//host/x" stays a path.
    url = new URL(`http://gateway${raw}`);
  } catch {
    return undefined;
  }
  if (url.host !== "gateway") return undefined;
  return { path: url.pathname, search: url.search };
}

export function normalizePath(path: string): string | undefined {
  return normalizeTarget(path)?.path;
}

/** Whether a route's path prefix takes `path`: "/api/" takes "/api", "/api/x"; "/api" takes "/api", "/api/x", not "/apix". */
export function prefixMatches(prefix: string, path: string): boolean {
  if (prefix === "/") return true;
  if (prefix.endsWith("/")) return path.startsWith(prefix) || path === prefix.slice(0, -1);
  return path === prefix || path.startsWith(`${prefix}/`);
}

/** The host of a Host header, lowercased, without its port or brackets' port. */
export function hostOf(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const h = header.trim().toLowerCase();
  const v6 = /^\[([^\]]+)\](?::\d+)?$/.exec(h);
  if (v6) return v6[1];
  return h.replace(/:\d+$/, "").replace(/\.$/, "");
}

function hostRank(routeHost: string | undefined, host: string | undefined): number {
  if (routeHost === undefined) return 1;
  if (host === undefined) return 0;
  if (routeHost === host) return 3;
  if (routeHost.startsWith("*.")) {
    const dot = host.indexOf(".");
    if (dot > 0 && host.slice(dot) === routeHost.slice(1)) return 2;
  }
  return 0;
}

/**
 * The route for a request: among routes for this host (exact, then "*.domain") or for any host, the
 * longest matching path prefix wins; on equal prefixes the more specific host does.
 */
export function matchRoute<R extends { host?: string; path: string }>(
  routes: readonly R[],
  host: string | undefined,
  path: string,
): R | undefined {
  let best: R | undefined;
  let bestLen = -1;
  let bestRank = 0;
  for (const r of routes) {
    const rank = hostRank(r.host, host);
    if (rank === 0 || !prefixMatches(r.path, path)) continue;
    const len = r.path.length;
    if (len > bestLen || (len === bestLen && rank > bestRank)) {
      best = r;
      bestLen = len;
      bestRank = rank;
    }
  }
  return best;
}

/** The upstream path for a request: as is, or with the route's prefix replaced by the upstream's base path. */
export function upstreamPath(route: { path: string; upstream: URL }, path: string, search: string): string {
  const base = route.upstream.pathname;
  if (base === "/" || base === "") return `${path}${search}`;
  let rest = path.startsWith(route.path) ? path.slice(route.path.length) : "";
  if (base.endsWith("/") && rest.startsWith("/")) rest = rest.slice(1);
  else if (!base.endsWith("/") && rest && !rest.startsWith("/")) rest = `/${rest}`;
  return `${base}${rest}${search}`;
}
