/**
 * The one stylesheet of the admin console and the enrollment portal, served as /ui/app.css (see
 * assets.ts). Kept in a module so the build ships it without copying files. The CSP forbids inline
 * styles: every look lives here, addressed by class.
 */
export const APP_CSS = `
:root {
  --bg: #f5f6f8; --surface: #fff; --fg: #1a1d21; --muted: #525a63; --border: #d3d8de;
  --accent: #0a58b8; --accent-fg: #fff; --accent-soft: #e6effa; --focus: #f0a500;
  --ok: #17692f; --ok-bg: #e3f4e8; --warn: #7a5200; --warn-bg: #fdf1d6;
  --bad: #b3141f; --bad-bg: #fbe6e7; --info: #41474f; --info-bg: #eceef1;
  --radius: 8px; --shadow: 0 1px 2px rgb(0 0 0 / 6%), 0 2px 8px rgb(0 0 0 / 4%);
  color-scheme: light dark;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #111418; --surface: #1b1f24; --fg: #e8ebef; --muted: #a4adb7; --border: #353c44;
    --accent: #6aa9f5; --accent-fg: #0b1320; --accent-soft: #1d2a3a; --focus: #ffc53d;
    --ok: #6fd48c; --ok-bg: #15301e; --warn: #f2c35b; --warn-bg: #3a2e10;
    --bad: #ff8a8f; --bad-bg: #3d1518; --info: #c3cad2; --info-bg: #272c33;
  }
}
*, *::before, *::after { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
}
a { color: var(--accent); }
a:hover { text-decoration-thickness: 2px; }
:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; border-radius: 3px; }
code, .mono, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; font-size: 0.92em; }
pre { white-space: pre-wrap; word-break: break-all; background: var(--info-bg); padding: 0.75rem; border-radius: var(--radius); overflow: auto; }
h1 { font-size: 1.6rem; margin: 0 0 0.25rem; line-height: 1.25; }
h2 { font-size: 1.15rem; margin: 1.75rem 0 0.75rem; }
h3 { font-size: 1rem; margin: 1.25rem 0 0.5rem; }
p { margin: 0.5rem 0 0.9rem; }
.lead { color: var(--muted); font-size: 1.05rem; margin-top: 0; }
.muted { color: var(--muted); }
.visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
.skip { position: absolute; left: -999px; top: 0; background: var(--surface); padding: 0.5rem 1rem; z-index: 10; }
.skip:focus { left: 0.5rem; top: 0.5rem; }

/* Top bar */
.topbar { background: var(--surface); border-bottom: 1px solid var(--border); }
.topbar-inner { max-width: 1200px; margin: 0 auto; padding: 0 1.25rem; display: flex; align-items: center; gap: 1.5rem; min-height: 3.5rem; flex-wrap: wrap; }
.brand { font-weight: 700; color: var(--fg); text-decoration: none; display: flex; align-items: center; gap: 0.5rem; }
.brand-mark { display: inline-grid; place-items: center; width: 1.75rem; height: 1.75rem; border-radius: 6px; background: var(--accent); color: var(--accent-fg); font-size: 0.8rem; font-weight: 800; }
.nav { display: flex; gap: 0.25rem; flex-wrap: wrap; margin: 0; padding: 0; list-style: none; }
.nav a { display: block; padding: 0.45rem 0.75rem; border-radius: 6px; color: var(--fg); text-decoration: none; }
.nav a:hover { background: var(--accent-soft); }
.nav a[aria-current="page"] { background: var(--accent-soft); color: var(--accent); font-weight: 600; }
.whoami { margin-left: auto; color: var(--muted); font-size: 0.9rem; }

main { max-width: 1200px; margin: 0 auto; padding: 1.5rem 1.25rem 3rem; }
main.narrow { max-width: 760px; }
.page-head { display: flex; align-items: flex-end; justify-content: space-between; gap: 1rem; flex-wrap: wrap; margin-bottom: 1.25rem; }
footer { max-width: 1200px; margin: 0 auto; padding: 1rem 1.25rem 2rem; color: var(--muted); font-size: 0.85rem; }

/* Cards and stats */
.card { background: var(--surface); border: 1px solid var(--border); border-radius: var(--radius); box-shadow: var(--shadow); padding: 1.25rem; margin-bottom: 1.25rem; }
.card > h2:first-child, .card > h3:first-child { margin-top: 0; }
.stats { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 0.75rem; margin-bottom: 1.25rem; }
.stat { background: var(--surface); border: 1px solid var(--border); border-radius: var(--radius); padding: 0.9rem 1rem; text-decoration: none; color: var(--fg); display: block; box-shadow: var(--shadow); }
.stat:hover { border-color: var(--accent); }
.stat-value { font-size: 1.8rem; font-weight: 700; line-height: 1.1; display: block; }
.stat-label { color: var(--muted); font-size: 0.9rem; }
.stat.ok .stat-value { color: var(--ok); } .stat.warn .stat-value { color: var(--warn); } .stat.bad .stat-value { color: var(--bad); }
.grid-2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 1.25rem; }

/* Badges and banners */
.badge { display: inline-block; padding: 0.1rem 0.55rem; border-radius: 999px; font-size: 0.8rem; font-weight: 600; white-space: nowrap; background: var(--info-bg); color: var(--info); }
.badge.ok { background: var(--ok-bg); color: var(--ok); }
.badge.warn { background: var(--warn-bg); color: var(--warn); }
.badge.bad { background: var(--bad-bg); color: var(--bad); }
.banner { border-radius: var(--radius); padding: 0.9rem 1.1rem; margin: 0 0 1.25rem; border: 1px solid var(--border); background: var(--info-bg); }
.banner strong:first-child { display: block; font-size: 1.05rem; }
.banner.ok { background: var(--ok-bg); border-color: var(--ok); }
.banner.warn { background: var(--warn-bg); border-color: var(--warn); }
.banner.bad { background: var(--bad-bg); border-color: var(--bad); }

/* Description lists */
dl.fields { display: grid; grid-template-columns: minmax(9rem, max-content) 1fr; gap: 0.4rem 1.25rem; margin: 0; }
dl.fields dt { color: var(--muted); }
dl.fields dd { margin: 0; overflow-wrap: anywhere; }

/* Forms */
form.stack { display: grid; gap: 1rem; max-width: 560px; }
.field label, .field legend { display: block; font-weight: 600; margin-bottom: 0.3rem; }
.field .hint { color: var(--muted); font-size: 0.875rem; margin: 0.25rem 0 0; }
fieldset.field { border: 0; padding: 0; margin: 0; }
input[type="text"], input[type="password"], input[type="email"], input[type="url"], input[type="search"], select, textarea {
  width: 100%; padding: 0.55rem 0.7rem; border: 1px solid var(--border); border-radius: 6px;
  background: var(--surface); color: var(--fg); font: inherit;
}
textarea { min-height: 5rem; }
input:focus-visible, select:focus-visible, textarea:focus-visible { outline: 3px solid var(--focus); outline-offset: 1px; }
.check, .field label.check { display: flex; gap: 0.5rem; align-items: flex-start; font-weight: 400; margin: 0; }
main.narrow form.stack { max-width: none; }
.check input { margin-top: 0.3rem; width: 1.1rem; height: 1.1rem; }
.radio-row { display: flex; gap: 1.25rem; flex-wrap: wrap; }
.errors { color: var(--bad); }
.btn { display: inline-flex; align-items: center; gap: 0.4rem; padding: 0.55rem 1.05rem; border-radius: 6px; border: 1px solid var(--accent); background: var(--accent); color: var(--accent-fg); font: inherit; font-weight: 600; cursor: pointer; text-decoration: none; }
.btn:hover { filter: brightness(1.08); }
.btn.secondary { background: var(--surface); color: var(--accent); }
/* The same dark red in both schemes: white on it keeps 6.6:1. */
.btn.danger { background: #b3141f; border-color: #b3141f; color: #fff; }
.btn.big { font-size: 1.05rem; padding: 0.75rem 1.4rem; }
.btn[disabled] { opacity: 0.55; cursor: not-allowed; }
.actions { display: flex; gap: 0.6rem; flex-wrap: wrap; align-items: center; }

/* Filters */
.filters { display: grid; grid-template-columns: 2fr repeat(2, 1fr) auto; gap: 0.75rem; align-items: end; margin-bottom: 1rem; }
.filters .field label { font-size: 0.85rem; }
@media (max-width: 720px) { .filters { grid-template-columns: 1fr; } }

/* Tables: cards on narrow screens */
.table-wrap { background: var(--surface); border: 1px solid var(--border); border-radius: var(--radius); box-shadow: var(--shadow); overflow-x: auto; }
table.data { width: 100%; border-collapse: collapse; font-size: 0.92rem; }
table.data caption { text-align: left; padding: 0.75rem 1rem; color: var(--muted); }
table.data th, table.data td { padding: 0.55rem 0.8rem; text-align: left; border-bottom: 1px solid var(--border); vertical-align: top; }
table.data th { background: var(--info-bg); font-weight: 600; white-space: nowrap; }
table.data th a { color: var(--fg); text-decoration: none; }
table.data th a:hover { text-decoration: underline; }
table.data tbody tr:hover { background: var(--accent-soft); }
table.data tr:last-child td { border-bottom: 0; }
td.wrap { overflow-wrap: anywhere; max-width: 22rem; }
td.nowrap { white-space: nowrap; }
.empty { padding: 2rem; text-align: center; color: var(--muted); }
@media (max-width: 720px) {
  table.data thead { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
  table.data, table.data caption, table.data tbody, table.data tr, table.data td { display: block; width: 100%; }
  table.data tr { border-bottom: 1px solid var(--border); padding: 0.5rem 0; }
  table.data td { border: 0; padding: 0.25rem 1rem; display: grid; grid-template-columns: 7.5rem 1fr; gap: 0.75rem; max-width: none; }
  table.data td::before { content: attr(data-label); color: var(--muted); font-weight: 600; }
}
.pager { display: flex; gap: 0.75rem; align-items: center; justify-content: space-between; margin-top: 1rem; flex-wrap: wrap; }

/* Secrets shown once */
.secret { display: block; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 1.05rem; padding: 0.8rem 1rem; border: 2px dashed var(--accent); border-radius: var(--radius); background: var(--accent-soft); overflow-wrap: anywhere; user-select: all; }
.copy-row { display: flex; gap: 0.5rem; align-items: stretch; flex-wrap: wrap; }
.copy-row .secret { flex: 1 1 20rem; }

/* Steps */
ol.steps { padding-left: 1.25rem; }
ol.steps li { margin-bottom: 0.5rem; }
details.howto { border: 1px solid var(--border); border-radius: var(--radius); padding: 0.6rem 1rem; margin-bottom: 0.6rem; background: var(--surface); }
details.howto summary { cursor: pointer; font-weight: 600; }
details.howto[open] summary { margin-bottom: 0.5rem; }

/* Chart */
.chart { width: 100%; height: auto; display: block; }
.chart .bar { fill: var(--accent); }
.chart .bar.soon { fill: var(--warn); }
.chart .axis { stroke: var(--border); stroke-width: 1; }
.chart .label { fill: var(--muted); font-size: 11px; font-family: system-ui, sans-serif; }

/* Audit */
.chain { display: flex; gap: 0.5rem; align-items: center; flex-wrap: wrap; }
.details-cell summary { cursor: pointer; }
.details-cell pre { margin: 0.4rem 0 0; max-height: 24rem; }
.details-cell { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.82rem; overflow-wrap: anywhere; max-width: 28rem; }
`;
