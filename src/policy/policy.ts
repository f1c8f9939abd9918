import { METHODS } from "node:http";
import { MtlsError } from "../errors.js";
import { validateDnsName } from "../pki/names.js";
import type { AuthorizationContext, Decision, PeerIdentity, Policy, RuleSpec } from "./types.js";

/**
 * Authorization rules compiled once and evaluated per connection (or per request). Pure: no I/O,
 * no clock. The semantics are documented on RuleSpec (policy/types.ts): rules are OR'd, the
 * conditions of a rule AND'ed, the values of one condition OR'd, and an empty policy denies.
 */

type Kind = "cn" | "ou" | "dns" | "uri" | "email" | "fingerprint" | "spki";

const KINDS: readonly Kind[] = ["cn", "ou", "dns", "uri", "email", "fingerprint", "spki"];
const KNOWN_KEYS = new Set<string>(["name", "all", "methods", ...KINDS]);
const HTTP_METHODS = new Set<string>(METHODS);

/** One value of one condition, ready to test against an identity. */
interface ValueMatcher {
  /** As written in the rule, for reasons ("uri=spiffe://acme.test/user/*"). */
  text: string;
  test(identity: PeerIdentity): boolean;
}

interface Condition {
  kind: Kind;
  values: ValueMatcher[];
}

interface CompiledRule {
  name: string | undefined;
  all: boolean;
  conditions: Condition[];
  methods: Set<string> | undefined;
}

export function compilePolicy(rules: RuleSpec[]): Policy {
  if (!Array.isArray(rules)) throw usage("a policy is a list of rules");
  const compiled = rules.map((rule, i) => compileRule(rule, i));
  const specs: readonly RuleSpec[] = Object.freeze(rules.map(copyRule));
  return {
    rules: specs,
    authorize(identity: PeerIdentity, ctx?: AuthorizationContext): Decision {
      return authorize(compiled, identity, ctx);
    },
  };
}

function authorize(rules: CompiledRule[], identity: PeerIdentity, ctx?: AuthorizationContext): Decision {
  const method = ctx?.method?.toUpperCase();
  for (const rule of rules) {
    if (rule.methods && (method === undefined || !rule.methods.has(method))) continue;
    const matched: string[] = rule.all ? ["all"] : [];
    let ok = true;
    for (const cond of rule.conditions) {
      const hit = cond.values.find((v) => v.test(identity));
      if (!hit) {
        ok = false;
        break;
      }
      matched.push(`${cond.kind}=${hit.text}`);
    }
    if (!ok) continue;
    if (rule.methods && method) matched.push(`method=${method}`);
    const description = matched.join(" and ");
    return {
      allowed: true,
      rule: rule.name ?? description,
      reason: `allowed by ${rule.name ? `rule "${rule.name}" (${description})` : description}`,
    };
  }
  const who = describeIdentity(identity);
  const forMethod = method ? ` for ${method}` : "";
  return {
    allowed: false,
    reason:
      rules.length === 0
        ? `no rule allows ${who}${forMethod} (the policy has no rules: deny by default)`
        : `no rule allows ${who}${forMethod}`,
  };
}

/** A short description of who a peer is, for log lines: "CN=bob, URI spiffe://acme.test/user/bob". */
export function describeIdentity(identity: PeerIdentity): string {
  const parts: string[] = [];
  if (identity.commonName !== undefined) parts.push(`CN=${identity.commonName}`);
  else if (identity.subject) parts.push(identity.subject);
  const sans: [string, string[]][] = [
    ["URI", identity.uris],
    ["DNS", identity.dnsNames],
    ["email", identity.emails],
    ["IP", identity.ips],
  ];
  let shown = 0;
  let hidden = 0;
  for (const [label, values] of sans) {
    for (const v of values) {
      if (shown < 3) parts.push(`${label} ${v}`);
      else hidden++;
      shown++;
    }
  }
  if (hidden > 0) parts.push(`${hidden} more`);
  if (parts.length === 0) parts.push(`fingerprint ${identity.fingerprint.slice(0, 16)}…`);
  return parts.join(", ");
}

