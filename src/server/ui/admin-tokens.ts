import type { FastifyInstance, FastifyReply } from "fastify";
import { parseProfile, tokenStatus } from "../../ca/index.js";
import { parseDuration } from "../../config/duration.js";
import { parseSan } from "../../pki/names.js";
import { type AdminSession, requireAdmin } from "./admin-guard.js";
import { formError, linkResult } from "./admin-issue.js";
import { csrfField, linkBase, publicOrigins, sendAdminPage, type UiDeps } from "./deps.js";
import { type FormFields, field, formBody } from "./forms.js";
import { type Html, html } from "./html.js";
import { badge, banner, when } from "./layout.js";
import { checkForm } from "./security.js";

/** How many tokens the list shows, newest first. */
const RECENT = 50;
const VALIDITIES: [string, string][] = [
  ["15m", "15 minutes"],
  ["1h", "1 hour"],
  ["24h", "24 hours"],
  ["7d", "7 days"],
];

function tokenForm(s: AdminSession, f: FormFields): Html {
  const v = (k: string) => f[k] ?? "";
  const profile = v("profile") || "client";
  const validity = v("validity") || "1h";
  return html`<form class="stack card" method="post" action="/admin/tokens">
${csrfField(s.csrf)}
<div class="field"><label for="name">Name</label><input type="text" id="name" name="name" required maxlength="64" value="${v("name")}" autocomplete="off">
<p class="hint">The certificate's name and CN; whoever enrolls cannot change it.</p></div>
<div class="field"><label for="profile">Profile</label><select id="profile" name="profile">${[
    "client",
    "server",
    "peer",
  ].map(
    (p) => html`<option value="${p}"${p === profile ? html` selected` : ""}>${p}</option>`,
  )}</select></div>
<div class="field"><label for="sans">Subject alternative names</label><textarea id="sans" name="sans" rows="3" aria-describedby="sans-hint">${v("sans")}</textarea>
<p class="hint" id="sans-hint">One per line or comma-separated: <code>dns:host.example</code>, <code>ip:10.0.0.5</code>, <code>email:alice@example.org</code>, <code>uri:spiffe://example.org/svc</code>. A server token needs a DNS name or IP.</p></div>
<div class="field"><label for="validity">Valid for</label><select id="validity" name="validity">${VALIDITIES.map(
    ([val, label]) =>
      html`<option value="${val}"${val === validity ? html` selected` : ""}>${label}</option>`,
  )}</select><p class="hint">How long the token can be used (once).</p></div>
<div class="field"><label for="ttl">Certificate lifetime (optional)</label><input type="text" id="ttl" name="ttl" value="${v("ttl")}" placeholder="30d"></div>
<div class="actions"><button class="btn" type="submit">Create token</button></div>
</form>`;
}

async function recentTokens(d: UiDeps): Promise<Html> {
  const now = d.ctx.clock();
  const tokens = (await d.ctx.ca.store.findTokens()).slice(-RECENT).reverse();
  if (!tokens.length) return html`<p class="muted">No enrollment tokens yet.</p>`;
  const tone = { unused: "ok", used: "info", expired: "warn" } as const;
  return html`<div class="table-wrap"><table class="data"><caption>Newest first (the last ${RECENT} at most)</caption>
<thead><tr><th scope="col">Id</th><th scope="col">Name</th><th scope="col">Profile</th><th scope="col">SANs</th><th scope="col">Created</th><th scope="col">Expires</th><th scope="col">Status</th></tr></thead>
<tbody>${tokens.map((t) => {
    const st = tokenStatus(t, now);
    return html`<tr>
<td data-label="Id" class="mono">${t.id}</td>
<td data-label="Name">${t.name}</td>
<td data-label="Profile">${t.profile}</td>
<td data-label="SANs" class="wrap">${t.sans.length ? t.sans.join(", ") : html`<span class="muted">none</span>`}</td>
<td data-label="Created">${when(t.createdAt)} <span class="muted">by ${t.createdBy}</span></td>
<td data-label="Expires">${when(t.expiresAt)}</td>
<td data-label="Status">${badge(st, tone[st])}${t.usedBySerial ? html` <a class="mono" href="/admin/certificates/${t.usedBySerial}">${t.usedBySerial.slice(0, 12)}…</a>` : ""}</td>
</tr>`;
  })}</tbody></table></div>`;
}

/** GET+POST /admin/tokens: create one-time enrollment tokens, list the recent ones. */
export function registerTokens(app: FastifyInstance, d: UiDeps): void {
  const tokensPage = async (reply: FastifyReply, s: AdminSession, f: FormFields, top?: Html, status = 200) =>
    sendAdminPage(
      reply,
      s,
      "tokens",
      "Enrollment tokens",
      html`<h1>Enrollment tokens</h1>
<p class="lead">A token lets its holder get one certificate with the name and names you grant, on a key of their own: with <code>mtls enroll</code>, the API, or in a browser through its link.</p>
${top ?? ""}
<section aria-labelledby="new"><h2 id="new">New token</h2>${tokenForm(s, f)}</section>
<section aria-labelledby="recent"><h2 id="recent">Recent tokens</h2>${await recentTokens(d)}</section>`,
      status,
    );

  app.get("/admin/tokens", async (req, reply) =>
    tokensPage(reply, await requireAdmin(req, d.ctx, d.csrf), {}),
  );

  app.post("/admin/tokens", async (req, reply) => {
    const s = await requireAdmin(req, d.ctx, d.csrf);
    const f = formBody(req);
    checkForm(req, d.csrf, s.binding, f._csrf, publicOrigins(d.ctx));
    try {
      const sans = field(f, "sans")
        .split(/[\s,]+/)
        .filter(Boolean)
        .slice(0, 101)
        .map(parseSan);
      const ttl = field(f, "ttl");
      const created = await d.ctx.services.createToken(
        {
          name: field(f, "name"),
          profile: parseProfile(field(f, "profile") || "client"),
          sans,
          ...(ttl ? { ttlMs: parseDuration(ttl, "certificate lifetime") } : {}),
        },
        { validForMs: parseDuration(field(f, "validity") || "1h", "validity"), actor: s.actor },
      );
      const link = `${linkBase(req, d.ctx)}/enroll/${created.token}`;
      const top = html`${linkResult(link, field(f, "name"), created.expiresAt, d.ctx.clock())}
<h3>The token itself</h3><p>For <code>mtls enroll --token …</code> or <code>POST /v1/enroll</code>:</p>
<div class="copy-row"><code class="secret" id="token-text">${created.token}</code><button class="btn secondary" type="button" data-copy="token-text" hidden>Copy token</button></div>`;
      return tokensPage(reply, s, {}, top, 201);
    } catch (err) {
      return tokensPage(reply, s, f, banner("bad", "The token was not created.", formError(err)), 400);
    }
  });
}
