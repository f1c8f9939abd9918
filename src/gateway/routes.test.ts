import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { isMtlsError } from "../errors.js";
import {
  compileRoutes,
  hostOf,
  matchRoute,
  normalizeTarget,
  parseRouteFlag,
  prefixMatches,
  upstreamPath,
} from "./routes.js";

const defaults = { mode: "require" as const, rules: [{ uri: ["spiffe://acme.test/user/*"] }] };

describe("parseRouteFlag", () => {
  it("reads host, path, upstream and options", () => {
    assert.deepEqual(parseRouteFlag("app.acme.test/=http://127.0.0.1:3000", defaults), {
      host: "app.acme.test",
      path: "/",
      upstream: "http://127.0.0.1:3000",
      mode: "require",
      rules: defaults.rules,
    });
    assert.deepEqual(parseRouteFlag("/api/=http://127.0.0.1:4000;mode=optional", defaults), {
      path: "/api/",
      upstream: "http://127.0.0.1:4000",
      mode: "optional",
      rules: defaults.rules,
    });
    assert.equal(parseRouteFlag("app.acme.test=http://127.0.0.1:1", defaults).path, "/");
  });

  it("takes a route's own rules instead of the defaults, with methods", () => {
    const r = parseRouteFlag(
      "/admin/=http://127.0.0.1:1;allow-cn=root;allow-ou=ops;methods=get,post",
      defaults,
    );
    assert.deepEqual(r.rules, [
      { cn: ["root"], methods: ["GET", "POST"] },
      { ou: ["ops"], methods: ["GET", "POST"] },
    ]);
    const d = parseRouteFlag("/=http://127.0.0.1:1", { ...defaults, methods: ["GET"] });
    assert.deepEqual(d.rules, [{ uri: ["spiffe://acme.test/user/*"], methods: ["GET"] }]);
    assert.deepEqual(parseRouteFlag("/=http://127.0.0.1:1;allow-all", defaults).rules, [{ all: true }]);
  });

  it("refuses what it cannot read", () => {
    assert.throws(() => parseRouteFlag("http://127.0.0.1:1", defaults), /E_USAGE|expected/);
    assert.throws(
      () => parseRouteFlag("/=http://127.0.0.1:1;mode=maybe", defaults),
      /require, optional or none/,
    );
    assert.throws(
      () => parseRouteFlag("/=http://127.0.0.1:1;allow-xyz=1", defaults),
      /unknown or empty option/,
    );
  });
});

