import type { FastifyInstance } from "fastify";
import type { CertInfo } from "../../pki/certinfo.js";
import { requireAdmin } from "./admin-guard.js";
import { expiryChart } from "./chart.js";
import { sendAdminPage, type UiDeps } from "./deps.js";
import { type Html, html } from "./html.js";
import { badge, relative, type Tone, when } from "./layout.js";

const DAY = 86_400_000;

function caCard(label: string, c: CertInfo, now: Date): Html {
  const left = c.notAfter.getTime() - now.getTime();
  const tone: Tone = left <= 0 ? "bad" : left <= 90 * DAY ? "warn" : "ok";
  return html`<div class="card">
<h3>${label} ${badge(left <= 0 ? "expired" : `expires ${relative(c.notAfter, now)}`, tone)}</h3>
<dl class="fields">
<dt>Subject</dt><dd>${c.subject}</dd>
<dt>Serial</dt><dd><a class="mono" href="/admin/certificates/${c.serial}">${c.serial}</a></dd>
<dt>Key</dt><dd>${c.keyType}</dd>
<dt>Valid until</dt><dd>${when(c.notAfter)}</dd>
</dl></div>`;
}

/** GET /admin: the fleet at a glance. */
export function registerOverview(app: FastifyInstance, d: UiDeps): void {
  app.get("/admin", async (req, reply) => {
    const s = await requireAdmin(req, d.ctx, d.csrf);
    const now = d.ctx.clock();
    const stats = await d.ctx.ca.store.certificateStats(now, 90);
    const b = stats.byStatus;
    let crl: Html;
    try {
      const crls = await d.ctx.services.crls();
      crl = crls.thisUpdate
        ? html`${when(crls.thisUpdate)} <span class="muted">(${relative(crls.thisUpdate, now)}; next by ${when(crls.nextUpdate)})</span>`
        : html`next by ${when(crls.nextUpdate)}`;
    } catch {
      crl = badge("CRL unavailable", "bad");
    }
    const stat = (value: number, label: string, view: string, tone: Tone | "") =>
      html`<a class="stat ${tone}" href="/admin/certificates?view=${view}"><span class="stat-value">${value}</span><span class="stat-label">${label}</span></a>`;
    const body = html`<div class="page-head"><div><h1>Overview</h1><p class="lead">${d.ctx.ca.settings.name}: certificates issued by this CA, as of ${when(now)}.</p></div>
<div class="actions"><a class="btn" href="/admin/issue">Issue a certificate</a><a class="btn secondary" href="/admin/tokens">Create an enrollment token</a></div></div>
<section aria-labelledby="counts"><h2 id="counts" class="visually-hidden">Counts by status</h2>
<div class="stats">
${stat(b.valid, "valid", "valid", "ok")}
${stat(b.expiring7, "expire within 7 days", "expiring7", b.expiring7 ? "warn" : "")}
${stat(b.expiring30, "expire within 30 days", "expiring30", b.expiring30 ? "warn" : "")}
${stat(b.expired, "expired", "expired", "")}
${stat(b.revoked, "revoked", "revoked", b.revoked ? "bad" : "")}
${stat(b.pending, "pending", "pending", "")}
</div></section>
<section class="card" aria-labelledby="expiries"><h2 id="expiries">Expiries, next 90 days</h2>
${expiryChart(stats.expiriesByDay, now, 90)}
</section>
<section aria-labelledby="ca-certs"><h2 id="ca-certs">The CA's own certificates</h2>
<div class="grid-2">${caCard("Root", d.ctx.ca.root, now)}${caCard("Intermediate", d.ctx.ca.intermediate, now)}</div>
<div class="card"><h3>Revocation list</h3><dl class="fields"><dt>Last CRL</dt><dd>${crl}</dd><dt>Published at</dt><dd><code>/crl</code>, <code>/crl/root</code>; OCSP at <code>/ocsp</code></dd></dl></div>
</section>`;
    return sendAdminPage(reply, s, "overview", "Overview", body);
  });
}
