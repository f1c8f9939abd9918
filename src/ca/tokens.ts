import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { MtlsError } from "../errors.js";
import { type CsrInfo, parseCsr } from "../pki/csr.js";
import { buildName, formatSan, makeSan, parseSan, type San } from "../pki/names.js";
import type { EnrollmentTokenRecord } from "../store/index.js";
import type { CertificateAuthority, Issued } from "./authority.js";
import { DEFAULT_TTL_MS, type LeafProfile, parseProfile, validateLeafName } from "./profiles.js";

/**
 * One-time enrollment tokens: an admin grants a name, a profile, the SANs allowed and a maximum
 * lifetime; whoever holds the token may exchange it, once and before it expires, for a certificate
 * on a key of their own (a CSR). Format `mtls_<id>.<secret>`: 16 hex characters of id (the store
 * key and audit subject) and 32 random bytes of secret, base64url. Only SHA-256 of the secret is
 * stored, and it is compared in constant time.
 */

/** How long a token stays usable unless told otherwise. */
export const TOKEN_DEFAULT_VALID_FOR_MS = 15 * 60_000;
/** The longest a token may stay usable (docs/api.md). */
export const TOKEN_MAX_VALID_FOR_MS = 7 * 86_400_000;

export interface TokenGrant {
  /** The certificate's name and CN; the CSR's subject is ignored. */
  name: string;
  profile: LeafProfile;
  /** The SANs the certificate may carry; a CSR may ask for a subset (none asked: all of them). */
  sans: San[];
  /** Certificate lifetime (the most an enrollment may ask for); default per profile. */
  ttlMs?: number;
  organizationalUnit?: string[];
}

export interface CreateTokenOptions {
  /** How long the token stays usable; default 15 minutes, at most 7 days. */
  validForMs?: number;
  /** Who asked, for the audit log. */
  actor: string;
}

export interface CreatedToken {
  /** The whole token, secret included: shown once, never stored. */
  token: string;
  id: string;
  expiresAt: Date;
}

export interface EnrollRequest {
  token: string;
  /** PKCS#10 request, PEM or DER; its signature must verify. */
  csr: Uint8Array | string;
  /** Audit actor; default `api:token:<id>`. */
  actor?: string;
  /** When given, must be the token's name (E_TOKEN_SCOPE otherwise). */
  name?: string;
  /** When given, must be the token's profile (E_TOKEN_SCOPE otherwise). */
  profile?: LeafProfile;
  /** A shorter lifetime than the token grants; longer is E_TOKEN_SCOPE. */
  ttlMs?: number;
}

export type TokenStatus = "unused" | "used" | "expired";

