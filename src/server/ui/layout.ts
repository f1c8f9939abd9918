import { assetUrl } from "./assets.js";
import { type Html, html } from "./html.js";

/** Which part of the site a page belongs to: the admin console (with its nav) or the portal. */
export type Section = "overview" | "certificates" | "issue" | "tokens" | "audit";

export interface PageOptions {
  title: string;
  body: Html;
  /** Admin pages: the nav entry to mark, and who is signed in. */
  admin?: { section?: Section; who: string };
  /** A narrower reading column (portal pages, messages). */
  narrow?: boolean;
}

const NAV: [Section, string, string][] = [
  ["overview", "Overview", "/admin"],
  ["certificates", "Certificates", "/admin/certificates"],
  ["issue", "Issue", "/admin/issue"],
  ["tokens", "Enrollment tokens", "/admin/tokens"],
  ["audit", "Audit log", "/admin/audit"],
];

function topbar(opts: PageOptions): Html {
  if (opts.admin) {
    const current = opts.admin.section;
    return html`<header class="topbar"><div class="topbar-inner">
<a class="brand" href="/admin"><span class="brand-mark" aria-hidden="true">CA</span>mtls console</a>
<nav aria-label="Console"><ul class="nav">${NAV.map(
      ([key, label, href]) =>
        html`<li><a href="${href}"${key === current ? html` aria-current="page"` : ""}>${label}</a></li>`,
    )}</ul></nav>
<span class="whoami">Signed in as <strong>${opts.admin.who}</strong></span>
</div></header>`;
  }
  return html`<header class="topbar"><div class="topbar-inner">
<span class="brand"><span class="brand-mark" aria-hidden="true">CA</span>mtls</span>
<nav aria-label="Site"><ul class="nav"><li><a href="/check">Check my certificate</a></li></ul></nav>
</div></header>`;
}

/** A whole HTML document: landmarks, a skip link, the stylesheet and script by hashed URL. */
export function page(opts: PageOptions): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${opts.title} · mtls</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${assetUrl("app.css")}">
<script src="${assetUrl("app.js")}" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
${topbar(opts)}
<main id="main"${opts.narrow ? html` class="narrow"` : ""}>
${opts.body}
</main>
<footer>mtls certificate authority</footer>
</body>
</html>
`;
}

export type Tone = "ok" | "warn" | "bad" | "info";

export const badge = (text: string, tone: Tone): Html => html`<span class="badge ${tone}">${text}</span>`;

/** A banner with a strong first line (role=status for good news, alert for bad). */
export function banner(tone: Tone, title: string, text?: Html | string): Html {
  const role = tone === "bad" || tone === "warn" ? "alert" : "status";
  return html`<div class="banner ${tone}" role="${role}"><strong>${title}</strong>${text ? html` ${text}` : ""}</div>`;
}

/** A date as people read it, in UTC (the server cannot know the reader's zone), with the ISO time in a <time>. */
export function when(d: Date | null | undefined): Html {
  if (!d) return html`<span class="muted">never</span>`;
  const iso = d.toISOString();
  return html`<time datetime="${iso}">${iso.slice(0, 16).replace("T", " ")} UTC</time>`;
}

/** "in 12 days", "3 hours ago": how far `d` is from `now`. */
export function relative(d: Date, now: Date): string {
  const ms = d.getTime() - now.getTime();
  const abs = Math.abs(ms);
  const [n, unit] =
    abs >= 2 * 86_400_000
      ? [Math.round(abs / 86_400_000), "days"]
      : abs >= 2 * 3_600_000
        ? [Math.round(abs / 3_600_000), "hours"]
        : [Math.max(1, Math.round(abs / 60_000)), "minutes"];
  const units = n === 1 ? unit.slice(0, -1) : unit;
  return ms >= 0 ? `in ${n} ${units}` : `${n} ${units} ago`;
}
