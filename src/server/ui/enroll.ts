import type { FastifyInstance, FastifyReply } from "fastify";
import { isMtlsError } from "../../errors.js";
import { buildCsrPem } from "../../pki/csr-builder.js";
import { generateKeyPair } from "../../pki/keys.js";
import { keyObjectSigner } from "../../pki/signer.js";
import type { EnrollmentTokenRecord } from "../../store/index.js";
import { rateLimit } from "../app.js";
import { csrfField, publicOrigins, type UiDeps } from "./deps.js";
import { inspectToken, type LinkState } from "./enroll-token.js";
import { PageError, sendPage } from "./error-page.js";
import { field, formBody } from "./forms.js";
import { type Html, html } from "./html.js";
import { installSteps } from "./install-steps.js";
import { banner, page, relative, when } from "./layout.js";
import { generateP12Password, P12_TYPE, personalP12 } from "./p12.js";
import { checkForm } from "./security.js";

/** A passphrase the person chooses must be at least this long (the file travels and may be copied). */
export const MIN_PASSPHRASE = 10;
const MAX_PASSPHRASE = 200;
const DAY = 86_400_000;

const enrollBinding = (id: string) => `enroll:${id}`;

/** The page of a link that cannot be used (any more): 404 for one we do not know, 410 for used or expired. */
function deadLink(state: Exclude<LinkState["state"], "unused">, rec?: EnrollmentTokenRecord): PageError {
  const ask = html`<p>Ask the person who sent it to you for a new link. Each link works once and only for a short time, so that a forwarded or leaked link is worth nothing.</p>`;
  if (state === "used")
    return new PageError(
      "E_TOKEN_USED",
      410,
      "This link has already been used",
      html`<h1>This link has already been used</h1>
${banner("warn", "A certificate was already created with this link", rec?.usedAt ? html`on ${when(rec.usedAt)}.` : "")}
<p>If that was you, the certificate is in the file you downloaded then; <a href="/check">check whether your browser presents it</a>. If it was not you, tell your administrator now: someone else may have used your link.</p>${ask}`,
    );
  if (state === "expired")
    return new PageError(
      "E_TOKEN_EXPIRED",
      410,
      "This link has expired",
      html`<h1>This link has expired</h1>${banner("warn", "The link was valid until", rec ? when(rec.expiresAt) : "")}${ask}`,
    );
  return new PageError(
    "E_TOKEN_INVALID",
    404,
    "This link is not valid",
    html`<h1>This link is not valid</h1><p>This address is not an enrollment link of this certificate authority. Check that you copied the whole link: it is long and ends with a string of random letters.</p>${ask}`,
  );
}

function explain(rec: EnrollmentTokenRecord, token: string, csrf: string, now: Date, error?: string): Html {
  const days = Math.round((rec.ttlMs ?? (rec.profile === "client" ? 30 : 90) * DAY) / DAY);
  return html`<h1>Get your certificate</h1>
<p class="lead">This link lets you create a certificate for <strong>${rec.name}</strong>: a file your browser uses to prove who you are, instead of (or besides) a password.</p>
${error ? banner("bad", "That did not work.", error) : ""}
<div class="card"><h2>What happens when you press the button</h2><ol class="steps">
<li>This server creates a new private key and a certificate for <strong>${rec.name}</strong>${
    rec.sans.length ? html` (${rec.sans.join(", ")})` : ""
  }, valid for about ${days} days.</li>
<li>It packs both into one <code>.p12</code> file locked with a password: one you choose below, or one it makes up and shows you once.</li>
<li>You download the file once and install it (steps for every system follow). The server keeps no copy of the key.</li>
</ol>
<p class="muted">This link works once, until ${when(rec.expiresAt)} (${relative(rec.expiresAt, now)}).</p></div>
<form class="stack card" method="post" action="/enroll/${token}">
${csrfField(csrf)}
<div class="field"><label for="passphrase">Password for the file (optional)</label>
<input type="password" id="passphrase" name="passphrase" autocomplete="new-password" minlength="${MIN_PASSPHRASE}" maxlength="${MAX_PASSPHRASE}" aria-describedby="pass-hint">
<p class="hint" id="pass-hint">At least ${MIN_PASSPHRASE} characters. Leave it empty and we make a strong one up and show it to you once.</p></div>
<div class="field"><label class="check"><input type="checkbox" name="legacy" value="yes"> <span>My computer runs an older Windows or macOS that refuses modern files (uses 3DES instead of AES-256)</span></label></div>
<div class="actions"><button class="btn big" type="submit">Create my certificate</button></div>
</form>`;
}

