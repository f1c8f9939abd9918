import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { resolve } from "node:path";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  errors,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
} from "jose";
import { parseDuration } from "../config/duration.js";
import { type FileWatch, watchFile } from "../config/watch.js";
import { MtlsError } from "../errors.js";

/**
 * Access tokens on a gateway route: a bearer JWT (RFC 6750 `Authorization: Bearer …`) verified with
 * jose against a JWKS (a watched file, or an https URL), and optionally bound to the client
 * certificate of the connection (RFC 8705 §3: the token's `cnf["x5t#S256"]` is the SHA-256
 * thumbprint of the certificate the client authenticated with). A bound token stolen from its
 * owner is useless without the owner's private key; a plain bearer token works for whoever holds it.
 */

/** certificate: RFC 8705 bound to this connection's client certificate; none: a plain bearer token. */
export type TokenBinding = "certificate" | "none";

export const TOKEN_BINDINGS: readonly TokenBinding[] = ["certificate", "none"];

/** Signature algorithms a route may accept: public-key ones only (never "none", never HS* shared secrets). */
export const TOKEN_ALGORITHMS = [
  "ES256",
  "ES384",
  "ES512",
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "EdDSA",
  "Ed25519",
] as const;

export const DEFAULT_TOKEN_ALGORITHMS: readonly string[] = ["ES256", "ES384", "RS256", "PS256", "EdDSA"];

export const DEFAULT_CLOCK_TOLERANCE_MS = 30_000;

/** A route's token requirement described as data (from --route options, mtls.yaml or a program). */
export interface AccessTokenSpec {
  bind: TokenBinding;
  /** A JWKS file (re-read when it changes), or an https:// URL (http:// only on loopback). */
  jwks: string;
  /** The `iss` the token must carry (absent: any). */
  issuer?: string;
  /** An `aud` the token must carry (absent: any). */
  audience?: string;
  /** Accepted `alg` values (default ES256, ES384, RS256, PS256, EdDSA). */
  algorithms?: string[];
  /** Leeway on `exp` and `nbf` (default 30 s). */
  clockToleranceMs?: number;
  /** Also re-read the JWKS file this often (it is watched anyway). */
  reloadIntervalMs?: number;
}

/** Why a request's token was not accepted (the gateway's refusal reasons). */
export type TokenRefusal =
  | "token_missing"
  | "token_malformed"
  | "token_invalid"
  | "token_binding"
  | "jwks_unavailable";

/** What the audit line records of a token whose signature verified (never the token itself). */
export interface TokenClaims {
  sub?: string;
  iss?: string;
  jti?: string;
  /** Whether the token was certificate-bound (had `cnf["x5t#S256"]`). */
  bound: boolean;
}

export type TokenVerdict =
  | { ok: true; claims: TokenClaims }
  | { ok: false; reason: TokenRefusal; detail: string; claims?: TokenClaims };

const usage = (msg: string) => new MtlsError("E_USAGE", msg);

/** RFC 8705 §3.1 `x5t#S256`: base64url (no padding) of SHA-256 over the certificate's DER. */
export function certificateThumbprint(der: Uint8Array): string {
  return createHash("sha256").update(der).digest("base64url");
}

/** RFC 6750 §2.1 b64token. */
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;

/**
 * The bearer token of a request from all its Authorization header values (RFC 6750 §2.1). No
 * header, or another scheme (Basic, ...), is "missing" (§3.1: no error code then); two headers or
 * Bearer credentials that are not one b64token are "malformed" (invalid_request).
 */
export function bearerTokenOf(
  values: readonly string[],
): { token: string } | { reason: "token_missing" | "token_malformed"; detail: string } {
  if (values.length === 0) return { reason: "token_missing", detail: "no Authorization header" };
  if (values.length > 1) return { reason: "token_malformed", detail: "more than one Authorization header" };
  const value = (values[0] as string).trim();
  const space = value.search(/\s/);
  const scheme = space < 0 ? value : value.slice(0, space);
  if (scheme.toLowerCase() !== "bearer") {
    return {
      reason: "token_missing",
      detail: `the Authorization header uses the ${JSON.stringify(scheme.slice(0, 32))} scheme, not Bearer`,
    };
  }
  const token = space < 0 ? "" : value.slice(space).trim();
  if (!B64TOKEN.test(token)) {
    return {
      reason: "token_malformed",
      detail: "the Bearer credentials are not one token (RFC 6750 b64token)",
    };
  }
  return { token };
}

function isLoopbackName(host: string): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, "");
  if (h === "localhost" || h.endsWith(".localhost")) return true;
  if (isIP(h) === 4) return h.startsWith("127.");
  return h === "::1";
}

/**
 * A JWKS as text, checked: JSON with a non-empty `keys` list of public keys. A private key in a
 * file that is published to verifiers is a mistake worth stopping for.
 */
