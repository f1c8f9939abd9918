/**
 * Tunnels from specs (buildTunnel), specs from mtls.yaml (tunnelSpecsFromConfig), changes put in
 * force on running tunnels (BuiltTunnel.prepare/apply) and many tunnels at once (TunnelGroup).
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { createTestPki, type IssuedFiles, type TestPki } from "../../test/fixtures/pki.js";
import { until, within } from "../../test/fixtures/wait.js";
import { parseConfig } from "../config/load.js";
import { statePaths } from "../config/state.js";
import { isMtlsError } from "../errors.js";
import { type ConnectionAuditFields, Registry, silentLogger } from "../observe/index.js";
import { makeSan } from "../pki/names.js";
import type { Address } from "./address.js";
import {
  type BuiltTunnel,
  buildTunnel,
  restartReason,
  type ServerTunnelSpec,
  type TunnelSpec,
} from "./build.js";
import { statusAddressFromConfig, tunnelSpecsFromConfig } from "./from-config.js";
import { TunnelGroup } from "./group.js";

let pki: TestPki;
const f: Record<string, IssuedFiles> = {};
let echo: Server;
let echoAddr: Address;
const cleanups: (() => unknown)[] = [];
const deps = () => ({ logger: silentLogger(), registry: new Registry() });
const local: Address = { kind: "tcp", host: "127.0.0.1", port: 0 };
const tls = (name: string) => {
  const x = f[name] as IssuedFiles;
  return { cert: x.cert, key: x.key, ca: x.ca };
};

before(async () => {
  pki = await createTestPki("mtls-build-");
  f.srv = await pki.issue("server", "srv", { sans: [makeSan("dns", "localhost")] });
  f.srv2 = await pki.issue("server", "srv2", { sans: [makeSan("dns", "localhost")] });
  f.alice = await pki.issue("client", "alice");
  f.bob = await pki.issue("client", "bob");
  echo = createServer((s) => {
    s.on("error", () => undefined);
    s.pipe(s);
  });
  echo.listen(0, "127.0.0.1");
  await once(echo, "listening");
  echoAddr = { kind: "tcp", host: "127.0.0.1", port: (echo.address() as AddressInfo).port };
});

after(async () => {
  for (const c of cleanups.reverse()) await c();
  echo?.close();
  await pki?.close();
});

async function started(
  spec: TunnelSpec,
): Promise<{ built: BuiltTunnel; port: number; events: ConnectionAuditFields[] }> {
  const built = await buildTunnel(spec, deps());
  const events: ConnectionAuditFields[] = [];
  built.tunnel.on("connection", (e: ConnectionAuditFields) => events.push(e));
  const bound = await built.start();
  cleanups.push(() => built.stop(100));
  assert.equal(bound.kind, "tcp");
  return { built, port: bound.port, events };
}

const serverSpec = (over: Partial<ServerTunnelSpec> = {}): ServerTunnelSpec => ({
  mode: "server",
  name: "srv",
  listen: local,
  tls: tls("srv"),
  routes: [{ target: echoAddr, rules: [{ cn: ["alice"] }, { cn: ["bob"] }] }],
  ...over,
});

/** A client tunnel for `who` to the server tunnel on `port`; resolves with its local port. */
async function clientFor(port: number, who: string): Promise<number> {
  const c = await started({
    mode: "client",
    name: `cli-${who}`,
    listen: local,
    target: { kind: "tcp", host: "localhost", port },
    tls: tls(who),
  });
  return c.port;
}

/** Opens a plain connection through a client tunnel and checks that it echoes. */
async function open(port: number): Promise<Socket> {
  const s = connect({ host: "127.0.0.1", port });
  s.on("error", () => undefined);
  cleanups.push(() => s.destroy());
  await within(once(s, "connect"), 5000, "connect");
  assert.equal(await echoes(s, "hello"), true);
  return s;
}

