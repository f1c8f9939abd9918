import { z } from "zod";
import { parseDuration } from "./duration.js";

/**
 * The mtls.yaml format, as zod 4 schemas: structure, key names (unknown keys are refused), types
 * and durations. Rules between keys (a certificate given whole, server-only keys, ...) and the
 * defaults are applied by load.ts, which also turns every issue into one line with its YAML path.
 * docs/config.md documents every key.
 */

/**
 * Defaults of a tunnel, chosen after ghostunnel and stunnel (the `mtls tunnel` flags and mtls.yaml
 * share them):
 *   handshake timeout  10s   (ghostunnel's --connect-timeout covers the same ground with 10s)
 *   connect timeout    10s   (ghostunnel: 10s)
 *   idle timeout       12h   (stunnel's TIMEOUTidle; ghostunnel has none; "off" disables)
 *   max connections    0     (no limit, as ghostunnel's --max-concurrent-conns=0)
 *   max conn lifetime  off   (ghostunnel: 0 = none)
 *   shutdown timeout   30s   (drain time on SIGTERM before the rest are cut)
 */
export const TUNNEL_DEFAULTS = {
  handshakeTimeout: "10s",
  connectTimeout: "10s",
  idleTimeout: "12h",
  maxConnections: "0",
  maxConnLifetime: "off",
  shutdownTimeout: "30s",
  logLevel: "info",
} as const;

/** The levels of observe/logger.ts (config imports nothing above it). */
export const CONFIG_LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/** The conditions of an allow rule (policy/types.ts RuleSpec, tunnels: no HTTP methods). */
export const RULE_CONDITIONS = ["cn", "ou", "dns", "uri", "email", "fingerprint", "spki"] as const;

/** How a value from the file is named in an error line: "the number 5", "a list", "nothing". */
export function describeValue(v: unknown): string {
  if (v === undefined || v === null) return "nothing";
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "number") return `the number ${v}`;
  if (typeof v === "boolean") return String(v);
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a mapping";
  return typeof v;
}

const text = z.string().min(1, { error: "must not be empty" });

/** "alice" or ["alice", "bob"]: always a non-empty list after parsing. */
const stringList = z
  .unknown()
  .transform((v, ctx): string[] => {
    const list = typeof v === "string" ? [v] : v;
    if (!Array.isArray(list) || list.some((s) => typeof s !== "string")) {
      ctx.addIssue({
        code: "custom",
        message: `expected a string or a list of strings, got ${describeValue(
          Array.isArray(list) ? list.find((s) => typeof s !== "string") : v,
        )}`,
      });
      return z.NEVER;
    }
    if (list.length === 0) {
      ctx.addIssue({ code: "custom", message: "the list is empty" });
      return z.NEVER;
    }
    if (list.some((s) => s.trim() === "")) {
      ctx.addIssue({ code: "custom", message: "an empty string in the list" });
      return z.NEVER;
    }
    return list as string[];
  })
  .optional();

/** A duration string ("10s", "12h", "1h30m"); with `off`, also "off" or 0 for none (→ 0). */
function duration(off: boolean) {
  const examples = `examples: 10s, 12h, 1h30m${off ? '; "off" for none' : ""}`;
  return z
    .unknown()
    .transform((v, ctx): number => {
      if (off && (v === "off" || v === 0 || v === "0")) return 0;
      if (typeof v !== "string") {
        ctx.addIssue({
          code: "custom",
          message: `expected a duration (${examples}), got ${describeValue(v)}`,
        });
        return z.NEVER;
      }
      try {
        return parseDuration(v);
      } catch {
        ctx.addIssue({ code: "custom", message: `invalid duration "${v}" (${examples})` });
        return z.NEVER;
      }
    })
    .optional();
}

const count = z
  .unknown()
  .transform((v, ctx): number => {
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
      ctx.addIssue({
        code: "custom",
        message: `expected a whole number, 0 for no limit, got ${describeValue(v)}`,
      });
      return z.NEVER;
    }
    return v;
  })
  .optional();

