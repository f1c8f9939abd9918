import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { validateLeafName } from "../../ca/index.js";
import { parseDuration } from "../../config/duration.js";
import { isMtlsError, MtlsError } from "../../errors.js";
import { makeSan, type San } from "../../pki/names.js";
import { toHttpError } from "../errors.js";
import { type AdminSession, requireAdmin } from "./admin-guard.js";
import { csrfField, linkBase, publicOrigins, sendAdminPage, type UiDeps } from "./deps.js";
import { type FormFields, field, formBody } from "./forms.js";
import { type Html, html } from "./html.js";
import { banner, relative, when } from "./layout.js";
import { generateP12Password, P12_TYPE, personalP12 } from "./p12.js";
import { checkForm } from "./security.js";

/** How long a one-time link made here stays usable unless the form says otherwise. */
export const DEFAULT_LINK_VALIDITY = "24h";
const LINK_VALIDITIES: [string, string][] = [
  ["15m", "15 minutes"],
  ["1h", "1 hour"],
  ["24h", "24 hours"],
  ["7d", "7 days"],
];

/**
 * A 4xx error of the CA (bad name, bad SAN, TTL beyond the intermediate...) is the person's to fix:
 * the form comes back with the message. Anything else goes to the error page.
 */
export function formError(err: unknown): string {
  if (!isMtlsError(err)) throw err;
  const h = toHttpError(err);
  if (h.status !== 400) throw err;
  return h.message;
}

function issueForm(s: AdminSession, f: FormFields, error?: string): Html {
  const v = (k: string) => f[k] ?? "";
  const delivery = v("delivery") === "p12" ? "p12" : "link";
  const validFor = v("validFor") || DEFAULT_LINK_VALIDITY;
  return html`${error ? banner("bad", "The certificate was not issued.", error) : ""}
<form class="stack card" method="post" action="/admin/issue">
${csrfField(s.csrf)}
<div class="field"><label for="name">Name</label><input type="text" id="name" name="name" required maxlength="64" value="${v("name")}" autocomplete="off" aria-describedby="name-hint">
<p class="hint" id="name-hint">The certificate's name and CN: letters, digits, <code>.</code> <code>_</code> <code>@</code> <code>-</code>, e.g. <code>alice</code>.</p></div>
<div class="field"><label for="email">E-mail (optional)</label><input type="email" id="email" name="email" value="${v("email")}" autocomplete="off"></div>
<div class="field"><label for="spiffe">SPIFFE ID (optional)</label><input type="text" id="spiffe" name="spiffe" value="${v("spiffe")}" placeholder="spiffe://example.org/user/alice" autocomplete="off"></div>
<div class="field"><label for="ttl">Lifetime (optional)</label><input type="text" id="ttl" name="ttl" value="${v("ttl")}" placeholder="30d" aria-describedby="ttl-hint">
<p class="hint" id="ttl-hint">How long the certificate is valid, e.g. <code>30d</code>, <code>12h</code>. Empty: the client profile's 30 days.</p></div>
<fieldset class="field"><legend>Hand it out as</legend>
<div class="radio-row">
<label class="check"><input type="radio" name="delivery" value="link"${delivery === "link" ? html` checked` : ""}> <span>A one-time enrollment link: the person makes the certificate in their browser</span></label>
<label class="check"><input type="radio" name="delivery" value="p12"${delivery === "p12" ? html` checked` : ""}> <span>A password-protected .p12 file to download now</span></label>
</div></fieldset>
<div class="field"><label for="validFor">The link works for</label><select id="validFor" name="validFor">${LINK_VALIDITIES.map(
    ([val, label]) =>
      html`<option value="${val}"${val === validFor ? html` selected` : ""}>${label}</option>`,
  )}</select></div>
<div class="field"><label class="check"><input type="checkbox" name="legacy" value="yes"${v("legacy") ? html` checked` : ""}> <span>.p12 for older Windows and macOS (3DES and SHA-1 instead of AES-256)</span></label></div>
<div class="actions"><button class="btn" type="submit">Issue certificate</button></div>
</form>`;
}

function sansOf(f: FormFields): San[] {
  const sans: San[] = [];
  const email = field(f, "email");
  if (email) sans.push(makeSan("email", email));
  const spiffe = field(f, "spiffe");
  if (spiffe) {
    if (!spiffe.startsWith("spiffe://"))
      throw new MtlsError("E_BAD_SAN", `a SPIFFE ID starts with spiffe://, not "${spiffe.slice(0, 80)}"`);
    sans.push(makeSan("uri", spiffe));
  }
  return sans;
}

