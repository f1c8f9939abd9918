import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createRegistry, Registry, tunnelMetrics } from "./metrics.js";

describe("metrics", () => {
  it("registers the tunnel metrics once per registry and computes expiry at scrape time", async () => {
    let now = new Date("2030-01-01T00:00:00Z");
    const registry = new Registry();
    const m = tunnelMetrics(registry, () => now);
    assert.equal(tunnelMetrics(registry), m);
    const stop = m.watchCertificate("t", "leaf", () => new Date("2030-01-02T00:00:00Z"));
    const expiry = async () =>
      (await registry.getSingleMetric("mtls_certificate_expiry_seconds")?.get())?.values;
    assert.equal((await expiry())?.[0]?.value, 86_400);
    now = new Date("2030-01-01T12:00:00Z");
    assert.equal((await expiry())?.[0]?.value, 43_200);
    stop();
    assert.deepEqual(await expiry(), []);
  });

  it("a process registry carries the default process metrics", async () => {
    const text = await createRegistry().metrics();
    assert.match(text, /process_cpu_user_seconds_total/);
  });
});
