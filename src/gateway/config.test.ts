import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseConfig } from "../config/index.js";

const base = `gateways:
  - name: web
    listen: 127.0.0.1:8443
    cert: web.crt
    key: web.key
    ca: ca.crt
    allow:
      - ou: staff
        methods: [get, HEAD]
    routes:
      - path: /
        upstream: http://127.0.0.1:3000
`;

describe("gateways: in mtls.yaml", () => {
  it("parses a gateway-only file, with paths relative to the file and rules with methods", () => {
    const cfg = parseConfig(base, { dir: "/etc/mtls" });
    assert.deepEqual(cfg.tunnels, []);
    const g = cfg.gateways?.[0];
    assert.ok(g);
    assert.deepEqual(g.tls, { cert: "/etc/mtls/web.crt", key: "/etc/mtls/web.key", ca: "/etc/mtls/ca.crt" });
    assert.equal(g.identityHeaders, "rfc9440");
    assert.equal(g.http2, true);
    assert.deepEqual(g.routes, [
      {
        path: "gateways[0].routes[0]",
        prefix: "/",
        upstream: "http://127.0.0.1:3000",
        mode: "require",
        allow: [{ ou: ["staff"], methods: ["GET", "HEAD"] }],
      },
    ]);
  });

  it("says what is wrong, and where", () => {
    const bad = (text: string, pattern: RegExp) => assert.throws(() => parseConfig(text), pattern);
    bad(base.replace("upstream:", "upstrem:"), /gateways\[0\]\.routes\[0\]: unknown key "upstrem"/);
    bad(
      base.replace("    routes:", "    mode: maybe\n    routes:"),
      /gateways\[0\]\.mode: must be require, optional or none/,
    );
    bad(
      base.replace(/ {4}allow:\n.*\n.*\n/, ""),
      /gateways\[0\]\.routes\[0\]: missing key "allow" \(deny by default/,
    );
    bad(
      `${base}  - name: web\n    listen: :1\n    identity: x\n    routes: []\n`,
      /give at least one route \(routes:\) or relay|already the name/,
    );
    bad("log:\n  level: info\n", /missing key "tunnels"/);
  });
});
