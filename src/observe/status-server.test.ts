import assert from "node:assert/strict";
import { request } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import { isMtlsError } from "../errors.js";
import { Registry, tunnelMetrics } from "./metrics.js";
import { startStatusServer } from "./status-server.js";

function get(
  port: number,
  path: string,
  method = "GET",
): Promise<{ status: number; body: string; type: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, method, timeout: 5000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d) => {
        body += d;
      });
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, body, type: String(res.headers["content-type"] ?? "") }),
      );
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    req.end();
  });
}

describe("status server", () => {
  it("answers /healthz, /readyz, /metrics and 404", async () => {
    const registry = new Registry();
    tunnelMetrics(registry).connectionsTotal.inc({ tunnel: "t" }, 3);
    let ready = { ok: false, detail: "target 127.0.0.1:5900 refuses connections" };
    const s = await startStatusServer({
      listen: { host: "127.0.0.1", port: 0 },
      registry,
      ready: async () => ready,
    });
    try {
      const port = (s.address as AddressInfo).port;
      assert.deepEqual(await get(port, "/healthz"), {
        status: 200,
        body: "ok\n",
        type: "text/plain; charset=utf-8",
      });
      const notReady = await get(port, "/readyz");
      assert.equal(notReady.status, 503);
      assert.match(notReady.body, /refuses/);
      ready = { ok: true, detail: "listening" };
      assert.equal((await get(port, "/readyz")).status, 200);
      const metrics = await get(port, "/metrics");
      assert.equal(metrics.status, 200);
      assert.match(metrics.type, /^text\/plain; version=0\.0\.4/);
      assert.match(metrics.body, /mtls_tunnel_connections_total\{tunnel="t"\} 3/);
      assert.equal((await get(port, "/nope")).status, 404);
      assert.equal((await get(port, "/healthz", "POST")).status, 404);
    } finally {
      await s.close();
    }
  });

  it("answers 503 when the readiness check throws or hangs", async () => {
    const s = await startStatusServer({
      listen: { host: "127.0.0.1", port: 0 },
      registry: new Registry(),
      ready: () => new Promise(() => undefined),
      readyTimeoutMs: 100,
    });
    try {
      const r = await get((s.address as AddressInfo).port, "/readyz");
      assert.equal(r.status, 503);
      assert.match(r.body, /timed out/);
    } finally {
      await s.close();
    }
  });

  it("reports a port in use as one E_IO line", async () => {
    const a = await startStatusServer({
      listen: { host: "127.0.0.1", port: 0 },
      registry: new Registry(),
      ready: async () => ({ ok: true, detail: "" }),
    });
    try {
      await assert.rejects(
        startStatusServer({
          listen: { host: "127.0.0.1", port: (a.address as AddressInfo).port },
          registry: new Registry(),
          ready: async () => ({ ok: true, detail: "" }),
        }),
        (e) => isMtlsError(e, "E_IO") && /address already in use/.test(e.message),
      );
    } finally {
      await a.close();
    }
  });
});