describe("compileRoutes", () => {
  const spec = {
    path: "/",
    upstream: "http://127.0.0.1:3000",
    mode: "require" as const,
    rules: defaults.rules,
  };

  it("compiles and names routes", () => {
    const [r] = compileRoutes([{ ...spec, host: "App.Acme.Test" }]);
    assert.equal(r?.name, "app.acme.test/");
    assert.equal(r?.upstream.origin, "http://127.0.0.1:3000");
  });

  it("denies by default, keeps upstreams on loopback and refuses duplicates", () => {
    assert.throws(() => compileRoutes([{ ...spec, rules: [] }]), /deny by default/);
    assert.doesNotThrow(() => compileRoutes([{ ...spec, mode: "none", rules: [] }]));
    assert.throws(() => compileRoutes([{ ...spec, upstream: "http://10.0.0.1:80" }]), /--unsafe-upstream/);
    assert.doesNotThrow(() =>
      compileRoutes([{ ...spec, upstream: "http://10.0.0.1:80" }], { unsafeUpstream: true }),
    );
    assert.throws(
      () => compileRoutes([{ ...spec, upstream: "ftp://127.0.0.1:1" }]),
      /only http:\/\/ and https/,
    );
    assert.throws(() => compileRoutes([spec, spec]), /two routes for \*\//);
    assert.throws(() => compileRoutes([{ ...spec, path: "/a/../b" }]), /normalized/);
    assert.throws(() => compileRoutes([{ ...spec, host: "bad host" }]), /invalid host/);
    assert.throws(() => compileRoutes([]), /at least one route/);
  });
});

describe("https upstreams", () => {
  const spec = { path: "/", upstream: "https://10.0.0.1:8443", mode: "none" as const, rules: [] };

  it("may be anywhere, and carry a CA, a client certificate and a server name", () => {
    const [r] = compileRoutes([
      { ...spec, upstreamTls: { ca: "/ca.pem", cert: "/c.pem", key: "/k.pem", serverName: "api.acme.test" } },
    ]);
    assert.equal(r?.upstream.protocol, "https:");
    assert.equal(r?.upstreamTls?.serverName, "api.acme.test");
  });

  it("refuses TLS options that do not fit", () => {
    assert.throws(
      () => compileRoutes([{ ...spec, upstream: "http://127.0.0.1:1", upstreamTls: { ca: "/ca.pem" } }]),
      /need an https:\/\/ upstream/,
    );
    assert.throws(
      () => compileRoutes([{ ...spec, upstreamTls: { cert: "/c.pem" } }]),
      /and its key together/,
    );
    assert.throws(
      () =>
        compileRoutes([
          { ...spec, upstreamTls: { cert: "/c.pem", key: "/k.pem", identity: { state: "/s", name: "gw" } } },
        ]),
      /not both/,
    );
    assert.throws(() => compileRoutes([{ ...spec, upstreamTls: { serverName: "10.0.0.1" } }]), /server name/);
  });

  it("takes upstream-* options in --route, and the --upstream-* defaults on https routes only", () => {
    const defaults = {
      mode: "none" as const,
      rules: [],
      upstreamTls: { ca: "/ca.pem", cert: "/c.pem", key: "/k.pem" },
      state: "/state",
    };
    const own = parseRouteFlag(
      "/a/=https://api.acme.test:8443;upstream-identity=gw;upstream-servername=x.acme.test",
      defaults,
    );
    assert.deepEqual(own.upstreamTls, {
      ca: "/ca.pem",
      identity: { state: "/state", name: "gw" },
      serverName: "x.acme.test",
    });
    const plain = parseRouteFlag("/b/=http://127.0.0.1:3000", defaults);
    assert.equal(plain.upstreamTls, undefined);
    assert.throws(
      () => parseRouteFlag("/c/=http://127.0.0.1:3000;upstream-ca=/x.pem", defaults),
      /https:\/\//,
    );
    assert.throws(
      () => parseRouteFlag("/d/=https://h.acme.test;upstream-identity=gw", { mode: "none", rules: [] }),
      /--state/,
    );
  });
});

describe("matching", () => {
  const routes = [
    { name: "a", path: "/" },
    { name: "b", path: "/api/" },
    { name: "c", path: "/api/admin" },
    { name: "d", host: "app.acme.test", path: "/api/" },
    { name: "e", host: "*.acme.test", path: "/" },
  ];
  const m = (host: string | undefined, path: string) => matchRoute(routes, host, path)?.name;

  it("takes the longest prefix, then the most specific host", () => {
    assert.equal(m(undefined, "/x"), "a");
    assert.equal(m("other.test", "/api/x"), "b");
    assert.equal(m("other.test", "/api"), "b");
    assert.equal(m("other.test", "/apix"), "a");
    assert.equal(m("other.test", "/api/admin/users"), "c");
    assert.equal(m("other.test", "/api/administrator"), "b");
    assert.equal(m("app.acme.test", "/api/x"), "d");
    assert.equal(m("www.acme.test", "/x"), "e");
    assert.equal(m("www.acme.test", "/api/x"), "b");
    assert.equal(m("a.b.acme.test", "/x"), "a");
  });

  it("prefixMatches is segment-aware", () => {
    assert.ok(prefixMatches("/", "/anything"));
    assert.ok(prefixMatches("/api", "/api"));
    assert.ok(prefixMatches("/api", "/api/x"));
    assert.ok(!prefixMatches("/api", "/apix"));
    assert.ok(prefixMatches("/api/", "/api"));
  });

  it("hostOf drops the port and the trailing dot", () => {
    assert.equal(hostOf("App.Acme.Test:8443"), "app.acme.test");
    assert.equal(hostOf("acme.test."), "acme.test");
    assert.equal(hostOf("[::1]:443"), "::1");
    assert.equal(hostOf(undefined), undefined);
  });
});

describe("normalizeTarget", () => {
  it("resolves dot segments, encoded ones and backslashes", () => {
    assert.deepEqual(normalizeTarget("/public/../admin?x=1"), { path: "/admin", search: "?x=1" });
    assert.equal(normalizeTarget("/public/%2e%2e/admin")?.path, "/admin");
    assert.equal(normalizeTarget("/public/%2E%2E/admin")?.path, "/admin");
    assert.equal(normalizeTarget("/public\\..\\admin")?.path, "/admin");
    assert.equal(normalizeTarget("//evil.test/x")?.path, "//evil.test/x");
  });

  it("refuses targets that are not paths", () => {
    assert.equal(normalizeTarget("http://evil.test/"), undefined);
    assert.equal(normalizeTarget("*"), undefined);
    assert.equal(normalizeTarget(""), undefined);
  });
});

describe("upstreamPath", () => {
  it("keeps the path, or replaces the prefix by the upstream's base path", () => {
    assert.equal(
      upstreamPath({ path: "/api/", upstream: new URL("http://h:1") }, "/api/x", "?q"),
      "/api/x?q",
    );
    assert.equal(upstreamPath({ path: "/api/", upstream: new URL("http://h:1/v2/") }, "/api/x", ""), "/v2/x");
    assert.equal(upstreamPath({ path: "/api", upstream: new URL("http://h:1/v2") }, "/api/x", ""), "/v2/x");
    assert.equal(upstreamPath({ path: "/api", upstream: new URL("http://h:1/v2") }, "/api", "?a"), "/v2?a");
  });
});

describe("routes with an access token", () => {
  const jwksDir = mkdtempSync(join(tmpdir(), "mtls-routes-jwks-"));
  const jwks = join(jwksDir, "jwks.json");
  writeFileSync(
    jwks,
    JSON.stringify({
      keys: [
        {
          kty: "EC",
          crv: "P-256",
          x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
          y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        },
      ],
    }),
  );
  after(() => rmSync(jwksDir, { recursive: true, force: true }));

  it("reads token options from --route and builds one verifier per route", () => {
    const spec = parseRouteFlag(
      `/bound/=http://127.0.0.1:1;allow-all;token=bound;jwks=${jwks};issuer=https://as.test;audience=api`,
      defaults,
    );
    assert.deepEqual(spec.token, { bind: "certificate", jwks, issuer: "https://as.test", audience: "api" });
    const [r] = compileRoutes([spec]);
    assert.equal(r?.token?.bound, true);
    assert.equal(r?.token?.source, jwks);
    assert.equal(compileRoutes([parseRouteFlag("/x/=http://127.0.0.1:1", defaults)])[0]?.token, undefined);
    const bearer = parseRouteFlag(`/b/=http://127.0.0.1:1;mode=none;token=bearer;jwks=${jwks}`, defaults);
    assert.equal(compileRoutes([bearer])[0]?.token?.bound, false);
  });

  it("a bound token needs mode require; token options need token= and a readable JWKS", () => {
    for (const mode of ["optional", "none"]) {
      assert.throws(
        () =>
          compileRoutes([
            parseRouteFlag(`/b/=http://127.0.0.1:1;mode=${mode};token=bound;jwks=${jwks}`, defaults),
          ]),
        (e) =>
          isMtlsError(e, "E_USAGE") &&
          /route \*\/b\/: a certificate-bound token \(RFC 8705\) needs mode require/.test(e.message),
      );
    }
    assert.throws(
      () => parseRouteFlag(`/b/=http://127.0.0.1:1;jwks=${jwks}`, defaults),
      /jwks goes with token=bound/,
    );
    assert.throws(() => parseRouteFlag("/b/=http://127.0.0.1:1;token=bound", defaults), /needs jwks=/);
    assert.throws(
      () =>
        compileRoutes([parseRouteFlag(`/b/=http://127.0.0.1:1;token=bound;jwks=${jwks}.missing`, defaults)]),
      (e) => isMtlsError(e, "E_IO") && /route \*\/b\/: cannot read the JWKS file/.test(e.message),
    );
    assert.throws(
      () =>
        compileRoutes([
          parseRouteFlag(`/b/=http://127.0.0.1:1;token=bound;jwks=${jwks};algorithms=HS256`, defaults),
        ]),
      /never accepted/,
    );
  });
});
