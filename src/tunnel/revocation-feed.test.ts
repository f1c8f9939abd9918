/**
 * Tunnels subscribed to a CA's revocation feed (`revocationFeed` in a spec, `--revocation-feed`):
 * a revocation announced on the feed closes the revoked peer's open connections within 2 s and
 * refuses its new handshakes; a feed that is down does not stop the tunnel, and says so in metrics.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import {
  type FeedServer,
  openStream,
  readyEvent,
  revokedEvent,
  startFeedServer,
} from "../../test/fixtures/feed.js";
import { createTestPki, type IssuedFiles, type TestPki } from "../../test/fixtures/pki.js";
import { until, within } from "../../test/fixtures/wait.js";
import { parseConfig } from "../config/load.js";
import { statePaths } from "../config/state.js";
import { isMtlsError } from "../errors.js";
import { type ConnectionAuditFields, createLogger, type Logger, Registry } from "../observe/index.js";
import { makeSan } from "../pki/names.js";
import { startCaServer } from "../server/serve.js";
import type { Address } from "./address.js";
import { type BuiltTunnel, buildTunnel, restartReason, type TunnelSpec } from "./build.js";
import { tunnelSpecsFromConfig } from "./from-config.js";

let pki: TestPki;
const f: Record<string, IssuedFiles> = {};
let echo: Server;
let echoAddr: Address;
const cleanups: (() => unknown)[] = [];
const local: Address = { kind: "tcp", host: "127.0.0.1", port: 0 };
const tls = (name: string) => {
  const x = f[name] as IssuedFiles;
  return { cert: x.cert, key: x.key, ca: x.ca };
};

before(async () => {
  pki = await createTestPki("mtls-tunnel-feed-");
  f.srv = await pki.issue("server", "srv", { sans: [makeSan("dns", "localhost")] });
  f.feed = await pki.issue("server", "ca-feed", { sans: [makeSan("dns", "localhost")] });
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

function captureLogs(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({
    level: "info",
    destination: { write: (s: string) => void lines.push(JSON.parse(s)) },
  });
  return { logger, lines };
}

async function metric(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const m = registry.getSingleMetric(name);
  assert.ok(m, `metric ${name}`);
  const { values } = await m.get();
  const hit = values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val));
  return hit?.value ?? Number.NaN;
}

async function feed(port = 0): Promise<FeedServer> {
  const fs = await startFeedServer(tls("feed"), port);
  cleanups.push(() => fs.close());
  return fs;
}

async function started(spec: TunnelSpec, registry = new Registry(), logger = captureLogs().logger) {
  const built: BuiltTunnel = await buildTunnel(spec, { logger, registry });
  const events: ConnectionAuditFields[] = [];
  built.tunnel.on("connection", (e: ConnectionAuditFields) => events.push(e));
  const bound = await built.start();
  cleanups.push(() => built.stop(100));
  assert.equal(bound.kind, "tcp");
  return { built, port: bound.port, events, registry };
}

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

async function open(port: number): Promise<Socket> {
  const s = connect({ host: "127.0.0.1", port });
  s.on("error", () => undefined);
  cleanups.push(() => s.destroy());
  await within(once(s, "connect"), 5000, "connect");
  assert.equal(await echoes(s, "hello"), true);
  return s;
}

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

const feedLabels = { component: "tunnel", name: "srv" };

describe("tunnel server with --revocation-feed", () => {
  it("closes an open connection within 2 s of a feed event and refuses new handshakes", async () => {
    const ca = await feed();
    const logs = captureLogs();
    const srv = await started(
      {
        mode: "server",
        name: "srv",
        listen: local,
        tls: tls("srv"),
        routes: [{ target: echoAddr, rules: [{ cn: ["alice"] }, { cn: ["bob"] }] }],
        revocationFeed: ca.url,
      },
      new Registry(),
      logs.logger,
    );
    await until(
      async () => (await metric(srv.registry, "mtls_revocation_feed_connected", feedLabels)) === 1,
      5000,
      "feed connected",
    );
    assert.equal(await metric(srv.registry, "mtls_revocation_feed_stale", feedLabels), 0);
    const contact = await metric(srv.registry, "mtls_revocation_feed_last_contact_seconds", feedLabels);
    assert.ok(contact >= 0 && contact < 5, `last contact ${contact} s ago`);
    assert.ok(logs.lines.some((l) => l.msg === "revocation feed connected" && l.feed === ca.url));

    const alicePort = await clientFor(srv.port, "alice");
    const bobPort = await clientFor(srv.port, "bob");
    const a = await open(alicePort);
    const b = await open(bobPort);
    const closed = once(a, "close");
    const t0 = Date.now();
    ca.send(`id: 1\n${revokedEvent(f.alice?.certificate.serial as string, { reason: "keyCompromise" })}`);
    await within(closed, 2000, "revoked connection closed");
    const took = Date.now() - t0;
    assert.ok(took < 2000, `${took} ms`);
    await until(() => srv.events.length > 0, 2000, "audit");
    assert.equal(srv.events[0]?.reason, "revoked");
    assert.match(String(srv.events[0]?.detail), /feed:https:\/\/localhost/);
    // Bob's connection is untouched; a new one of Alice's is refused, Bob's still passes.
    assert.equal(await echoes(b, "still"), true);
    assert.equal(await tryNew(alicePort), false);
    await until(() => srv.events.length > 1, 2000, "second audit");
    assert.equal(srv.events[1]?.reason, "revoked");
    assert.equal(srv.events[1]?.allowed, false);
    assert.equal(await tryNew(bobPort), true);
    assert.equal(await metric(srv.registry, "mtls_tunnel_revocations_closed_total", { tunnel: "srv" }), 1);
    assert.equal(await metric(srv.registry, "mtls_revocation_feed_revocations_total", feedLabels), 1);
  });

  it("starts while the feed is down (stale in metrics, one log line), then connects when it comes", async () => {
    const gone = await feed();
    const port = gone.port;
    await gone.close();
    const logs = captureLogs();
    const srv = await started(
      {
        mode: "server",
        name: "srv",
        listen: local,
        tls: tls("srv"),
        routes: [{ target: echoAddr, rules: [{ cn: ["alice"] }] }],
        crl: [],
        revocationFeed: `https://localhost:${port}`,
      },
      new Registry(),
      logs.logger,
    );
    // Serving already: Alice gets through while the feed is down.
    const alicePort = await clientFor(srv.port, "alice");
    await open(alicePort);
    await until(
      () => logs.lines.some((l) => l.msg?.toString().startsWith("revocation feed down")),
      3000,
      "log",
    );
    assert.equal(await metric(srv.registry, "mtls_revocation_feed_connected", feedLabels), 0);
    assert.equal(await metric(srv.registry, "mtls_revocation_feed_stale", feedLabels), 1);
    assert.equal(await metric(srv.registry, "mtls_revocation_feed_last_contact_seconds", feedLabels), -1);
    // The CA comes back on that port: the tunnel connects by itself (backoff at most 10 s).
    const ca = await feed(port);
    ca.handler = (_req, res) => {
      openStream(res);
      res.write(readyEvent(0));
    };
    await until(
      async () => (await metric(srv.registry, "mtls_revocation_feed_stale", feedLabels)) === 0,
      15_000,
      "feed current",
    );
    const down = logs.lines.filter((l) => l.msg?.toString().startsWith("revocation feed down"));
    assert.equal(down.length, 1, "one line for the outage, not one per retry");
  });

  it("a bad feed URL fails the build with one E_USAGE line", async () => {
    await assert.rejects(
      buildTunnel(
        {
          mode: "server",
          listen: local,
          tls: tls("srv"),
          routes: [{ target: echoAddr, rules: [{ cn: ["alice"] }] }],
          revocationFeed: "http://ca.acme.test:8443",
        },
        { logger: captureLogs().logger, registry: new Registry() },
      ),
      (e: unknown) => isMtlsError(e, "E_USAGE") && /https/.test(e.message),
    );
  });
});

describe("tunnel client with --revocation-feed", () => {
  it("closes its connections within 2 s when the server's certificate is revoked, and refuses new ones", async () => {
    const ca = await feed();
    // Its own server certificate: revoking it on this (test) feed must not disturb the other tests.
    f.srv3 = await pki.issue("server", "srv3", { sans: [makeSan("dns", "localhost")] });
    const srv = await started({
      mode: "server",
      name: "srv3",
      listen: local,
      tls: tls("srv3"),
      routes: [{ target: echoAddr, rules: [{ cn: ["alice"] }] }],
    });
    const cli = await started({
      mode: "client",
      name: "cli-feed",
      listen: local,
      target: { kind: "tcp", host: "localhost", port: srv.port },
      tls: tls("alice"),
      revocationFeed: ca.url,
    });
    const labels = { component: "tunnel", name: "cli-feed" };
    await until(
      async () => (await metric(cli.registry, "mtls_revocation_feed_stale", labels)) === 0,
      5000,
      "feed current",
    );
    const s = await open(cli.port);
    const closed = once(s, "close");
    const t0 = Date.now();
    ca.send(`id: 1\n${revokedEvent(f.srv3?.certificate.serial as string)}`);
    await within(closed, 2000, "connection to a revoked server closed");
    assert.ok(Date.now() - t0 < 2000);
    await until(() => cli.events.length > 0, 2000, "audit");
    assert.equal(cli.events[0]?.reason, "revoked");
    assert.equal(await tryNew(cli.port), false);
  });
});

describe("against the CA service's own feed (startCaServer)", () => {
  it("a revocation made through another handle on the store closes the tunnel connection within 2 s", async () => {
    // The CA service runs on the test CA's state; pki.ca, a second handle on the same store, plays
    // the other CA node where the revocation is made.
    const server = await startCaServer({
      paths: statePaths(pki.state),
      listen: "127.0.0.1:0",
      env: { MTLS_PASSPHRASE: "t" },
      logger: captureLogs().logger,
    });
    cleanups.push(() => server.close());
    const carol = await pki.issue("client", "carol");
    f.carol = carol;
    const srv = await started({
      mode: "server",
      name: "srv",
      listen: local,
      tls: tls("srv"),
      routes: [{ target: echoAddr, rules: [{ cn: ["carol"] }] }],
      revocationFeed: server.api.url,
    });
    await until(
      async () => (await metric(srv.registry, "mtls_revocation_feed_stale", feedLabels)) === 0,
      5000,
      "feed current",
    );
    const carolPort = await clientFor(srv.port, "carol");
    const s = await open(carolPort);
    const closed = once(s, "close");
    const t0 = Date.now();
    await pki.ca.revoke([carol.certificate.serial], "keyCompromise", "test");
    await within(closed, 2000, "revoked connection closed");
    const took = Date.now() - t0;
    assert.ok(took < 2000, `${took} ms`);
    await until(() => srv.events.length > 0, 2000, "audit");
    assert.equal(srv.events[0]?.reason, "revoked");
    assert.match(String(srv.events[0]?.detail), /\[feed:https:/);
    assert.equal(await tryNew(carolPort), false);
  });
});

describe("revocation_feed in mtls.yaml", () => {
  const yaml = (feed: string) => `tunnels:
  - name: apps
    mode: server
    listen: 127.0.0.1:0
    target: 127.0.0.1:1
    cert: d.crt
    key: d.key
    ca: ca.crt
    revocation_feed: ${feed}
    allow: [{ cn: alice }]
gateways:
  - name: web
    listen: 127.0.0.1:8443
    cert: web.crt
    key: web.key
    ca: ca.crt
    revocation_feed: ${feed}
    allow: [{ ou: staff }]
    routes:
      - path: /
        upstream: http://127.0.0.1:3000
`;

  it("reaches the tunnel spec and the gateway config; a changed feed is swapped in place", () => {
    const cfg = parseConfig(yaml("https://ca.acme.test:8443"), { dir: "/etc/mtls", env: {} });
    const [apps] = tunnelSpecsFromConfig(cfg);
    assert.equal(apps?.revocationFeed, "https://ca.acme.test:8443");
    assert.equal(cfg.gateways?.[0]?.revocationFeed, "https://ca.acme.test:8443");
    const [other] = tunnelSpecsFromConfig(
      parseConfig(yaml("https://ca2.acme.test"), { dir: "/etc/mtls", env: {} }),
    );
    assert.ok(apps && other);
    assert.equal(restartReason(apps, other), undefined);
  });

  it("refuses a value that is not an http(s) URL, saying where", () => {
    assert.throws(
      () => parseConfig(yaml("ca.acme.test"), { dir: "/etc/mtls", env: {} }),
      /tunnels\[0\]\.revocation_feed: expected an https:\/\/ URL/,
    );
  });
});