/** GET+POST /enroll/:token and GET /enroll/download/:id: the self-service enrollment portal. */
export function registerEnroll(app: FastifyInstance, d: UiDeps): void {
  const portalPage = (reply: FastifyReply, status: number, title: string, body: Html) =>
    sendPage(reply, status, page({ title, narrow: true, body }));

  app.get("/enroll/:token", async (req, reply) => {
    rateLimit(req, d.ctx, "enroll");
    const token = (req.params as { token: string }).token;
    const now = d.ctx.clock();
    const link = await inspectToken(d.ctx.ca, token, now);
    if (link.state !== "unused") throw deadLink(link.state, "record" in link ? link.record : undefined);
    req.mtlsActor = `api:token:${link.record.id}`;
    const csrf = d.csrf.token(enrollBinding(link.record.id));
    return portalPage(reply, 200, "Get your certificate", explain(link.record, token, csrf, now));
  });

  app.post("/enroll/:token", async (req, reply) => {
    rateLimit(req, d.ctx, "enroll");
    const token = (req.params as { token: string }).token;
    const now = d.ctx.clock();
    const link = await inspectToken(d.ctx.ca, token, now);
    if (link.state !== "unused") throw deadLink(link.state, "record" in link ? link.record : undefined);
    const rec = link.record;
    req.mtlsActor = `api:token:${rec.id}`;
    const form = formBody(req);
    checkForm(req, d.csrf, enrollBinding(rec.id), form._csrf, publicOrigins(d.ctx));
    const chosen = form.passphrase ?? "";
    const csrf = d.csrf.token(enrollBinding(rec.id));
    if (chosen !== "" && (chosen.length < MIN_PASSPHRASE || chosen.length > MAX_PASSPHRASE))
      return portalPage(
        reply,
        400,
        "Get your certificate",
        explain(
          rec,
          token,
          csrf,
          now,
          `Choose a password of ${MIN_PASSPHRASE} to ${MAX_PASSPHRASE} characters, or leave it empty.`,
        ),
      );
    // The key is made here because a browser can no longer make one into its own store
    // (<keygen> is gone); it lives only in this request and the one-time download.
    const key = generateKeyPair("ec-p256");
    const csr = await buildCsrPem({ subject: { commonName: rec.name } }, keyObjectSigner(key.privateKey));
    let issued: Awaited<ReturnType<typeof d.ctx.services.enroll>>;
    try {
      issued = await d.ctx.services.enroll({ token, csr });
    } catch (err) {
      // Another tab or person may have used the link a moment ago.
      if (isMtlsError(err) && err.code === "E_TOKEN_USED") throw deadLink("used", rec);
      if (isMtlsError(err) && err.code === "E_TOKEN_EXPIRED") throw deadLink("expired", rec);
      throw err;
    }
    d.ctx.metrics?.issued.inc({ via: "enroll" });
    const password = chosen === "" ? generateP12Password() : chosen;
    const filename = `${rec.name}.p12`;
    const data = personalP12({
      privateKey: key.privateKey,
      certificates: [issued.der, d.ctx.ca.intermediate.der],
      name: rec.name,
      password,
      legacy: field(form, "legacy") !== "",
    });
    const id = d.downloads.put({ filename, contentType: P12_TYPE, data });
    const passwordBlock =
      chosen === ""
        ? html`<h2>Your password</h2><p>Write it down or copy it now: it is shown <strong>only this once</strong>, and you need it to install the file.</p>
<div class="copy-row"><code class="secret" id="p12-password">${password}</code><button class="btn secondary" type="button" data-copy="p12-password" hidden>Copy password</button></div>`
        : html`<p>The file is locked with the password you chose.</p>`;
    return portalPage(
      reply,
      200,
      "Your certificate is ready",
      html`<h1>Your certificate is ready</h1>
${banner("ok", `A certificate for ${rec.name} was created.`, html`Valid until ${when(issued.record.notAfter)}.`)}
${passwordBlock}
<h2>Download</h2>
<p>The download works <strong>once</strong>, within 10 minutes. Save the file somewhere only you can reach.</p>
<p><a class="btn big" href="/enroll/download/${id}" download="${filename}">Download ${filename}</a></p>
${installSteps(filename)}`,
    );
  });

  // No HEAD route: a HEAD (a link checker, a preview) would otherwise spend the one download.
  app.get("/enroll/download/:id", { exposeHeadRoute: false }, async (req, reply) => {
    rateLimit(req, d.ctx, "enroll");
    const id = (req.params as { id: string }).id;
    const file = /^[A-Za-z0-9_-]{43}$/.test(id) ? d.downloads.take(id) : undefined;
    if (!file)
      throw new PageError(
        "E_NOT_FOUND",
        404,
        "This download is gone",
        html`<h1>This download is gone</h1><p>Each certificate file can be downloaded once, within 10 minutes, and the server then forgets it. If you have not saved it, ask for a new link.</p>`,
      );
    return reply
      .header("cache-control", "no-store")
      .header("x-content-type-options", "nosniff")
      .header("referrer-policy", "no-referrer")
      .header("content-disposition", `attachment; filename="${file.filename}"`)
      .type(file.contentType)
      .send(Buffer.from(file.data));
  });
}