export function parseJwks(text: string, source: string): JSONWebKeySet {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new MtlsError("E_BAD_INPUT", `${source}: not JSON: ${(err as Error).message}`);
  }
  const keys = (json as { keys?: unknown })?.keys;
  if (!Array.isArray(keys) || keys.length === 0) {
    throw new MtlsError(
      "E_BAD_INPUT",
      `${source}: not a JWKS (expected {"keys": [ … ]} with at least one key)`,
    );
  }
  for (const [i, k] of keys.entries()) {
    if (typeof k !== "object" || k === null || typeof (k as { kty?: unknown }).kty !== "string") {
      throw new MtlsError("E_BAD_INPUT", `${source}: keys[${i}] is not a JWK (no "kty")`);
    }
    if ("d" in k || (k as { kty: string }).kty === "oct") {
      throw new MtlsError(
        "E_BAD_INPUT",
        `${source}: keys[${i}] is a private or secret key: a JWKS for verifiers holds public keys only`,
      );
    }
  }
  return json as JSONWebKeySet;
}

/** A spec with its defaults filled in. */
export type CheckedTokenSpec = AccessTokenSpec & { algorithms: string[]; clockToleranceMs: number };

/** Checks a spec; throws E_USAGE naming `where` (the route). Returns it with defaults filled in. */
export function checkTokenSpec(spec: AccessTokenSpec, where: string): CheckedTokenSpec {
  if (!(TOKEN_BINDINGS as readonly string[]).includes(spec.bind)) {
    throw usage(`${where}: token binding "${spec.bind}" (certificate or none)`);
  }
  if (!spec.jwks) throw usage(`${where}: a token route needs a JWKS (a file, or an https:// URL)`);
  const algorithms = spec.algorithms ?? [...DEFAULT_TOKEN_ALGORITHMS];
  if (algorithms.length === 0) throw usage(`${where}: the list of token algorithms is empty`);
  for (const alg of algorithms) {
    if (!(TOKEN_ALGORITHMS as readonly string[]).includes(alg)) {
      const why =
        alg.toLowerCase() === "none" || /^HS\d+$/i.test(alg)
          ? "unsigned and shared-secret tokens are never accepted"
          : "unknown algorithm";
      throw usage(`${where}: token algorithm "${alg}": ${why} (${TOKEN_ALGORITHMS.join(", ")})`);
    }
  }
  const clockToleranceMs = spec.clockToleranceMs ?? DEFAULT_CLOCK_TOLERANCE_MS;
  if (!Number.isFinite(clockToleranceMs) || clockToleranceMs < 0) {
    throw usage(`${where}: token clock tolerance must be 0 or more`);
  }
  if (spec.issuer === "") throw usage(`${where}: token issuer is empty`);
  if (spec.audience === "") throw usage(`${where}: token audience is empty`);
  return { ...spec, algorithms, clockToleranceMs };
}

/** A JWKS reference: a URL (https, or http on loopback) or a file path. */
function jwksSource(jwks: string, where: string): { url: URL } | { file: string } {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(jwks)) return { file: resolve(jwks) };
  let url: URL;
  try {
    url = new URL(jwks);
  } catch {
    throw usage(`${where}: invalid JWKS URL "${jwks}"`);
  }
  if (url.protocol === "https:") return { url };
  if (url.protocol === "http:" && isLoopbackName(url.hostname)) return { url };
  throw usage(
    `${where}: JWKS URL ${jwks}: only https:// (http:// only on loopback), or a file path: keys fetched in plain text could be swapped on the way`,
  );
}

const OPTION_KEYS = ["token", "jwks", "issuer", "audience", "algorithms", "clock-tolerance", "jwks-reload"];

/** Whether a --route option belongs to the token requirement. */
export function isTokenOption(key: string): boolean {
  return OPTION_KEYS.includes(key);
}

/**
 * The token part of a --route value: `token=bound|bearer;jwks=FILE|URL;issuer=…;audience=…;
 * algorithms=ES256,RS256;clock-tolerance=30s;jwks-reload=1h`. Undefined when no option was given.
 */