const TOKEN_RE = /^mtls_([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$/;

/** The id of a well-formed token (e.g. for rate limiting or logs), else undefined. Never the secret. */
export function tokenIdOf(token: string): string | undefined {
  return TOKEN_RE.exec(token)?.[1];
}

/** Whether a token can still be used at `now`. */
export function tokenStatus(rec: EnrollmentTokenRecord, now: Date): TokenStatus {
  if (rec.usedAt) return "used";
  return now >= rec.expiresAt ? "expired" : "unused";
}

const hashSecret = (secret: Uint8Array): string => createHash("sha256").update(secret).digest("hex");

/**
 * A SAN in a form that compares equal however it was written: DNS names and e-mail domains
 * lowercased (makeSan does that), IP addresses in their canonical text (IPv6 compressed).
 */
function sanKey(san: San): string {
  const valid = makeSan(san.type, san.value);
  if (valid.type === "ip") {
    const host = new URL(valid.value.includes(":") ? `http://[${valid.value}]/` : `http://${valid.value}/`)
      .hostname;
    return `ip:${host.replace(/^\[|\]$/g, "")}`;
  }
  return formatSan(valid);
}

/** Creates a token for `grant`, valid for `opts.validForMs`; records it and a `token.create` event. */
export async function createToken(
  ca: CertificateAuthority,
  grant: TokenGrant,
  opts: CreateTokenOptions,
): Promise<CreatedToken> {
  const now = ca.clock();
  const name = validateLeafName(grant.name);
  const profile = parseProfile(grant.profile);
  const sans: San[] = [];
  const seen = new Set<string>();
  for (const s of grant.sans) {
    const key = sanKey(s);
    if (seen.has(key)) continue;
    seen.add(key);
    sans.push(makeSan(s.type, s.value));
  }
  if (profile === "server" && !sans.some((s) => s.type === "dns" || s.type === "ip")) {
    throw new MtlsError("E_PROFILE", "a server token needs at least one DNS name or IP address");
  }
  if (sans.filter((s) => s.type === "uri" && s.value.startsWith("spiffe:")).length > 1) {
    throw new MtlsError("E_BAD_SAN", "a SPIFFE identity carries exactly one spiffe:// URI");
  }
  const ou = grant.organizationalUnit ?? [];
  buildName({ organizationalUnit: ou }); // validates each unit as issue() would
  const ttlMs = grant.ttlMs;
  if (ttlMs !== undefined) {
    if (!Number.isSafeInteger(ttlMs) || ttlMs <= 0) {
      throw new MtlsError("E_TTL", `invalid certificate lifetime ${ttlMs} ms: must be a positive integer`);
    }
    if (now.getTime() + ttlMs > ca.intermediate.notAfter.getTime()) {
      throw new MtlsError(
        "E_TTL",
        `a lifetime of ${Math.ceil(ttlMs / 86_400_000)}d would outlive the intermediate CA (valid until ${ca.intermediate.notAfter.toISOString()})`,
      );
    }
  }
  const validForMs = opts.validForMs ?? TOKEN_DEFAULT_VALID_FOR_MS;
  if (!Number.isFinite(validForMs) || validForMs <= 0 || validForMs > TOKEN_MAX_VALID_FOR_MS) {
    throw new MtlsError("E_TTL", `a token may be valid for up to 7 days, not ${validForMs} ms`);
  }
  const id = randomBytes(8).toString("hex");
  const secret = randomBytes(32);
  const expiresAt = new Date(now.getTime() + validForMs);
  const rec: EnrollmentTokenRecord = {
    id,
    secretHash: hashSecret(secret),
    name,
    profile,
    sans: sans.map(formatSan),
    ttlMs: ttlMs ?? null,
    organizationalUnit: ou,
    createdAt: now,
    createdBy: opts.actor,
    expiresAt,
    usedAt: null,
    usedBySerial: null,
  };
  await ca.store.transaction(async (tx) => {
    await tx.insertToken(rec);
    await tx.appendAudit({
      at: now,
      actor: opts.actor,
      action: "token.create",
      subject: id,
      details: {
        name,
        profile,
        sans: rec.sans,
        ttlMs: rec.ttlMs,
        organizationalUnit: ou,
        expiresAt: expiresAt.toISOString(),
      },
    });
  });
  return { token: `mtls_${id}.${secret.toString("base64url")}`, id, expiresAt };
}

/**
 * Exchanges a token and a CSR for a certificate. The token is consumed in the same transaction that
 * records the certificate (issue()'s `withinTransaction`): a crash or a racing second use leaves
 * either an unused token and no certificate, or a used token and its certificate.
 */
export async function enroll(ca: CertificateAuthority, req: EnrollRequest): Promise<Issued> {
  const now = ca.clock();
  const rec = await checkToken(ca, req.token, now);
  const profile = rec.profile;
  const grantedTtl = rec.ttlMs ?? DEFAULT_TTL_MS[profile];
  if (req.name !== undefined && req.name !== rec.name) {
    throw new MtlsError("E_TOKEN_SCOPE", `the token is for the name "${rec.name}", not "${req.name}"`);
  }
  if (req.profile !== undefined && req.profile !== profile) {
    throw new MtlsError("E_TOKEN_SCOPE", `the token is for a ${profile} certificate, not ${req.profile}`);
  }
  if (req.ttlMs !== undefined && !(Number.isFinite(req.ttlMs) && req.ttlMs > 0)) {
    throw new MtlsError("E_TTL", `invalid lifetime ${req.ttlMs} ms: must be positive`);
  }
  if (req.ttlMs !== undefined && req.ttlMs > grantedTtl) {
    throw new MtlsError(
      "E_TOKEN_SCOPE",
      `the token grants a lifetime of at most ${Math.floor(grantedTtl / 1000)}s, not ${Math.floor(req.ttlMs / 1000)}s`,
    );
  }
  const csr = await csrOrBadCsr(req.csr);
  const granted = new Map(rec.sans.map((text) => [sanKey(parseSan(text)), parseSan(text)]));
  let sans: San[];
  if (csr.sans.length === 0) {
    sans = [...granted.values()];
  } else {
    const extra = csr.sans.filter((s) => !granted.has(sanKey(s)));
    if (extra.length) {
      throw new MtlsError(
        "E_TOKEN_SCOPE",
        `the CSR asks for subject alternative names the token does not grant: ${extra.map(formatSan).join(", ")}`,
      );
    }
    const keys = new Set(csr.sans.map(sanKey));
    sans = [...granted].filter(([key]) => keys.has(key)).map(([, san]) => san);
  }
  const actor = req.actor ?? `api:token:${rec.id}`;
  return ca.issue({
    profile,
    name: rec.name,
    sans,
    spki: csr.spki,
    // Never past the intermediate: a token made long ago may grant more than it has left.
    ttlMs: Math.min(req.ttlMs ?? grantedTtl, ca.intermediate.notAfter.getTime() - now.getTime()),
    ...(rec.organizationalUnit.length ? { organizationalUnit: rec.organizationalUnit } : {}),
    actor,
    withinTransaction: async (tx, cert) => {
      if (!(await tx.markTokenUsed(rec.id, now, cert.serial))) {
        throw new MtlsError("E_TOKEN_USED", `enrollment token ${rec.id} has already been used`);
      }
      await tx.appendAudit({
        at: now,
        actor,
        action: "token.use",
        subject: rec.id,
        details: { serial: cert.serial, name: rec.name, profile, sans: cert.sans },
      });
    },
  });
}

/** The token's record when the token is well-formed, known, matches, unused and unexpired. */
async function checkToken(
  ca: CertificateAuthority,
  token: string,
  now: Date,
): Promise<EnrollmentTokenRecord> {
  const m = TOKEN_RE.exec(typeof token === "string" ? token.trim() : "");
  const invalid = () =>
    new MtlsError("E_TOKEN_INVALID", "the enrollment token is unknown, malformed or does not match");
  if (!m) throw invalid();
  const [, id, secretText] = m as unknown as [string, string, string];
  const secret = Buffer.from(secretText, "base64url");
  // 43 base64url characters carry 258 bits: only one spelling of each 32-byte secret is accepted.
  if (secret.length !== 32 || secret.toString("base64url") !== secretText) throw invalid();
  const rec = await ca.store.getToken(id);
  const presented = Buffer.from(hashSecret(secret), "hex");
  const stored = Buffer.from(rec?.secretHash ?? "", "hex");
  const matches = stored.length === presented.length && timingSafeEqual(stored, presented);
  if (!rec || !matches) throw invalid();
  if (rec.usedAt) throw new MtlsError("E_TOKEN_USED", `enrollment token ${rec.id} has already been used`);
  if (now >= rec.expiresAt) {
    throw new MtlsError(
      "E_TOKEN_EXPIRED",
      `enrollment token ${rec.id} expired at ${rec.expiresAt.toISOString()}`,
    );
  }
  return rec;
}

/** parseCsr, with input that is not a CSR at all reported as E_BAD_CSR too (key policy stays E_WEAK_KEY). */
export async function csrOrBadCsr(data: Uint8Array | string): Promise<CsrInfo> {
  try {
    return await parseCsr(data);
  } catch (err) {
    if (err instanceof MtlsError && err.code === "E_BAD_INPUT") {
      throw new MtlsError("E_BAD_CSR", `not a valid certificate signing request: ${err.message}`, {
        cause: err,
      });
    }
    if (err instanceof MtlsError) throw err;
    throw new MtlsError("E_BAD_CSR", "malformed certificate signing request", { cause: err });
  }
}