/** Does `s` echo `word`? false when it closes instead. */
function echoes(s: Socket, word: string): Promise<boolean> {
  const answer = new Promise<boolean>((resolve) => {
    let got = "";
    const onData = (d: Buffer) => {
      got += d.toString();
      if (got.length >= word.length) {
        s.off("data", onData);
        resolve(got === word);
      }
    };
    s.on("data", onData);
    s.once("close", () => resolve(false));
  });
  s.write(word);
  return within(answer, 5000, `echo of ${word}`);
}

/** A new connection through a client tunnel: true when it echoes, false when it is closed. */
async function tryNew(port: number): Promise<boolean> {
  const s = connect({ host: "127.0.0.1", port });
  s.on("error", () => undefined);
  try {
    await within(once(s, "connect"), 5000, "connect");
    return await echoes(s, "new");
  } finally {
    s.destroy();
  }
}

/** The CN of the certificate a server tunnel presents. */
async function presentedCn(port: number): Promise<string | undefined> {
  const s = tlsConnect({
    host: "127.0.0.1",
    port,
    servername: "localhost",
    ca: readFileSync(tls("alice").ca),
    cert: readFileSync(tls("alice").cert),
    key: readFileSync(tls("alice").key),
  });
  s.on("error", () => undefined);
  try {
    await within(once(s, "secureConnect"), 5000, "TLS connect");
    return s.getPeerX509Certificate()?.subject.match(/CN=([^\n]+)/)?.[1];
  } finally {
    s.destroy();
  }
}

