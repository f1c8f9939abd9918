import type { FastifyInstance } from "fastify";
import { requireAdmin } from "./admin-guard.js";
import type { AuditVerdict } from "./audit-verifier.js";
import { sendAdminPage, type UiDeps } from "./deps.js";
import { type Html, html, queryString } from "./html.js";
import { banner, relative, when } from "./layout.js";

const PAGE = 50;

/** A short line of the first few fields, and the whole object behind a disclosure (no script needed). */
function detailsCell(details: Record<string, unknown>): Html {
  const keys = Object.keys(details);
  if (!keys.length) return html`<span class="muted">none</span>`;
  const short = keys
    .slice(0, 3)
    .map((k) => `${k}=${typeof details[k] === "string" ? details[k] : JSON.stringify(details[k])}`)
    .join(" ");
  const summary = short.length > 90 ? `${short.slice(0, 87)}...` : short;
  const full = JSON.stringify(details, null, 2);
  return html`<details><summary>${summary}</summary><pre>${full.length > 4000 ? `${full.slice(0, 3997)}...` : full}</pre></details>`;
}

/** The chain's verdict, prominently: verified, broken (and where), or still being checked. */
function verdictBanner(v: AuditVerdict, now: Date): Html {
  const pending = v.running ? " A newer check is running; reload to see it." : "";
  if (!v.last)
    return banner(
      "info",
      "Verifying the hash chain…",
      "The log is large; reload this page in a few seconds.",
    );
  const at = html` Checked ${when(v.last.at)} (${relative(v.last.at, now)}).${pending}`;
  if ("error" in v.last)
    return banner("bad", "The hash chain could not be verified", html`${v.last.error}.${at}`);
  const r = v.last.result;
  return r.ok
    ? banner(
        "ok",
        "Hash chain verified",
        html`All ${r.count} events are linked and unaltered: each event's hash covers the one before it.${v.running ? at : ""}`,
      )
    : banner(
        "bad",
        "Hash chain broken",
        html`Event #${r.brokenAt ?? "?"} does not verify${r.reason ? ` (${r.reason})` : ""}: the log was altered or truncated from there on. Keep a copy and investigate.${at}`,
      );
}

/** GET /admin/audit: the log newest first, filtered by actor and action, with the chain's verdict on top. */
export function registerAudit(app: FastifyInstance, d: UiDeps): void {
  app.get("/admin/audit", async (req, reply) => {
    const s = await requireAdmin(req, d.ctx, d.csrf);
    const q = req.query as Record<string, string | undefined>;
    const actor = (q.actor ?? "").trim().slice(0, 200);
    const action = (q.action ?? "").trim().slice(0, 100);
    const beforeNum = Number(q.before);
    const before = Number.isSafeInteger(beforeNum) && beforeNum > 0 ? beforeNum : undefined;
    const [events, verified] = await Promise.all([
      d.ctx.ca.store.listAuditPage({
        ...(before !== undefined ? { beforeSeq: before } : {}),
        limit: PAGE,
        ...(actor ? { actor } : {}),
        ...(action ? { action } : {}),
      }),
      d.auditVerifier.verdict(),
    ]);
    const verdict = verdictBanner(verified, d.ctx.clock());
    const oldest = events.at(-1)?.seq;
    const body = html`<h1>Audit log</h1>
<p class="lead">Every change to the CA, newest first. The log is hash-chained; <code>GET /v1/audit</code> exports it.</p>
<div id="audit-verdict">${verdict}</div>
<form class="filters" method="get" action="/admin/audit" role="search">
<div class="field"><label for="actor">Actor</label><input type="text" id="actor" name="actor" value="${actor}" placeholder="api:… or cli:…"></div>
<div class="field"><label for="action">Action</label><input type="text" id="action" name="action" value="${action}" placeholder="cert.issue"></div>
<div class="field"></div>
<div class="field"><button class="btn" type="submit">Filter</button></div>
</form>
<div class="table-wrap"><table class="data"><caption>${events.length} events${before !== undefined ? ` before #${before}` : ""}</caption>
<thead><tr><th scope="col">#</th><th scope="col">Time</th><th scope="col">Actor</th><th scope="col">Action</th><th scope="col">Subject</th><th scope="col">Details</th></tr></thead>
<tbody>${
      events.length
        ? events.map(
            (e) => html`<tr>
<td data-label="#">${e.seq}</td>
<td data-label="Time" class="nowrap">${when(e.at)}</td>
<td data-label="Actor" class="wrap">${e.actor}</td>
<td data-label="Action">${e.action}</td>
<td data-label="Subject" class="wrap mono">${e.subject ?? ""}</td>
<td data-label="Details" class="details-cell">${detailsCell(e.details)}</td>
</tr>`,
          )
        : html`<tr><td colspan="6" class="empty">No events match.</td></tr>`
    }</tbody></table></div>
<nav class="pager" aria-label="Pages"><span>${before !== undefined ? html`<a href="/admin/audit${queryString({ actor, action })}">Newest</a>` : ""}</span>
<span>${events.length === PAGE && oldest !== undefined ? html`<a class="btn secondary" href="/admin/audit${queryString({ actor, action, before: oldest })}" rel="next">Older</a>` : ""}</span></nav>`;
    return sendAdminPage(reply, s, "audit", "Audit log", body);
  });
}
