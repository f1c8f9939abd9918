import type { FastifyInstance } from "fastify";
import type { CertificateKind, CertificateSearch, CertificateView } from "../../store/index.js";
import { requireAdmin } from "./admin-guard.js";
import { certStatus } from "./cert-status.js";
import { sendAdminPage, type UiDeps } from "./deps.js";
import { type Html, html, queryString } from "./html.js";
import { badge, when } from "./layout.js";

export const PAGE_SIZE = 50;

const VIEWS: [CertificateView, string][] = [
  ["all", "All"],
  ["valid", "Valid"],
  ["expiring7", "Expiring within 7 days"],
  ["expiring30", "Expiring within 30 days"],
  ["expired", "Expired"],
  ["revoked", "Revoked"],
  ["pending", "Pending"],
];
const KINDS: CertificateKind[] = ["client", "server", "peer", "ocsp", "ca-intermediate", "ca-root"];
type SortKey = NonNullable<CertificateSearch["sort"]>;
const SORT_LABELS: Record<SortKey, string> = {
  name: "name",
  notAfter: "not after",
  notBefore: "not before",
  serial: "serial",
  status: "status",
  profile: "profile",
  keyType: "key type",
  createdAt: "issue time",
};
const SORTS: SortKey[] = [
  "name",
  "notAfter",
  "notBefore",
  "serial",
  "status",
  "profile",
  "keyType",
  "createdAt",
];

export interface ListQuery {
  q: string;
  view: CertificateView;
  profile: CertificateKind | "";
  sort: SortKey;
  dir: "asc" | "desc";
  page: number;
}

/** The list's query string, read leniently: a value that is not one of ours falls back to the default. */
export function parseListQuery(query: Record<string, string | undefined>): ListQuery {
  const pick = <T extends string>(value: string | undefined, allowed: readonly T[], dflt: T): T =>
    allowed.includes(value as T) ? (value as T) : dflt;
  const sort = pick(query.sort, SORTS, "createdAt");
  const page = Number(query.page);
  return {
    q: (query.q ?? "").trim().slice(0, 200),
    view: pick(
      query.view,
      VIEWS.map(([v]) => v),
      "all",
    ),
    profile: pick(query.profile, ["", ...KINDS] as const, ""),
    sort,
    dir: pick(
      query.dir,
      ["asc", "desc"] as const,
      sort === "createdAt" || sort === "notBefore" ? "desc" : "asc",
    ),
    page: Number.isSafeInteger(page) && page >= 1 && page <= 1_000_000 ? page : 1,
  };
}

const linkTo = (l: ListQuery, change: Partial<ListQuery>) => {
  const n = { ...l, ...change };
  return `/admin/certificates${queryString({
    q: n.q,
    view: n.view === "all" ? "" : n.view,
    profile: n.profile,
    sort: n.sort,
    dir: n.dir,
    page: n.page === 1 ? "" : n.page,
  })}`;
};

function sortHeader(l: ListQuery, key: SortKey, label: string): Html {
  const active = l.sort === key;
  const next = active && l.dir === "asc" ? "desc" : "asc";
  const aria = active ? (l.dir === "asc" ? "ascending" : "descending") : "none";
  const arrow = active ? (l.dir === "asc" ? " ▲" : " ▼") : "";
  return html`<th scope="col" aria-sort="${aria}"><a href="${linkTo(l, { sort: key, dir: next, page: 1 })}">${label}${arrow}</a></th>`;
}

function options<T extends string>(values: [T, string][], selected: T): Html[] {
  return values.map(
    ([v, label]) => html`<option value="${v}"${v === selected ? html` selected` : ""}>${label}</option>`,
  );
}

/** GET /admin/certificates: search, filter, sort and page through the inventory. */
export function registerCertificateList(app: FastifyInstance, d: UiDeps): void {
  app.get("/admin/certificates", async (req, reply) => {
    const s = await requireAdmin(req, d.ctx, d.csrf);
    const l = parseListQuery(req.query as Record<string, string | undefined>);
    const now = d.ctx.clock();
    const { rows, total } = await d.ctx.ca.store.searchCertificates({
      ...(l.q ? { text: l.q } : {}),
      view: l.view,
      ...(l.profile ? { profile: [l.profile] } : {}),
      sort: l.sort,
      direction: l.dir,
      offset: (l.page - 1) * PAGE_SIZE,
      limit: PAGE_SIZE,
      now,
    });
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    const first = total === 0 ? 0 : (l.page - 1) * PAGE_SIZE + 1;
    const last = Math.min(total, l.page * PAGE_SIZE);
    const body = html`<div class="page-head"><div><h1>Certificates</h1><p class="lead">${total} matching ${total === 1 ? "certificate" : "certificates"}.</p></div>
<div class="actions"><a class="btn" href="/admin/issue">Issue a certificate</a></div></div>
<form class="filters" method="get" action="/admin/certificates" role="search">
<div class="field"><label for="q">Search</label><input type="search" id="q" name="q" value="${l.q}" placeholder="Name, SAN, subject or serial"></div>
<div class="field"><label for="view">Status</label><select id="view" name="view">${options(VIEWS, l.view)}</select></div>
<div class="field"><label for="profile">Profile</label><select id="profile" name="profile">${options(
      [["", "All profiles"], ...KINDS.map((k): [string, string] => [k, k])],
      l.profile,
    )}</select></div>
<input type="hidden" name="sort" value="${l.sort}"><input type="hidden" name="dir" value="${l.dir}">
<div class="field"><button class="btn" type="submit">Search</button></div>
</form>
<div class="table-wrap"><table class="data">
<caption>Certificates ${first}–${last} of ${total}, sorted by ${SORT_LABELS[l.sort]} (${l.dir === "asc" ? "ascending" : "descending"})</caption>
<thead><tr>${sortHeader(l, "name", "Name")}<th scope="col">SANs</th>${sortHeader(l, "profile", "Profile")}${sortHeader(
      l,
      "keyType",
      "Key",
    )}${sortHeader(l, "serial", "Serial")}${sortHeader(l, "notAfter", "Not after")}${sortHeader(l, "status", "Status")}</tr></thead>
<tbody>${
      rows.length
        ? rows.map((r) => {
            const st = certStatus(r, now);
            return html`<tr>
<td data-label="Name"><a href="/admin/certificates/${r.serial}">${r.name}</a></td>
<td data-label="SANs" class="wrap">${r.sans.length ? r.sans.join(", ") : html`<span class="muted">none</span>`}</td>
<td data-label="Profile" class="nowrap">${r.profile}</td>
<td data-label="Key" class="nowrap">${r.keyType}</td>
<td data-label="Serial" class="wrap mono">${r.serial}</td>
<td data-label="Not after" class="nowrap">${when(r.notAfter)}</td>
<td data-label="Status">${badge(st.label, st.tone)}</td>
</tr>`;
          })
        : html`<tr><td colspan="7" class="empty">No certificate matches.</td></tr>`
    }</tbody></table></div>
<nav class="pager" aria-label="Pages"><span>Page ${l.page} of ${pages}</span><span class="actions">${
      l.page > 1
        ? html`<a class="btn secondary" href="${linkTo(l, { page: l.page - 1 })}" rel="prev">Previous</a>`
        : ""
    }${l.page < pages ? html`<a class="btn secondary" href="${linkTo(l, { page: l.page + 1 })}" rel="next">Next</a>` : ""}</span></nav>`;
    return sendAdminPage(reply, s, "certificates", "Certificates", body);
  });
}