describe("specs from mtls.yaml", () => {
  const yaml = `status: 127.0.0.1:0
tunnels:
  - name: apps
    mode: server
    listen: 127.0.0.1:0
    target: unix:/run/default.sock
    cert: d.crt
    key: d.key
    ca: ca.crt
    crl: ca.crl
    allow: [{ cn: alice, ou: ops }]
    sni:
      - { server_name: a.acme.test, target: 127.0.0.1:1, allow: [{ all: true }], cert: a.crt, key: a.key }
  - name: c
    mode: client
    listen: 127.0.0.1:0
    target: a.acme.test:8443
    identity: alice
    verify_dns: a.acme.test
`;
  it("parses addresses, keeps rules and files, puts SNI routes before the default route", () => {
    const config = parseConfig(yaml, { source: "mtls.yaml", dir: "/etc/mtls", env: {} });
    const [apps, c] = tunnelSpecsFromConfig(config);
    assert.deepEqual(statusAddressFromConfig(config), { kind: "tcp", host: "127.0.0.1", port: 0 });
    assert.equal(apps?.mode, "server");
    assert.deepEqual(apps?.listen, local);
    assert.deepEqual(apps?.crl, ["/etc/mtls/ca.crl"]);
    assert.deepEqual(apps?.mode === "server" && apps.routes, [
      {
        serverName: "a.acme.test",
        target: { kind: "tcp", host: "127.0.0.1", port: 1 },
        rules: [{ all: true }],
        tls: { cert: "/etc/mtls/a.crt", key: "/etc/mtls/a.key", ca: "/etc/mtls/ca.crt" },
      },
      { target: { kind: "unix", path: "/run/default.sock" }, rules: [{ cn: ["alice"], ou: ["ops"] }] },
    ]);
    assert.equal(c?.mode, "client");
    assert.deepEqual(c?.mode === "client" && [c.target, c.tls, c.verifyDns, c.idleTimeoutMs], [
      { kind: "tcp", host: "a.acme.test", port: 8443 },
      { state: "/etc/mtls/.mtls", identity: "alice" },
      ["a.acme.test"],
      12 * 3_600_000,
    ]);
  });

  it("protocol ftp reaches the routes (per SNI route) and the client", () => {
    const config = parseConfig(
      `tunnels:
  - name: s
    mode: server
    protocol: ftp
    listen: :2121
    target: 127.0.0.1:21
    cert: d.crt
    key: d.key
    ca: ca.crt
    allow: [{ all: true }]
    sni: [{ server_name: web.acme.test, target: 127.0.0.1:80, protocol: tcp }]
  - name: c
    mode: client
    protocol: ftp
    listen: 127.0.0.1:2121
    target: localhost:2121
    identity: alice
`,
      { source: "mtls.yaml", dir: "/etc/mtls", env: {} },
    );
    const [server, client] = tunnelSpecsFromConfig(config);
    assert.deepEqual(
      server?.mode === "server" && server.routes.map((r) => [r.serverName ?? "*", r.protocol ?? "tcp"]),
      [
        ["web.acme.test", "tcp"],
        ["*", "ftp"],
      ],
    );
    assert.equal(client?.mode === "client" && client.protocol, "ftp");
  });

  const base = `tunnels:
  - name: vnc
    mode: server
    listen: 0.0.0.0:5901
    target: 127.0.0.1:5900
    cert: vnc.crt
    key: vnc.key
    ca: ca.crt
    allow:
      - cn: alice
`;
  const client = `  - name: c
    mode: client
    listen: 127.0.0.1:5900
    target: vnc.acme.test:5901
    identity: alice
`;
  const cases: [string, string, string][] = [
    [
      "a bad address",
      base.replace("0.0.0.0:5901", "0.0.0.0:99999"),
      'mtls.yaml: tunnels[0].listen: invalid address "0.0.0.0:99999": the port must be between 1 and 65535 (examples: 127.0.0.1:5900, [::1]:5900, :5900, unix:/run/app.sock)',
    ],
    [
      "a plain-text target off this machine",
      base.replace("127.0.0.1:5900", "10.0.0.5:80"),
      "mtls.yaml: tunnels[0].target: 10.0.0.5:80 is neither loopback nor a Unix socket: its plain-text leg would cross a network (set unsafe_target: true if that is intended)",
    ],
    [
      "a bad URI pattern",
      base.replace("cn: alice", "uri: 'spiffe://acme.test/a*b'"),
      'mtls.yaml: tunnels[0].allow[0].uri: "spiffe://acme.test/a*b": "*" must be a whole path segment ("*" for one segment, a trailing "/**" for one or more)',
    ],
    [
      "a bad fingerprint",
      base.replace("cn: alice", "fingerprint: abc"),
      'mtls.yaml: tunnels[0].allow[0].fingerprint: fingerprint "abc" is not a SHA-256 fingerprint (64 hex digits, colons allowed)',
    ],
    [
      "a client listening for others",
      base + client.replace("127.0.0.1:5900", "0.0.0.0:5900"),
      "mtls.yaml: tunnels[1].listen: 0.0.0.0:5900 is not a loopback address: anyone who reaches it would use this client's certificate (set unsafe_listen: true if that is intended)",
    ],
    [
      "two tunnels on one address",
      base +
        client
          .replace("127.0.0.1:5900", "0.0.0.0:5901")
          .replace("identity", "unsafe_listen: true\n    identity"),
      "mtls.yaml: tunnels[1].listen: tunnels[0] listens on 0.0.0.0:5901 already",
    ],
    [
      "a bad server name",
      `${base}    sni:\n      - { server_name: "a b", target: 127.0.0.1:1 }\n`,
      'mtls.yaml: tunnels[0].sni[0].server_name: "a b" is not a server name (e.g. vnc.acme.test or *.acme.test)',
    ],
    [
      "FTP to a Unix socket",
      `${base}    protocol: ftp\n`.replace("127.0.0.1:5900", "unix:/run/ftp.sock"),
      "mtls.yaml: tunnels[0].target: protocol ftp needs a TCP target (host:port): FTP data ports are TCP ports",
    ],
    [
      "a proxy that is not http",
      `${base + client}    proxy: ftp://proxy:21\n`,
      "mtls.yaml: tunnels[1].proxy: only http:// proxies (HTTP CONNECT) are supported",
    ],
  ];
  for (const [what, text, line] of cases) {
    it(`error: ${what}`, () => {
      const config = parseConfig(text, { source: "mtls.yaml", dir: "/etc/mtls", env: {} });
      assert.throws(
        () => tunnelSpecsFromConfig(config),
        (err) => isMtlsError(err, "E_BAD_INPUT") && err.message === line,
      );
    });
  }
  it("error: a bad status address", () => {
    const config = parseConfig(`status: nowhere\n${base}`, { source: "mtls.yaml", dir: "/", env: {} });
    assert.throws(() => statusAddressFromConfig(config), {
      message:
        'mtls.yaml: status: invalid address "nowhere": expected host:port (examples: 127.0.0.1:5900, [::1]:5900, :5900, unix:/run/app.sock)',
    });
  });
});

