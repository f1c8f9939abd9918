import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { expiryChart } from "./chart.js";

const NOW = new Date("2030-01-10T15:00:00Z");

describe("expiry chart", () => {
  it("draws one bar per day with expiries, at that day's position, with its count", () => {
    const svg = expiryChart(
      [
        { day: "2030-01-10", count: 2 },
        { day: "2030-01-12", count: 0 },
        { day: "2030-02-09", count: 4 },
        { day: "2030-06-01", count: 9 }, // beyond 90 days: not drawn
      ],
      NOW,
      90,
    ).text;
    const bars = [...svg.matchAll(/<rect class="bar( soon)?" x="([\d.]+)"[^>]*><title>([^<]+)<\/title>/g)];
    assert.deepEqual(
      bars.map((b) => b[3]),
      ["2030-01-10: 2 expiring", "2030-02-09: 4 expiring"],
    );
    assert.equal(bars[0]?.[1], " soon", "within 7 days: the warning colour");
    assert.equal(bars[1]?.[1], undefined);
    assert.ok(Number(bars[1]?.[2]) > Number(bars[0]?.[2]));
    assert.match(svg, /6 certificates expire in the next 90 days; the busiest day is 2030-02-09 with 4\./);
    assert.match(svg, /role="img" aria-labelledby="chart-title chart-desc"/);
    assert.doesNotMatch(svg, /style=/);
  });

  it("says so when nothing expires", () => {
    const svg = expiryChart([], NOW).text;
    assert.doesNotMatch(svg, /<rect/);
    assert.match(svg, /No certificate expires in the next 90 days\./);
  });
});
