import type { FastifyReply, FastifyRequest } from "fastify";
import type { ServerContext } from "../context.js";
import type { AdminSession } from "./admin-guard.js";
import type { AuditVerifier } from "./audit-verifier.js";
import type { OneTimeDownloads } from "./downloads.js";
import { sendPage } from "./error-page.js";
import { type Html, html } from "./html.js";
import { page, type Section } from "./layout.js";
import type { CsrfTokens } from "./security.js";

/** What every UI route needs, made once per API listener (routes.ts). */
export interface UiDeps {
  ctx: ServerContext;
  csrf: CsrfTokens;
  downloads: OneTimeDownloads;
  auditVerifier: AuditVerifier;
}

/** Sends a console page: nav with `section` marked, the admin's name. */
export function sendAdminPage(
  reply: FastifyReply,
  s: AdminSession,
  section: Section | undefined,
  title: string,
  body: Html,
  status = 200,
): FastifyReply {
  return sendPage(
    reply,
    status,
    page({ title, body, admin: { who: s.who, ...(section ? { section } : {}) } }),
  );
}

/** The hidden CSRF field of a form. */
export const csrfField = (token: string): Html => html`<input type="hidden" name="_csrf" value="${token}">`;

/**
 * The CA's public URL when it is an https one: the pages are served on the HTTPS listener only,
 * and an http public URL (enough for CRLs and OCSP) would lead to the plain listener.
 */
function httpsPublicUrl(ctx: ServerContext): URL | undefined {
  const text = ctx.ca.settings.publicUrl;
  if (!text) return undefined;
  try {
    const url = new URL(text);
    return url.protocol === "https:" ? url : undefined;
  } catch {
    return undefined;
  }
}

/** The origin of the CA's public URL, which a browser behind a proxy sends as Origin. */
export function publicOrigins(ctx: ServerContext): string[] {
  const url = httpsPublicUrl(ctx);
  return url ? [url.origin] : [];
}

/**
 * Where a one-time link points: the CA's public URL when it is https, else the address this admin
 * reached the service at (the Host header of an authenticated admin's own browser).
 */
export function linkBase(req: FastifyRequest, ctx: ServerContext): string {
  const url = httpsPublicUrl(ctx);
  if (url) return url.href.replace(/\/+$/, "");
  const host = req.headers.host ?? "";
  return /^[A-Za-z0-9.\-[\]:]{1,300}$/.test(host) ? `https://${host}` : "";
}