describe("restartReason", () => {
  it("names what a running tunnel cannot take in place", () => {
    const a = serverSpec();
    assert.equal(
      restartReason(a, serverSpec({ routes: [{ target: echoAddr, rules: [{ all: true }] }] })),
      undefined,
    );
    assert.equal(
      restartReason(a, serverSpec({ tls: tls("srv2"), crl: ["x.crl"], shutdownTimeoutMs: 1 })),
      undefined,
    );
    assert.equal(
      restartReason(a, serverSpec({ listen: { kind: "tcp", host: "127.0.0.1", port: 1 } })),
      "listen changed",
    );
    assert.equal(
      restartReason(a, serverSpec({ idleTimeoutMs: 5, proxyProtocol: true })),
      "idleTimeoutMs, proxyProtocol changed",
    );
    const c: TunnelSpec = { mode: "client", name: "srv", listen: local, target: echoAddr, tls: tls("alice") };
    assert.equal(restartReason(a, c), "mode, target changed");
  });
});

describe("a running tunnel takes a new spec in place", () => {
  it("new rules refuse new connections; the open one keeps echoing", async () => {
    const srv = await started(serverSpec());
    const port = await clientFor(srv.port, "alice");
    const s = await open(port);
    const next = serverSpec({ routes: [{ target: echoAddr, rules: [{ cn: ["bob"] }] }] });
    const prepared = await srv.built.prepare(next);
    assert.deepEqual(prepared.changes, ["routes"]);
    assert.equal(await tryNew(port), true, "nothing changes before apply()");
    prepared.apply();
    assert.equal(await tryNew(port), false, "alice is refused now");
    assert.equal(await echoes(s, "still"), true, "the open connection keeps going");
    assert.equal(srv.built.spec, next);
    await until(() => srv.events.some((e) => e.reason === "not_allowed"), 2000, "refusal audited");
  });

  it("a new certificate for new connections", async () => {
    const srv = await started(serverSpec());
    const port = await clientFor(srv.port, "bob");
    const s = await open(port);
    assert.equal(await presentedCn(srv.port), "srv");
    const prepared = await srv.built.prepare(serverSpec({ tls: tls("srv2") }));
    assert.deepEqual(prepared.changes, ["certificate"]);
    prepared.apply();
    assert.equal(await presentedCn(srv.port), "srv2");
    assert.equal(await echoes(s, "still"), true);
    assert.equal(await tryNew(port), true);
  });

  it("CRL sources added in place cut an open connection when its certificate is revoked", async () => {
    const carol = await pki.issue("client", "carol");
    f.carol = carol;
    const srv = await started(serverSpec({ routes: [{ target: echoAddr, rules: [{ all: true }] }] }));
    const port = await clientFor(srv.port, "carol");
    const s = await open(port);
    const prepared = await srv.built.prepare(
      serverSpec({
        routes: [{ target: echoAddr, rules: [{ all: true }] }],
        crl: [statePaths(pki.state).crl],
      }),
    );
    assert.deepEqual(prepared.changes, ["revocation"]);
    prepared.apply();
    assert.equal(await echoes(s, "good"), true, "not revoked yet");
    const closed = once(s, "close");
    await pki.ca.revoke([carol.certificate.serial], "keyCompromise", "test");
    await within(closed, 3000, "revoked connection closed");
    await until(() => srv.events.some((e) => e.reason === "revoked"), 2000, "audit");
  });

  it("a spec that cannot be prepared changes nothing; one that needs a restart is refused", async () => {
    const srv = await started(serverSpec());
    const port = await clientFor(srv.port, "alice");
    await assert.rejects(
      srv.built.prepare(
        serverSpec({
          routes: [{ target: echoAddr, rules: [{ cn: ["bob"] }] }],
          tls: { ...tls("srv"), cert: "/nonexistent.crt" },
        }),
      ),
      { code: "E_NOT_FOUND" },
    );
    await assert.rejects(
      srv.built.prepare(serverSpec({ routes: [{ target: echoAddr, rules: [{ uri: ["nope"] }] }] })),
      { code: "E_USAGE" },
    );
    await assert.rejects(
      srv.built.prepare(serverSpec({ idleTimeoutMs: 1000 })),
      /needs a restart: idleTimeoutMs changed/,
    );
    assert.equal(await tryNew(port), true);
  });
});