function compileRule(rule: RuleSpec, index: number): CompiledRule {
  const where = `rule ${index + 1}${rule?.name ? ` ("${rule.name}")` : ""}`;
  if (rule === null || typeof rule !== "object" || Array.isArray(rule)) {
    throw usage(`${where}: a rule is an object of conditions`);
  }
  for (const key of Object.keys(rule)) {
    if (!KNOWN_KEYS.has(key)) {
      throw usage(`${where}: unknown condition "${key}" (known: all, ${KINDS.join(", ")}, methods, name)`);
    }
  }
  if (rule.name !== undefined && (typeof rule.name !== "string" || rule.name.length === 0)) {
    throw usage(`${where}: name must be a non-empty string`);
  }
  if (rule.all !== undefined && typeof rule.all !== "boolean") {
    throw usage(`${where}: all must be true or false`);
  }
  const conditions: Condition[] = [];
  for (const kind of KINDS) {
    const values = rule[kind];
    if (values === undefined) continue;
    const list = stringList(values, `${where}: ${kind}`);
    conditions.push({ kind, values: list.map((v) => compileValue(kind, v, where)) });
  }
  let methods: Set<string> | undefined;
  if (rule.methods !== undefined) {
    const list = stringList(rule.methods, `${where}: methods`);
    methods = new Set(
      list.map((m) => {
        const upper = m.toUpperCase();
        if (!HTTP_METHODS.has(upper)) throw usage(`${where}: unknown HTTP method "${m}"`);
        return upper;
      }),
    );
  }
  const all = rule.all === true;
  if (!all && conditions.length === 0) {
    throw usage(
      methods
        ? `${where}: methods alone name no one; add a condition (or all: true for any certificate of the CA)`
        : `${where} is empty: it needs at least one condition (all, ${KINDS.join(", ")})`,
    );
  }
  return { name: rule.name, all, conditions, methods };
}

function stringList(values: unknown, where: string): string[] {
  if (!Array.isArray(values)) throw usage(`${where}: expected a list of strings`);
  if (values.length === 0) throw usage(`${where}: the list is empty (it would match nothing)`);
  for (const v of values) {
    if (typeof v !== "string" || v.trim().length === 0) {
      throw usage(`${where}: ${JSON.stringify(v)} is not a non-empty string`);
    }
  }
  return values as string[];
}

function compileValue(kind: Kind, raw: string, where: string): ValueMatcher {
  switch (kind) {
    case "cn":
      return { text: raw, test: (id) => id.commonName === raw };
    case "ou":
      return { text: raw, test: (id) => id.organizationalUnits.includes(raw) };
    case "email": {
      const want = raw.toLowerCase();
      if (!/^[^@\s]+@[^@\s]+$/.test(want)) throw usage(`${where}: "${raw}" is not an e-mail address`);
      return { text: raw, test: (id) => id.emails.some((e) => e.toLowerCase() === want) };
    }
    case "dns":
      return compileDns(raw, where);
    case "uri":
      return compileUri(raw, where);
    case "fingerprint": {
      const want = normalizeFingerprint(raw);
      if (!want) {
        throw usage(
          `${where}: fingerprint "${raw}" is not a SHA-256 fingerprint (64 hex digits, colons allowed)`,
        );
      }
      return { text: raw, test: (id) => id.fingerprint.toLowerCase() === want };
    }
    case "spki": {
      const want = normalizeSpkiPin(raw);
      if (!want) {
        throw usage(
          `${where}: spki pin "${raw}" is not a SHA-256 public-key pin (base64 of 32 bytes, or 64 hex digits)`,
        );
      }
      return { text: raw, test: (id) => id.spkiSha256 === want };
    }
  }
}

/** Lowercase hex without separators, or undefined when `raw` is not a SHA-256 fingerprint. */
export function normalizeFingerprint(raw: string): string | undefined {
  const hex = raw
    .trim()
    .replace(/^sha-?256[:=/]+/i, "")
    .replace(/[:\s]/g, "")
    .toLowerCase();
  return /^[0-9a-f]{64}$/.test(hex) ? hex : undefined;
}

/**
 * The standard base64 form (with padding) of a SHA-256 public-key pin given in base64, base64url,
 * or hex (colons allowed), optionally prefixed "sha256//" (curl) or "pin-sha256=" (HPKP).
 */
export function normalizeSpkiPin(raw: string): string | undefined {
  const text = raw
    .trim()
    .replace(/^(sha256\/\/|pin-sha256=|sha256:)/i, "")
    .replace(/^"(.*)"$/, "$1");
  const hex = text.replace(/:/g, "");
  if (/^[0-9a-fA-F]{64}$/.test(hex)) return Buffer.from(hex, "hex").toString("base64");
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(text)) {
    const bytes = Buffer.from(text.replace(/-/g, "+").replace(/_/g, "/"), "base64");
    if (bytes.length === 32) return bytes.toString("base64");
  }
  return undefined;
}