export function tokenSpecFromOptions(
  options: Map<string, string>,
  where: string,
): AccessTokenSpec | undefined {
  if (options.size === 0) return undefined;
  const kind = options.get("token");
  if (kind === undefined) {
    const keys = [...options.keys()];
    throw usage(
      `${where}: ${keys.join(", ")} ${keys.length === 1 ? "goes" : "go"} with token=bound or token=bearer`,
    );
  }
  if (kind !== "bound" && kind !== "bearer") {
    throw usage(`${where}: token=${kind}: bound (RFC 8705, tied to the client certificate) or bearer`);
  }
  const jwks = options.get("jwks");
  if (!jwks) throw usage(`${where}: token=${kind} needs jwks=FILE or jwks=https://…`);
  const tolerance = options.get("clock-tolerance");
  const reload = options.get("jwks-reload");
  const issuer = options.get("issuer");
  const audience = options.get("audience");
  const algorithms = options.get("algorithms");
  return {
    bind: kind === "bound" ? "certificate" : "none",
    jwks,
    ...(issuer !== undefined ? { issuer } : {}),
    ...(audience !== undefined ? { audience } : {}),
    ...(algorithms !== undefined ? { algorithms: algorithms.split(",").map((a) => a.trim()) } : {}),
    ...(tolerance !== undefined
      ? {
          clockToleranceMs: /^0+[smh]?$/.test(tolerance)
            ? 0
            : parseDuration(tolerance, `${where}: clock-tolerance`),
        }
      : {}),
    ...(reload !== undefined ? { reloadIntervalMs: parseDuration(reload, `${where}: jwks-reload`) } : {}),
  };
}

function claimsOf(payload: JWTPayload): TokenClaims {
  const cnf = payload.cnf as Record<string, unknown> | undefined;
  return {
    ...(typeof payload.sub === "string" ? { sub: payload.sub } : {}),
    ...(typeof payload.iss === "string" ? { iss: payload.iss } : {}),
    ...(typeof payload.jti === "string" ? { jti: payload.jti } : {}),
    bound: typeof cnf === "object" && cnf !== null && typeof cnf["x5t#S256"] === "string",
  };
}

const oneLine = (s: string) => s.replace(/\s+/g, " ").slice(0, 200);

export interface TokenWatchEvents {
  onReload?: () => void;
  onError?: (err: Error) => void;
}

/**
 * One route's token verifier. Built once per route (compileRoutes): a JWKS file is read then, and
 * watched from the first request on (watch(); close() stops it); a JWKS URL is fetched by jose on
 * first use, cached, and fetched again for an unknown `kid` (at most every 30 s) or after 10 min.
 */
export class AccessTokenVerifier {
  readonly spec: CheckedTokenSpec;
  /** The file or URL the keys come from. */
  readonly source: string;
  private readonly file: string | undefined;
  private keys: JWTVerifyGetKey;
  private loadedText: string | undefined;
  /** Content last refused, so a bad file is reported once, not on every event. */
  private refused: string | undefined;
  private queue: Promise<boolean> = Promise.resolve(false);
  private watcher: FileWatch | undefined;
  private timer: NodeJS.Timeout | undefined;
  private events: TokenWatchEvents = {};
  private watching = false;
  private closed = false;

  /** Throws E_USAGE (bad options), E_IO (unreadable file) or E_BAD_INPUT (not a JWKS of public keys). */
  constructor(spec: AccessTokenSpec, where = "route") {
    this.spec = checkTokenSpec(spec, where);
    const source = jwksSource(spec.jwks, where);
    if ("url" in source) {
      this.source = source.url.href;
      this.keys = createRemoteJWKSet(source.url, { timeoutDuration: 5000 });
      return;
    }
    this.file = source.file;
    this.source = source.file;
    let text: string;
    try {
      text = readFileSync(source.file, "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      throw new MtlsError("E_IO", `${where}: cannot read the JWKS file ${source.file}: ${code}`);
    }
    this.keys = this.localKeys(text, `${where}: JWKS file ${source.file}`);
    this.loadedText = text;
  }

  get bound(): boolean {
    return this.spec.bind === "certificate";
  }

  private localKeys(text: string, what: string): JWTVerifyGetKey {
    const jwks = parseJwks(text, what);
    try {
      return createLocalJWKSet(jwks);
    } catch (err) {
      throw new MtlsError("E_BAD_INPUT", `${what}: ${(err as Error).message}`);
    }
  }

  /** Starts watching the JWKS file (idempotent; nothing to do for a URL). Events: reload and refused content. */
  watch(events: TokenWatchEvents = {}): void {
    if (this.closed || this.watching || this.file === undefined) return;
    this.watching = true;
    this.events = events;
    this.watcher = watchFile(this.file, () => void this.reload(), {
      onError: (err) => this.events.onError?.(err),
    });
    const every = this.spec.reloadIntervalMs;
    if (every && every > 0) {
      this.timer = setInterval(() => void this.reload(), every);
      this.timer.unref();
    }
    // The file may have changed between the compile step and the first request.
    void this.reload();
  }

  /** Re-reads the JWKS file; true when new keys are in force. A bad file leaves the previous keys. */
  reload(): Promise<boolean> {
    if (this.file === undefined) return Promise.resolve(false);
    const file = this.file;
    this.queue = this.queue.then(
      () => this.reloadNow(file),
      () => this.reloadNow(file),
    );
    return this.queue;
  }

  private async reloadNow(file: string): Promise<boolean> {
    if (this.closed) return false;
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      return this.refuse(`read:${code}`, new MtlsError("E_IO", `cannot read the JWKS file ${file}: ${code}`));
    }
    if (text === this.loadedText) {
      this.refused = undefined;
      return false;
    }
    if (text === this.refused) return false;
    try {
      this.keys = this.localKeys(text, `JWKS file ${file}`);
    } catch (err) {
      return this.refuse(text, err as Error);
    }
    this.loadedText = text;
    this.refused = undefined;
    this.events.onReload?.();
    return true;
  }