const ttlOf = (f: FormFields): number | undefined => {
  const t = field(f, "ttl");
  return t ? parseDuration(t, "lifetime") : undefined;
};

/** The result page of a one-time link: shown once, with how long it lasts. */
export function linkResult(link: string, name: string, expiresAt: Date, now: Date): Html {
  return html`${banner("ok", "Enrollment link created.", html`It works <strong>once</strong>, until ${when(expiresAt)} (${relative(expiresAt, now)}).`)}
<h2>One-time link for ${name}</h2>
<p>Send it to the person over a channel you trust. Opening it explains what happens; they choose a passphrase or get one, and download their certificate. This page is the only time the link is shown.</p>
<div class="copy-row"><code class="secret" id="enroll-link">${link}</code><button class="btn secondary" type="button" data-copy="enroll-link" hidden>Copy link</button></div>`;
}

/** GET+POST /admin/issue: a client certificate as a one-time link or a .p12 with a password shown once. */
export function registerIssue(app: FastifyInstance, d: UiDeps): void {
  const formPage = (reply: FastifyReply, s: AdminSession, f: FormFields, error?: string) =>
    sendAdminPage(
      reply,
      s,
      "issue",
      "Issue a certificate",
      html`<h1>Issue a client certificate</h1><p class="lead">For a person or a program that signs in with a certificate.</p>${issueForm(s, f, error)}`,
      error ? 400 : 200,
    );

  app.get("/admin/issue", async (req, reply) => formPage(reply, await requireAdmin(req, d.ctx, d.csrf), {}));

  app.post("/admin/issue", async (req: FastifyRequest, reply) => {
    const s = await requireAdmin(req, d.ctx, d.csrf);
    const f = formBody(req);
    checkForm(req, d.csrf, s.binding, f._csrf, publicOrigins(d.ctx));
    const now = d.ctx.clock();
    let result: Html;
    try {
      const name = validateLeafName(field(f, "name"));
      const sans = sansOf(f);
      const ttlMs = ttlOf(f);
      if (field(f, "delivery") === "p12") {
        const issued = await d.ctx.ca.issue({
          profile: "client",
          name,
          sans,
          ...(ttlMs !== undefined ? { ttlMs } : {}),
          actor: s.actor,
        });
        d.ctx.metrics?.issued.inc({ via: "console" });
        const password = generateP12Password();
        const data = personalP12({
          privateKey: issued.privateKey as NonNullable<typeof issued.privateKey>,
          certificates: [issued.der, d.ctx.ca.intermediate.der],
          name,
          password,
          legacy: field(f, "legacy") !== "",
        });
        const id = d.downloads.put({ filename: `${name}.p12`, contentType: P12_TYPE, data });
        result = html`${banner("ok", "Certificate issued.", html`Serial <a class="mono" href="/admin/certificates/${issued.record.serial}">${issued.record.serial}</a>, valid until ${when(issued.record.notAfter)}.`)}
<h2>Password of ${name}.p12</h2>
<p>Shown only now. Give it to the person separately from the file.</p>
<div class="copy-row"><code class="secret" id="p12-password">${password}</code><button class="btn secondary" type="button" data-copy="p12-password" hidden>Copy password</button></div>
<h2>The file</h2>
<p>The download works once, within 10 minutes; the server keeps no copy of the key.</p>
<p><a class="btn big" href="/enroll/download/${id}" download="${name}.p12">Download ${name}.p12</a></p>`;
      } else {
        const validForMs = parseDuration(field(f, "validFor") || DEFAULT_LINK_VALIDITY, "link validity");
        const created = await d.ctx.services.createToken(
          { name, profile: "client", sans, ...(ttlMs !== undefined ? { ttlMs } : {}) },
          { validForMs, actor: s.actor },
        );
        result = linkResult(`${linkBase(req, d.ctx)}/enroll/${created.token}`, name, created.expiresAt, now);
      }
    } catch (err) {
      return formPage(reply, s, f, formError(err));
    }
    return sendAdminPage(
      reply,
      s,
      "issue",
      "Certificate issued",
      html`<h1>Issue a client certificate</h1>${result}<p><a href="/admin/issue">Issue another</a> · <a href="/admin/certificates">All certificates</a></p>`,
    );
  });
}