/** Settings a tunnel takes from `defaults:` unless it sets them itself. */
export const settingsShape = {
  handshake_timeout: duration(false),
  connect_timeout: duration(false),
  idle_timeout: duration(true),
  max_connections: count,
  max_conn_lifetime: duration(true),
  shutdown_timeout: duration(false),
  reload_interval: duration(true),
  ftp_data_timeout: duration(false),
};

export const settingsSchema = z.strictObject(settingsShape);

/** One allow rule: every condition present must hold (AND); the values of one are alternatives (OR). */
export const ruleSchema = z.strictObject({
  name: text.optional(),
  all: z.boolean().optional(),
  cn: stringList,
  ou: stringList,
  dns: stringList,
  uri: stringList,
  email: stringList,
  fingerprint: stringList,
  spki: stringList,
});

const rules = z
  .array(ruleSchema)
  .min(1, { error: "the list is empty (deny by default: give at least one rule)" });

/** The certificate of a tunnel (or of one SNI route): files, or a name issued by the local CA. */
const tlsShape = {
  cert: text.optional(),
  key: text.optional(),
  ca: text.optional(),
  identity: text.optional(),
};

const protocol = z.enum(["tcp", "ftp"], {
  error: (iss) =>
    iss.input === undefined ? undefined : `must be tcp or ftp, not ${describeValue(iss.input)}`,
});

/**
 * TLS to a server tunnel's target: its trust anchors (default: the tunnel's ca), the name its
 * certificate must carry (default: the target host), and what the tunnel presents to it: a fixed
 * cert + key, or `identity: mint` (a short-lived certificate minted by the local CA per caller).
 */
export const targetTlsSchema = z.strictObject({
  ca: text.optional(),
  server_name: text.optional(),
  cert: text.optional(),
  key: text.optional(),
  identity: z
    .enum(["mint"], {
      error: (iss) => (iss.input === undefined ? undefined : `must be mint, not ${describeValue(iss.input)}`),
    })
    .optional(),
  mint_ttl: duration(false),
});

export const sniRouteSchema = z.strictObject({
  server_name: text,
  target: text,
  protocol: protocol.optional(),
  allow: rules.optional(),
  ...tlsShape,
  target_tls: targetTlsSchema.optional(),
});

export const tunnelSchema = z.strictObject({
  name: text,
  mode: z.enum(["server", "client"], {
    error: (iss) =>
      iss.input === undefined ? undefined : `must be server or client, not ${describeValue(iss.input)}`,
  }),
  listen: text,
  target: text.optional(),
  protocol: protocol.optional(),
  ...tlsShape,
  state: text.optional(),
  crl: stringList,
  ocsp: z.boolean().optional(),
  ocsp_recheck: duration(true),
  /** A CA's revocation feed (https://ca…), trusted through the CA file (docs/config.md). */
  revocation_feed: text.optional(),
  ...settingsShape,
  // server tunnels
  allow: rules.optional(),
  sni: z.array(sniRouteSchema).min(1, { error: "the list is empty" }).optional(),
  proxy_protocol: z.boolean().optional(),
  unsafe_target: z.boolean().optional(),
  target_tls: targetTlsSchema.optional(),
  // client tunnels
  server_name: text.optional(),
  verify_dns: stringList,
  verify_uri: stringList,
  proxy: text.optional(),
  unsafe_listen: z.boolean().optional(),
});

/** A gateway route's allow rule: a tunnel rule plus the HTTP methods it allows (docs/gateway.md). */
export const gatewayRuleSchema = ruleSchema.extend({ methods: stringList });

const gatewayRules = z
  .array(gatewayRuleSchema)
  .min(1, { error: "the list is empty (deny by default: give at least one rule)" });

const gatewayMode = z.enum(["require", "optional", "none"], {
  error: (iss) =>
    iss.input === undefined
      ? undefined
      : `must be require, optional or none, not ${describeValue(iss.input)}`,
});

/** TLS to https:// upstreams (docs/config.md): on a gateway, the default of its https routes. */
const upstreamTlsShape = {
  upstream_ca: text.optional(),
  upstream_cert: text.optional(),
  upstream_key: text.optional(),
  upstream_identity: text.optional(),
};