describe("TunnelGroup", () => {
  it("starts, updates in place, restarts, stops and refuses as a whole", async () => {
    const listening: string[] = [];
    const group = new TunnelGroup({
      logger: silentLogger(),
      registry: new Registry(),
      onListening: (t) => listening.push(t.name),
    });
    cleanups.push(() => group.stop(100));
    const a = serverSpec({ name: "a" });
    const b = serverSpec({ name: "b" });
    const r1 = await group.apply([a, b]);
    assert.deepEqual(r1, {
      started: ["a", "b"],
      updated: [],
      unchanged: [],
      restarted: [],
      stopped: [],
      failed: [],
    });
    assert.deepEqual(listening, ["a", "b"]);
    const bound = (name: string) => {
      const a = group.get(name)?.tunnel.address();
      assert.ok(a?.kind === "tcp", name);
      return a;
    };
    const portA = bound("a").port;
    const portB = bound("b").port;
    const viaA = await clientFor(portA, "alice");
    const openA = await open(viaA);
    const viaB = await clientFor(portB, "alice");
    const openB = await open(viaB);
    assert.equal((await group.ready()).ok, true);
    assert.match((await group.ready()).detail, /^a: ready: listening on .*\nb: ready: /);

    // A bad spec anywhere: nothing changes.
    await assert.rejects(
      group.apply([
        serverSpec({ name: "a", routes: [{ target: echoAddr, rules: [{ cn: ["bob"] }] }] }),
        serverSpec({ name: "c", tls: { ...tls("srv"), key: "/nope.key" } }),
      ]),
      /^MtlsError: tunnel c: key file not found: \/nope\.key$/,
    );
    assert.equal(await tryNew(viaA), true);
    assert.deepEqual(
      group.tunnels.map((t) => t.name),
      ["a", "b"],
    );

    // a: new rules in place; b: removed (drains); c: new; a's open connection survives.
    const aNext = serverSpec({ name: "a", routes: [{ target: echoAddr, rules: [{ cn: ["bob"] }] }] });
    const r2 = await group.apply([aNext, serverSpec({ name: "c" })]);
    assert.deepEqual(r2, {
      started: ["c"],
      updated: ["a"],
      unchanged: [],
      restarted: [],
      stopped: ["b"],
      failed: [],
    });
    assert.equal(await tryNew(viaA), false);
    assert.equal(await echoes(openA, "kept"), true);
    assert.equal(await tryNew(viaB), false, "b no longer accepts");
    assert.equal(await echoes(openB, "draining"), true, "b's open connection drains");

    // a on another address: restarted.
    const r3 = await group.apply([
      serverSpec({ name: "a", listen: { kind: "tcp", host: "127.0.0.2", port: 0 } }),
      serverSpec({ name: "c" }),
    ]);
    assert.deepEqual(r3, {
      started: [],
      updated: [],
      unchanged: ["c"],
      restarted: ["a"],
      stopped: [],
      failed: [],
    });
    assert.equal(bound("a").host, "127.0.0.2");
    assert.equal(await echoes(openA, "old a drains"), true);

    await group.stop(0);
    await within(once(openA, "close"), 3000, "cut at stop");
    assert.deepEqual(group.tunnels, []);
  });
});
