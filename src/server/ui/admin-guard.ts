import type { FastifyRequest } from "fastify";
import { callerOf, pathOf, rateLimit } from "../app.js";
import type { Caller } from "../auth.js";
import type { ServerContext } from "../context.js";
import { PageError } from "./error-page.js";
import { html } from "./html.js";
import type { CsrfTokens } from "./security.js";

/** A caller with a valid certificate; requireAdmin hands out only those whose role is admin. */
export type AdminCaller = Exclude<Caller, { role: "anonymous" }>;

/** The signed-in admin of one request: who (for the nav), the audit actor, the forms' CSRF token. */
export interface AdminSession {
  caller: AdminCaller;
  /** The certificate's inventory name. */
  who: string;
  /** The audit actor, as the API writes it (`api:<serial>`). */
  actor: string;
  /** The CSRF token of this admin's forms, bound to the certificate's fingerprint. */
  csrf: string;
  /** What the CSRF token is bound to. */
  binding: string;
}

async function auditDenied(
  ctx: ServerContext,
  req: FastifyRequest,
  caller: Caller,
  code: string,
  reason: string,
) {
  try {
    await ctx.ca.store.appendAudit({
      at: ctx.clock(),
      actor: caller.actor,
      action: "api.denied",
      subject: caller.role === "anonymous" ? null : caller.serial,
      details: { method: req.method, path: pathOf(req), ip: req.ip, code, reason },
    });
  } catch (err) {
    ctx.logger.error({ reqId: req.id, err: (err as Error).message }, "audit event not written");
  }
}

/**
 * The console's door, the same as the API's admin endpoints (auth.ts): a valid certificate of this
 * CA whose name is in ca.admins. Without one, a page that says how to get in (401); with another
 * certificate, a page that says whose it is and that it is not an admin's (403). Both are audited
 * as the API's refusals are, and anonymous attempts count against the rate limit.
 */
export async function requireAdmin(
  req: FastifyRequest,
  ctx: ServerContext,
  csrf: CsrfTokens,
): Promise<AdminSession> {
  const caller = await callerOf(req, ctx);
  if (caller.role === "anonymous") {
    rateLimit(req, ctx, "anonymous");
    await auditDenied(ctx, req, caller, "E_NOT_AUTHENTICATED", caller.why);
    throw new PageError(
      "E_NOT_AUTHENTICATED",
      401,
      "Sign in with your admin certificate",
      html`<h1>Sign in with your admin certificate</h1>
<p class="lead">The console opens only for a browser that presents a valid administrator certificate of this CA. Your browser presented none that counts (${caller.why}).</p>
<h2>How to get in</h2>
<ol class="steps">
<li>Find the administrator's <code>.p12</code> file. <code>mtls ca serve --init</code> writes the first one to <code>.mtls/admin/admin.p12</code>, with its password in <code>.mtls/admin/admin.p12.password</code>.</li>
<li>Import it into your browser or your system's certificate store (the same steps as for any client certificate: see <a href="/check">Check my certificate</a>).</li>
<li>Close every window of the browser (it remembers "no certificate" per site until restarted), then open this page again and pick the certificate when asked.</li>
</ol>
<p>If your certificate was revoked or has expired, ask another administrator for a new one, or run <code>mtls ca serve --init</code> on the CA's machine to issue a new admin certificate.</p>`,
    );
  }
  if (caller.role !== "admin") {
    await auditDenied(
      ctx,
      req,
      caller,
      "E_NOT_AUTHORIZED",
      `"${caller.record.name}" is not an administrator`,
    );
    throw new PageError(
      "E_NOT_AUTHORIZED",
      403,
      "This certificate is not an administrator's",
      html`<h1>This certificate is not an administrator's</h1>
<p class="lead">You are signed in as <strong>${caller.record.name}</strong> (serial <code>${caller.serial}</code>), a valid certificate of this CA, but <strong>${caller.record.name}</strong> is not one of the CA's administrators.</p>
<p>An administrator can add the name with <code>mtls ca set admins NAME,…</code>. To use another certificate, restart the browser and choose the administrator's certificate when asked.</p>
<p><a href="/check">See which certificate your browser presented</a></p>`,
    );
  }
  const binding = `admin:${caller.record.fingerprint}`;
  return {
    caller,
    who: caller.record.name,
    actor: caller.actor,
    binding,
    csrf: csrf.token(binding),
  };
}
