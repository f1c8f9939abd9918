import { Readable } from "node:stream";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Issued } from "../ca/index.js";
import { type LeafProfile, parseProfile } from "../ca/profiles.js";
import { parseDuration } from "../config/duration.js";
import { MtlsError } from "../errors.js";
import { parseReason } from "../pki/crl.js";
import { parseSan } from "../pki/names.js";
import type {
  CertificateFilter,
  CertificateKind,
  CertificateRecord,
  CertificateStatus,
} from "../store/index.js";
import { callerOf, pathOf, rateLimit } from "./app.js";
import {
  AUDIT_CONTENT_TYPE,
  type AuditFormat,
  auditEvents,
  csvHeader,
  formatAuditEvent,
  parseAuditFormat,
} from "./audit-export.js";
import type { Caller } from "./auth.js";
import type { ServerContext } from "./context.js";

type Body = Record<string, unknown>;
type Authenticated = Exclude<Caller, { role: "anonymous" }>;

const JSON_TYPE = "application/json; charset=utf-8";
const PEM_TYPE = "application/x-pem-file";
const LEAF_KINDS: CertificateKind[] = ["server", "client", "peer", "ocsp"];
const ALL_KINDS: CertificateKind[] = [...LEAF_KINDS, "ca-root", "ca-intermediate"];
const STATUSES = ["valid", "revoked", "pending", "aborted", "expired"] as const;

const bad = (message: string) => new MtlsError("E_BAD_INPUT", message);

/** The JSON object a POST carries; anything else (wrong content type, an array, a string) is 400. */
function jsonBody(req: FastifyRequest): Body {
  const body = req.body;
  if (Buffer.isBuffer(body)) throw bad("send the request as JSON with Content-Type: application/json");
  if (body === undefined || body === null) return {};
  if (typeof body !== "object" || Array.isArray(body)) throw bad("the request body must be a JSON object");
  return body as Body;
}

function optString(body: Body, key: string): string | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw bad(`"${key}" must be a string`);
  return v;
}

function reqString(body: Body, key: string): string {
  const v = optString(body, key);
  if (v === undefined || v === "") throw bad(`"${key}" is required`);
  return v;
}

function optStringArray(body: Body, key: string): string[] | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string") || v.length > 100)
    throw bad(`"${key}" must be an array of at most 100 strings`);
  return v as string[];
}

function optDuration(body: Body, key: string): number | undefined {
  const v = optString(body, key);
  return v === undefined ? undefined : parseDuration(v, `"${key}"`);
}

/** A hex serial as clients write it (any case, colons allowed), in the store's form. */
function normalizeSerial(text: string): string {
  const hex = text.replace(/:/g, "").toLowerCase();
  if (!/^[0-9a-f]{1,40}$/.test(hex)) throw bad(`invalid serial "${text.slice(0, 64)}" (hex expected)`);
  return hex;
}

const iso = (d: Date | null) => (d ? d.toISOString() : null);

/** The inventory row as JSON (docs/api.md "Record"): ISO dates, no file paths. */
export function recordJson(r: CertificateRecord, now: Date): Record<string, unknown> {
  return {
    serial: r.serial,
    name: r.name,
    profile: r.profile,
    subject: r.subject,
    sans: r.sans,
    keyType: r.keyType,
    notBefore: iso(r.notBefore),
    notAfter: iso(r.notAfter),
    status: r.status,
    expired: r.notAfter <= now,
    revokedAt: iso(r.revokedAt),
    revocationReason: r.revocationReason,
    fingerprint: r.fingerprint,
    issuerSerial: r.issuerSerial,
    createdAt: iso(r.createdAt),
    pem: r.pem,
  };
}

/** docs/api.md "Issued". */
export function issuedJson(issued: Issued, rootPem: string): Record<string, unknown> {
  const r = issued.record;
  return {
    serial: r.serial,
    name: r.name,
    profile: r.profile,
    notBefore: r.notBefore.toISOString(),
    notAfter: r.notAfter.toISOString(),
    certificate: r.pem,
    chain: issued.chainPem,
    ca: rootPem,
  };
}