function compileDns(raw: string, where: string): ValueMatcher {
  const name = raw.trim().replace(/\.$/, "").toLowerCase();
  try {
    validateDnsName(name);
  } catch {
    throw usage(
      `${where}: "${raw}" is not a DNS name or pattern (a wildcard may only be a whole first label, as in *.acme.test)`,
    );
  }
  const peerNames = (id: PeerIdentity) => id.dnsNames.map((d) => d.replace(/\.$/, "").toLowerCase());
  if (!name.startsWith("*.")) {
    return { text: raw, test: (id) => peerNames(id).includes(name) };
  }
  const suffix = name.slice(1); // ".acme.test"
  return {
    text: raw,
    test: (id) =>
      peerNames(id).some((d) => {
        if (!d.endsWith(suffix)) return false;
        const label = d.slice(0, d.length - suffix.length);
        return label.length > 0 && !label.includes(".") && !label.includes("*");
      }),
  };
}

interface SplitUri {
  /** scheme://authority, lowercased. */
  origin: string;
  /** Path segments after the authority ("/user/alice" → ["user", "alice"]); [] for no path. */
  segments: string[];
}

const HIER_URI_RE = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/([^/?#]*)((?:\/[^?#]*)?)$/;

function splitUri(uri: string): SplitUri | undefined {
  const m = HIER_URI_RE.exec(uri);
  if (!m) return undefined;
  const path = m[3] ?? "";
  return {
    origin: `${(m[1] as string).toLowerCase()}://${(m[2] as string).toLowerCase()}`,
    segments: path === "" ? [] : path.slice(1).split("/"),
  };
}

/** A segment a wildcard may stand for: not empty, not a dot segment. */
const wildcardable = (seg: string) => seg !== "" && seg !== "." && seg !== "..";

function compileUri(raw: string, where: string): ValueMatcher {
  const pattern = raw.trim();
  if (!/^[a-zA-Z][a-zA-Z0-9+.-]*:\S+$/.test(pattern)) {
    throw usage(`${where}: "${raw}" is not an absolute URI (such as spiffe://acme.test/user/alice)`);
  }
  const split = splitUri(pattern);
  if (!pattern.includes("*")) {
    if (!split) return { text: raw, test: (id) => id.uris.includes(pattern) };
    return {
      text: raw,
      test: (id) =>
        id.uris.some((u) => {
          const peer = splitUri(u);
          return peer
            ? peer.origin === split.origin && sameSegments(peer.segments, split.segments)
            : u === pattern;
        }),
    };
  }
  if (!split) {
    throw usage(
      `${where}: "${raw}": wildcards are allowed only in the path of a scheme://authority/path URI, without query or fragment`,
    );
  }
  if (split.origin.includes("*")) {
    throw usage(`${where}: "${raw}": no wildcards in the scheme or authority (it is compared exactly)`);
  }
  const segs = split.segments;
  segs.forEach((seg, i) => {
    if (seg === "**" && i !== segs.length - 1) {
      throw usage(`${where}: "${raw}": "**" may only be the last path segment (as in …/user/**)`);
    }
    if (seg.includes("*") && seg !== "*" && seg !== "**") {
      throw usage(
        `${where}: "${raw}": "*" must be a whole path segment ("*" for one segment, a trailing "/**" for one or more)`,
      );
    }
  });
  const globstar = segs[segs.length - 1] === "**";
  const fixed = globstar ? segs.slice(0, -1) : segs;
  return {
    text: raw,
    test: (id) =>
      id.uris.some((u) => {
        const peer = splitUri(u);
        if (!peer || peer.origin !== split.origin) return false;
        const p = peer.segments;
        if (globstar ? p.length <= fixed.length : p.length !== fixed.length) return false;
        for (let i = 0; i < fixed.length; i++) {
          const want = fixed[i] as string;
          const got = p[i] as string;
          if (want === "*" ? !wildcardable(got) : want !== got) return false;
        }
        return p.slice(fixed.length).every(wildcardable);
      }),
  };
}

function sameSegments(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((s, i) => s === b[i]);
}

function copyRule(rule: RuleSpec): RuleSpec {
  const out: RuleSpec = {};
  for (const [key, value] of Object.entries(rule)) {
    (out as Record<string, unknown>)[key] = Array.isArray(value) ? Object.freeze([...value]) : value;
  }
  return Object.freeze(out);
}

function usage(message: string): MtlsError {
  return new MtlsError("E_USAGE", message);
}