/** One route of a gateway: host (optional) and path prefix to an upstream, with a mode and rules. */
/** A gateway route's access token (docs/gateway.md, "Certificate-bound tokens (RFC 8705)"). */
export const gatewayTokenSchema = z.strictObject({
  bind: z.enum(["certificate", "none"], {
    error: (iss) =>
      iss.input === undefined ? undefined : `must be certificate or none, not ${describeValue(iss.input)}`,
  }),
  jwks: text,
  issuer: text.optional(),
  audience: text.optional(),
  algorithms: stringList,
  clock_tolerance: duration(true),
  reload_interval: duration(true),
});

export const gatewayRouteSchema = z.strictObject({
  host: text.optional(),
  path: text,
  upstream: text,
  mode: gatewayMode.optional(),
  allow: gatewayRules.optional(),
  token: gatewayTokenSchema.optional(),
  ...upstreamTlsShape,
  upstream_servername: text.optional(),
});

/** `gateways:` entries, run by `mtls up` next to the tunnels (docs/gateway.md, docs/config.md). */
export const gatewaySchema = z
  .strictObject({
    name: text,
    listen: text,
    ...tlsShape,
    state: text.optional(),
    crl: stringList,
    ocsp: z.boolean().optional(),
    ocsp_recheck: duration(true),
    /** A CA's revocation feed (https://ca…), trusted through the CA file (docs/config.md). */
    revocation_feed: text.optional(),
    mode: gatewayMode.optional(),
    allow: gatewayRules.optional(),
    /** May be empty (or absent) on a gateway that only relays (relay:). */
    routes: z.array(gatewayRouteSchema).default([]),
    identity_headers: z
      .enum(["rfc9440", "xfcc", "both"], {
        error: (iss) =>
          iss.input === undefined
            ? undefined
            : `must be rfc9440, xfcc or both, not ${describeValue(iss.input)}`,
      })
      .optional(),
    enroll_url: text.optional(),
    max_body: z.union([text, z.number().int().nonnegative()]).optional(),
    request_timeout: duration(false),
    upstream_timeout: duration(false),
    keepalive_timeout: duration(false),
    handshake_timeout: duration(false),
    max_connections: count,
    shutdown_timeout: duration(false),
    reload_interval: duration(true),
    http2: z.boolean().optional(),
    unsafe_upstream: z.boolean().optional(),
    ...upstreamTlsShape,
    /** WebSocket relays for mtls/web (docs/gateway.md, "Relay for mtls/web"). */
    relay: z
      .strictObject({
        targets: z
          .array(z.strictObject({ name: text, target: text }))
          .min(1, { error: "the list is empty: give at least one relay target" }),
        origins: stringList,
        max_sessions: count,
        max_per_client: count,
        max_message: z.union([text, z.number().int().positive()]).optional(),
        connect_timeout: duration(false),
        idle_timeout: duration(false),
      })
      .optional(),
  })
  .refine((g) => g.routes.length > 0 || g.relay !== undefined, {
    error: "give at least one route (routes:) or relay (relay:)",
    path: ["routes"],
  });

/** Signals a reload action may send (`reload: { signal: HUP, pid_file: ... }`). */
export const RELOAD_SIGNALS = ["HUP", "USR1", "USR2", "INT", "TERM"] as const;

/**
 * What the agent does after it wrote a renewed certificate: signal the process in a pid file, or
 * run a command (a list: argv, no shell; a string: run by /bin/sh -c exactly as written). Absent:
 * nothing (mtls tunnels and gateways watch their files).
 */
export const reloadSchema = z.strictObject({
  signal: z
    .enum(RELOAD_SIGNALS, {
      error: (iss) =>
        iss.input === undefined
          ? undefined
          : `must be one of ${RELOAD_SIGNALS.join(", ")}, not ${describeValue(iss.input)}`,
    })
    .optional(),
  pid_file: text.optional(),
  command: z
    .unknown()
    .transform((v, ctx): string | string[] => {
      if (typeof v === "string" && v.trim() !== "") return v;
      if (Array.isArray(v) && v.length > 0 && v.every((a) => typeof a === "string") && v[0] !== "") {
        return v as string[];
      }
      ctx.addIssue({
        code: "custom",
        message: `expected a command: a list (argv, run without a shell) or a string (run by sh -c), got ${describeValue(v)}`,
      });
      return z.NEVER;
    })
    .optional(),
  timeout: duration(false),
});

