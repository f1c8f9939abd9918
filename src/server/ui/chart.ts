import { type Html, html } from "./html.js";

const DAY = 86_400_000;
const W = 900;
const H = 220;
const PAD = { left: 36, right: 8, top: 12, bottom: 28 };

/**
 * Expiries per day over the next `days` days as an inline SVG bar chart: drawn on the server from
 * numbers only (no script, no inline style: the CSP forbids both), one bar per day with a <title>
 * for the exact count, and a sentence that says the same for screen readers and text browsers.
 */
export function expiryChart(perDay: { day: string; count: number }[], now: Date, days = 90): Html {
  const start = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  const counts = new Array<number>(days).fill(0);
  for (const { day, count } of perDay) {
    const i = Math.floor((Date.parse(`${day}T00:00:00Z`) - start) / DAY);
    if (i >= 0 && i < days) counts[i] = (counts[i] ?? 0) + count;
  }
  const total = counts.reduce((a, b) => a + b, 0);
  const max = Math.max(1, ...counts);
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const step = plotW / days;
  const barW = Math.max(1, step - 2);
  const dayText = (i: number) => new Date(start + i * DAY).toISOString().slice(0, 10);
  const bars = counts.map((n, i) => {
    if (n === 0) return "";
    const h = Math.max(2, (n / max) * plotH);
    const x = PAD.left + i * step + 1;
    const y = PAD.top + plotH - h;
    return html`<rect class="bar${i < 7 ? " soon" : ""}" x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${barW.toFixed(1)}" height="${h.toFixed(1)}"><title>${dayText(i)}: ${n} expiring</title></rect>`;
  });
  const ticks = [0, 30, 60, days].filter((d, i, a) => d <= days && a.indexOf(d) === i);
  const busiest = counts.indexOf(Math.max(...counts));
  const summary =
    total === 0
      ? `No certificate expires in the next ${days} days.`
      : `${total} certificate${total === 1 ? "" : "s"} expire in the next ${days} days; the busiest day is ${dayText(busiest)} with ${counts[busiest]}.`;
  return html`<figure class="chart-figure">
<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">
<title id="chart-title">Certificates expiring per day, next ${days} days</title>
<desc id="chart-desc">${summary}</desc>
<line class="axis" x1="${PAD.left}" y1="${PAD.top + plotH}" x2="${W - PAD.right}" y2="${PAD.top + plotH}"/>
<line class="axis" x1="${PAD.left}" y1="${PAD.top}" x2="${PAD.left}" y2="${PAD.top + plotH}"/>
<text class="label" x="${PAD.left - 6}" y="${PAD.top + 10}" text-anchor="end">${max}</text>
<text class="label" x="${PAD.left - 6}" y="${PAD.top + plotH}" text-anchor="end">0</text>
${ticks.map(
  (d) =>
    html`<text class="label" x="${(PAD.left + Math.min(d, days - 0.5) * step).toFixed(1)}" y="${H - 8}" text-anchor="${d === 0 ? "start" : d === days ? "end" : "middle"}">${d === 0 ? "today" : `+${d}d`}</text>`,
)}
${bars}
</svg>
<figcaption class="muted">${summary} Amber bars: within 7 days.</figcaption>
</figure>`;
}