/** Appends an audit event; a failure to write it is logged, never turned into another answer. */
async function audit(
  ctx: ServerContext,
  req: FastifyRequest,
  action: string,
  actor: string,
  subject: string | null,
  details: Record<string, unknown>,
): Promise<void> {
  try {
    await ctx.ca.store.appendAudit({ at: ctx.clock(), actor, action, subject, details });
  } catch (err) {
    ctx.logger.error({ reqId: req.id, action, err: (err as Error).message }, "audit event not written");
  }
}

/** Refuses and audits: 401 for no valid certificate, 403 for a caller without the right. */
async function deny(
  ctx: ServerContext,
  req: FastifyRequest,
  caller: Caller,
  code: "E_NOT_AUTHENTICATED" | "E_NOT_AUTHORIZED",
  message: string,
): Promise<never> {
  await audit(ctx, req, "api.denied", caller.actor, caller.role === "anonymous" ? null : caller.serial, {
    method: req.method,
    path: pathOf(req),
    ip: req.ip,
    code,
    reason: caller.role === "anonymous" ? caller.why : message,
  });
  throw new MtlsError(code, message);
}

/**
 * The caller if it holds a valid certificate of this CA (and is an admin, when `admin` is asked
 * for). Requests without one count against the client's anonymous rate limit before the 401.
 */
async function requireCaller(
  req: FastifyRequest,
  ctx: ServerContext,
  admin: boolean,
): Promise<Authenticated> {
  const caller = await callerOf(req, ctx);
  if (caller.role === "anonymous") {
    rateLimit(req, ctx, "anonymous");
    return deny(
      ctx,
      req,
      caller,
      "E_NOT_AUTHENTICATED",
      `this endpoint needs a valid client certificate of this CA (${caller.why})`,
    );
  }
  if (admin && caller.role !== "admin")
    return deny(
      ctx,
      req,
      caller,
      "E_NOT_AUTHORIZED",
      `"${caller.record.name}" is not an administrator of this CA`,
    );
  return caller;
}

async function findBySerial(ctx: ServerContext, serial: string): Promise<CertificateRecord | undefined> {
  return (
    (await ctx.ca.store.getCertificate(serial)) ??
    (serial.length % 2 === 1 ? await ctx.ca.store.getCertificate(`0${serial}`) : undefined)
  );
}

function listFilter(query: Record<string, string | undefined>, now: Date) {
  const filter: CertificateFilter = {};
  const statuses = (query.status ?? "").split(",").filter(Boolean);
  for (const s of statuses)
    if (!(STATUSES as readonly string[]).includes(s))
      throw bad(`unknown status "${s}" (one of ${STATUSES.join(", ")})`);
  const stored = new Set<CertificateStatus>(
    statuses.map((s) => (s === "expired" ? "valid" : s)) as CertificateStatus[],
  );
  if (stored.size) filter.status = [...stored];
  const kinds = (query.profile ?? "").split(",").filter(Boolean);
  for (const k of kinds)
    if (!(ALL_KINDS as string[]).includes(k))
      throw bad(`unknown profile "${k}" (one of ${ALL_KINDS.join(", ")})`);
  filter.profile = kinds.length ? (kinds as CertificateKind[]) : LEAF_KINDS;
  if (query.name) filter.name = query.name;
  let expiringWithin: number | undefined;
  if (query.expiringWithin) {
    expiringWithin = parseDuration(query.expiringWithin, "expiringWithin");
    filter.expiringBefore = new Date(now.getTime() + expiringWithin);
  }
  const int = (key: string, dflt: number, max: number) => {
    const text = query[key];
    if (text === undefined || text === "") return dflt;
    const n = Number(text);
    if (!Number.isInteger(n) || n < 0 || n > max) throw bad(`"${key}" must be an integer from 0 to ${max}`);
    return n;
  };
  const limit = int("limit", 100, 1000);
  const offset = int("offset", 0, Number.MAX_SAFE_INTEGER);
  // "valid" means usable now; "expired" means valid in the store but past notAfter.
  const keep = (r: CertificateRecord) => {
    const expired = r.notAfter <= now;
    if (expiringWithin !== undefined && expired) return false;
    if (!statuses.length) return true;
    if (r.status === "valid") return expired ? statuses.includes("expired") : statuses.includes("valid");
    return statuses.includes(r.status);
  };
  return { filter, keep, limit, offset };
}