/** One certificate the agent keeps fresh; ca_url and ca_cert default to the agent section's. */
export const agentCertificateSchema = z.strictObject({
  name: text,
  cert: text,
  key: text,
  ca_url: text.optional(),
  ca_cert: text.optional(),
  rekey: z.boolean().optional(),
  reload: reloadSchema.optional(),
});

/** `mtls agent -c mtls.yaml`: the certificates it renews, and its status endpoint. */
export const agentSchema = z.strictObject({
  status: text.optional(),
  ca_url: text.optional(),
  ca_cert: text.optional(),
  certificates: z
    .array(agentCertificateSchema)
    .min(1, { error: "the list is empty: give at least one certificate" }),
});

export const configSchema = z.strictObject({
  log: z
    .strictObject({
      level: z
        .enum(CONFIG_LOG_LEVELS, {
          error: (iss) =>
            iss.input === undefined
              ? undefined
              : `must be one of ${CONFIG_LOG_LEVELS.join(", ")}, not ${describeValue(iss.input)}`,
        })
        .optional(),
    })
    .optional(),
  status: text.optional(),
  state: text.optional(),
  defaults: settingsSchema.optional(),
  // Required by `mtls up` (load.ts checks it), absent from a file that only configures the agent.
  tunnels: z.array(tunnelSchema).min(1, { error: "the list is empty: give at least one tunnel" }).optional(),
  agent: agentSchema.optional(),
  gateways: z
    .array(gatewaySchema)
    .min(1, { error: "the list is empty: give at least one gateway" })
    .optional(),
});

export type ConfigFile = z.output<typeof configSchema>;
export type TunnelEntry = z.output<typeof tunnelSchema>;
export type GatewayEntry = z.output<typeof gatewaySchema>;
export type SniRouteEntry = z.output<typeof sniRouteSchema>;
export type RuleEntry = z.output<typeof ruleSchema>;
export type SettingsEntry = z.output<typeof settingsSchema>;
export type TargetTlsEntry = z.output<typeof targetTlsSchema>;
export type AgentEntry = z.output<typeof agentSchema>;
export type AgentCertificateEntry = z.output<typeof agentCertificateSchema>;

/** Keys only a server tunnel takes, and keys only a client tunnel takes. */
export const SERVER_ONLY_KEYS = ["allow", "sni", "proxy_protocol", "unsafe_target", "target_tls"] as const;
export const CLIENT_ONLY_KEYS = [
  "server_name",
  "verify_dns",
  "verify_uri",
  "proxy",
  "unsafe_listen",
] as const;

/** "tunnels[0].allow[1]" from ["tunnels", 0, "allow", 1]. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const p of path) {
    if (typeof p === "number") out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out;
}

const EXPECTED: Record<string, string> = {
  string: "a string",
  boolean: "true or false",
  array: "a list",
  object: "a mapping (key: value)",
  number: "a number",
};

/**
 * One zod issue as "path: what is wrong", never zod's own wording: a missing key is named on its
 * parent ("tunnels[0]: missing key "listen""), an unknown one on its mapping.
 */
export function formatIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path;
  const at = (p: readonly PropertyKey[], message: string) =>
    p.length ? `${formatPath(p)}: ${message}` : message;
  const missing = !("input" in issue) || issue.input === undefined;
  switch (issue.code) {
    case "unrecognized_keys": {
      const keys = issue.keys.map((k) => `"${k}"`).join(", ");
      return at(path, `unknown key${issue.keys.length > 1 ? "s" : ""} ${keys}`);
    }
    case "invalid_type":
    case "invalid_value": {
      if (missing && path.length > 0) {
        return at(path.slice(0, -1), `missing key "${String(path[path.length - 1])}"`);
      }
      if (issue.code === "invalid_type") {
        const expected = EXPECTED[issue.expected] ?? issue.expected;
        return at(path, `expected ${expected}, got ${describeValue(issue.input)}`);
      }
      return at(path, issue.message);
    }
    default:
      return at(path, issue.message);
  }
}