  private refuse(key: string, err: Error): false {
    if (key !== this.refused) {
      this.refused = key;
      this.events.onError?.(err);
    }
    return false;
  }

  /**
   * The verdict on a request: `authorization` is every Authorization header value it carried,
   * `leaf` the DER of the verified client certificate on this connection (bound tokens), `now` the
   * gateway's clock.
   */
  async verify(
    authorization: readonly string[],
    leaf: Uint8Array | undefined,
    now: Date,
  ): Promise<TokenVerdict> {
    const bearer = bearerTokenOf(authorization);
    if (!("token" in bearer)) return { ok: false, reason: bearer.reason, detail: bearer.detail };
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(bearer.token, this.keys, {
        algorithms: [...this.spec.algorithms],
        ...(this.spec.issuer !== undefined ? { issuer: this.spec.issuer } : {}),
        ...(this.spec.audience !== undefined ? { audience: this.spec.audience } : {}),
        clockTolerance: this.spec.clockToleranceMs / 1000,
        currentDate: now,
        requiredClaims: ["exp"],
      }));
    } catch (err) {
      return this.refusalOf(err);
    }
    const claims = claimsOf(payload);
    if (this.spec.bind === "none") return { ok: true, claims };
    const cnf = payload.cnf as Record<string, unknown> | undefined;
    const want = typeof cnf === "object" && cnf !== null ? cnf["x5t#S256"] : undefined;
    if (typeof want !== "string") {
      return {
        ok: false,
        reason: "token_invalid",
        detail: 'the token is not certificate-bound (no cnf "x5t#S256" claim)',
        claims,
      };
    }
    if (!leaf) {
      return {
        ok: false,
        reason: "token_binding",
        detail: "the token is bound to a client certificate, and none was presented",
        claims,
      };
    }
    const have = certificateThumbprint(leaf);
    if (want !== have) {
      return {
        ok: false,
        reason: "token_binding",
        detail: `the token is bound to the certificate with x5t#S256 ${oneLine(want).slice(0, 64)}, this connection's is ${have}`,
        claims,
      };
    }
    return { ok: true, claims };
  }

  private refusalOf(err: unknown): TokenVerdict {
    const e = err as Error & { code?: string };
    if (err instanceof errors.JWTExpired) {
      const exp = typeof err.payload.exp === "number" ? new Date(err.payload.exp * 1000).toISOString() : "?";
      return {
        ok: false,
        reason: "token_invalid",
        detail: `the token expired at ${exp}`,
        claims: claimsOf(err.payload),
      };
    }
    if (err instanceof errors.JWTClaimValidationFailed) {
      return {
        ok: false,
        reason: "token_invalid",
        detail: `claim "${err.claim}": ${oneLine(err.reason)} (${oneLine(err.message)})`,
        claims: claimsOf(err.payload),
      };
    }
    if (err instanceof errors.JWSSignatureVerificationFailed) {
      return { ok: false, reason: "token_invalid", detail: "the token's signature does not verify" };
    }
    if (err instanceof errors.JWKSNoMatchingKey) {
      return { ok: false, reason: "token_invalid", detail: `no key of ${this.source} matches the token` };
    }
    const local = this.file !== undefined;
    if (
      !local &&
      (err instanceof errors.JWKSTimeout ||
        err instanceof errors.JWKSInvalid ||
        !(err instanceof errors.JOSEError) ||
        e.code === "ERR_JOSE_GENERIC")
    ) {
      const cause = (e.cause as Error | undefined)?.message;
      return {
        ok: false,
        reason: "jwks_unavailable",
        detail: `JWKS ${this.source}: ${oneLine(e.message)}${cause ? `: ${oneLine(cause)}` : ""}`,
      };
    }
    return { ok: false, reason: "token_invalid", detail: oneLine(e.message ?? String(err)) };
  }

  close(): void {
    this.closed = true;
    this.watcher?.close();
    this.watcher = undefined;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

/** Closes the token verifiers of `routes` that `keep` does not hold (all of them without `keep`). */
export function closeRouteTokens(
  routes: readonly { token?: AccessTokenVerifier }[],
  keep: readonly { token?: AccessTokenVerifier }[] = [],
): void {
  const kept = new Set(keep.map((r) => r.token));
  for (const r of routes) if (r.token && !kept.has(r.token)) r.token.close();
}