/** The /v1 endpoints of docs/api.md; every answer is JSON (or PEM / audit export) and never cached. */
export function registerV1Routes(app: FastifyInstance, ctx: ServerContext): void {
  app.addHook("onSend", async (req, reply, payload) => {
    if (req.url.startsWith("/v1/")) reply.header("cache-control", "no-store");
    return payload;
  });

  app.post("/v1/tokens", async (req, reply) => {
    const caller = await requireCaller(req, ctx, true);
    const body = jsonBody(req);
    const profile: LeafProfile = parseProfile(reqString(body, "profile"));
    const sans = (optStringArray(body, "sans") ?? []).map(parseSan);
    const ou = optStringArray(body, "ou");
    const ttlMs = optDuration(body, "ttl");
    const validForMs = optDuration(body, "validFor");
    const created = await ctx.services.createToken(
      {
        name: reqString(body, "name"),
        profile,
        sans,
        ...(ttlMs !== undefined ? { ttlMs } : {}),
        ...(ou ? { organizationalUnit: ou } : {}),
      },
      { ...(validForMs !== undefined ? { validForMs } : {}), actor: caller.actor },
    );
    return reply
      .code(201)
      .type(JSON_TYPE)
      .send({ token: created.token, id: created.id, expiresAt: created.expiresAt.toISOString() });
  });

  app.post("/v1/enroll", { onRequest: async (req) => rateLimit(req, ctx, "enroll") }, async (req, reply) => {
    const body = jsonBody(req);
    const token = reqString(body, "token");
    const id = /^mtls_([0-9a-f]{16})\./.exec(token)?.[1];
    req.mtlsActor = id ? `api:token:${id}` : "anonymous";
    const csr = reqString(body, "csr");
    const name = optString(body, "name");
    const profileText = optString(body, "profile");
    const ttlMs = optDuration(body, "ttl");
    const issued = await ctx.services.enroll({
      token,
      csr,
      ...(name !== undefined ? { name } : {}),
      ...(profileText !== undefined ? { profile: parseProfile(profileText) } : {}),
      ...(ttlMs !== undefined ? { ttlMs } : {}),
    });
    ctx.metrics?.issued.inc({ via: "enroll" });
    return reply.code(201).type(JSON_TYPE).send(issuedJson(issued, ctx.ca.rootPem));
  });

  app.post("/v1/renew", async (req, reply) => {
    const caller = await requireCaller(req, ctx, false);
    const body = jsonBody(req);
    const csr = optString(body, "csr");
    const issued = await ctx.services.renew({
      serial: caller.serial,
      ...(csr ? { csr } : {}),
      actor: caller.actor,
    });
    ctx.metrics?.issued.inc({ via: "renew" });
    return reply.code(201).type(JSON_TYPE).send(issuedJson(issued, ctx.ca.rootPem));
  });

  app.post("/v1/revoke", async (req, reply) => {
    const caller = await requireCaller(req, ctx, false);
    const body = jsonBody(req);
    const serialText = optString(body, "serial");
    const serial = serialText ? normalizeSerial(serialText) : caller.serial;
    const reason = parseReason(optString(body, "reason") ?? "unspecified");
    const rec =
      caller.role === "admin" || serial === caller.serial ? await findBySerial(ctx, serial) : undefined;
    if (caller.role !== "admin" && rec?.serial !== caller.serial) {
      return deny(
        ctx,
        req,
        caller,
        "E_NOT_AUTHORIZED",
        "a certificate holder may revoke only its own certificate",
      );
    }
    if (!rec) throw new MtlsError("E_NOT_FOUND", `no certificate with serial ${serial}`);
    if (rec.profile === "ca-root" || rec.profile === "ca-intermediate") {
      return deny(
        ctx,
        req,
        caller,
        "E_NOT_AUTHORIZED",
        "the CA's own certificates are revoked from the command line, not through the API",
      );
    }
    let result = rec;
    if (rec.status !== "revoked") {
      const [done] = await ctx.ca.revoke([rec.serial], reason, caller.actor);
      result = done ?? (await findBySerial(ctx, rec.serial)) ?? rec;
    }
    return reply.type(JSON_TYPE).send({
      serial: result.serial,
      revokedAt: iso(result.revokedAt),
      reason: result.revocationReason ?? reason,
    });
  });

  app.get("/v1/certificates", async (req, reply) => {
    const caller = await requireCaller(req, ctx, true);
    const now = ctx.clock();
    const query = req.query as Record<string, string | undefined>;
    const { filter, keep, limit, offset } = listFilter(query, now);
    const rows = (await ctx.ca.store.findCertificates(filter))
      .filter(keep)
      .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || a.serial.localeCompare(b.serial));
    await audit(ctx, req, "api.list", caller.actor, null, { query: { ...query } });
    return reply.type(JSON_TYPE).send({
      certificates: rows.slice(offset, offset + limit).map((r) => recordJson(r, now)),
      total: rows.length,
    });
  });

  app.get("/v1/certificates/:serial", async (req, reply) => {
    const caller = await requireCaller(req, ctx, false);
    const serial = normalizeSerial((req.params as { serial: string }).serial);
    const mine = serial === caller.serial || `0${serial}` === caller.serial;
    if (caller.role !== "admin" && !mine)
      return deny(
        ctx,
        req,
        caller,
        "E_NOT_AUTHORIZED",
        "a certificate holder may read only its own certificate",
      );
    const rec = await findBySerial(ctx, serial);
    if (!rec) throw new MtlsError("E_NOT_FOUND", `no certificate with serial ${serial}`);
    const format = (req.query as { format?: string }).format;
    if (format !== undefined && !["pem", "chain", "json"].includes(format))
      throw bad(`unknown format "${format}" (pem, chain or json)`);
    await audit(ctx, req, "api.read", caller.actor, rec.serial, { format: format ?? "json" });
    const wantsPem =
      format === "pem" || (format === undefined && /application\/x-pem-file/.test(req.headers.accept ?? ""));
    if (wantsPem) return reply.type(PEM_TYPE).send(rec.pem);
    if (format === "chain") {
      const chain =
        rec.issuerSerial === ctx.ca.intermediate.serial ? rec.pem + ctx.ca.intermediatePem : rec.pem;
      return reply.type(PEM_TYPE).send(chain);
    }
    return reply.type(JSON_TYPE).send(recordJson(rec, ctx.clock()));
  });

  app.get("/v1/ca", async (_req, reply) =>
    reply.type(JSON_TYPE).send({
      root: ctx.ca.rootPem,
      intermediate: ctx.ca.intermediatePem,
      chain: ctx.ca.intermediatePem + ctx.ca.rootPem,
    }),
  );

  app.get("/v1/audit", async (req, reply: FastifyReply) => {
    const caller = await requireCaller(req, ctx, true);
    const query = req.query as Record<string, string | undefined>;
    const accept = req.headers.accept ?? "";
    const format: AuditFormat = parseAuditFormat(query.format, /text\/csv/.test(accept) ? "csv" : "jsonl");
    const int = (key: string) => {
      const text = query[key];
      if (text === undefined || text === "") return undefined;
      const n = Number(text);
      if (!Number.isSafeInteger(n) || n < 0) throw bad(`"${key}" must be a non-negative integer`);
      return n;
    };
    const after = int("after") ?? 0;
    const limit = int("limit");
    // The export event goes in first, so the export (and its verification) includes it.
    await audit(ctx, req, "api.audit.export", caller.actor, null, { after, limit: limit ?? null, format });
    const verified = await ctx.ca.store.verifyAudit();
    reply
      .type(AUDIT_CONTENT_TYPE[format])
      .header("x-audit-verified", String(verified.ok))
      .header("x-audit-count", String(verified.count));
    if (!verified.ok && verified.brokenAt !== undefined)
      reply.header("x-audit-broken-at", String(verified.brokenAt));
    async function* lines() {
      if (format === "csv") yield csvHeader();
      for await (const e of auditEvents(ctx.ca.store, {
        afterSeq: after,
        ...(limit !== undefined ? { limit } : {}),
      }))
        yield formatAuditEvent(e, format);
    }
    return reply.send(Readable.from(lines()));
  });
}
