import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type TLSSocket, connect as tlsConnect } from "node:tls";
import { until, within } from "../../test/fixtures/wait.js";
import { type CertificateAuthority, initCa, issueToFiles, openCa } from "../ca/index.js";
import { type StatePaths, statePaths } from "../config/state.js";
import { type ConnectionAuditFields, createLogger, type Logger, Registry } from "../observe/index.js";
import { makeSan } from "../pki/names.js";
import { compilePolicy, rulesFromFlags } from "../policy/index.js";
import {
  createRevocationChecker,
  loadTlsMaterial,
  type RevocationChecker,
  type TlsFiles,
  type TlsMaterial,
} from "../tls/index.js";
import type { Address } from "./address.js";
import { TunnelClient, type TunnelClientOptions } from "./client.js";
import { PP2_CLIENT, parseProxyHeaderV2 } from "./proxy-protocol.js";
import { type Route, TunnelServer, type TunnelServerOptions } from "./server.js";

// ---------------------------------------------------------------------------------------------
// Fixtures: a CA made with the library, certificates issued to files, an echo service.

let dir: string;
let paths: StatePaths;
let ca: CertificateAuthority;
const files: Record<string, TlsFiles & { serial: string }> = {};
let echo: { server: Server; address: Address };
const cleanups: (() => unknown)[] = [];

async function issue(profile: "server" | "client", name: string, sans = [] as ReturnType<typeof makeSan>[]) {
  const out = join(dir, "certs");
  const { issued, files: f } = await issueToFiles(
    ca,
    { profile, name, sans, actor: "test" },
    { outDir: out, force: true },
  );
  files[name] = { cert: f.cert, key: f.key as string, ca: f.ca, serial: issued.certificate.serial };
  return files[name];
}

/** An echo service: answers every byte, and on FIN waits a little, says "bye" and closes its side. */
async function startEcho(): Promise<{ server: Server; address: Address }> {
  const server = createServer({ allowHalfOpen: true }, (s) => {
    s.on("error", () => undefined);
    s.pipe(s, { end: false });
    s.on("end", () => setTimeout(() => s.end("bye"), 50));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    server,
    address: { kind: "tcp", host: "127.0.0.1", port: (server.address() as AddressInfo).port },
  };
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "mtls-tunnel-"));
  paths = statePaths(join(dir, "state"));
  mkdirSync(join(dir, "certs"));
  await initCa({ paths, name: "Acme", passphrase: "t", actor: "test" });
  ca = await openCa(paths, { env: { MTLS_PASSPHRASE: "t" } });
  await issue("server", "tunnel-server", [makeSan("dns", "localhost"), makeSan("ip", "127.0.0.1")]);
  await issue("client", "alice", [makeSan("uri", "spiffe://acme.test/user/alice")]);
  await issue("client", "bob");
  await issue("client", "carol");
  echo = await startEcho();
});

after(async () => {
  for (const c of cleanups.reverse()) await c();
  echo?.server.close();
  await ca?.store.close();
  rmSync(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Helpers

async function material(name: string): Promise<TlsMaterial> {
  const f = files[name];
  assert.ok(f, name);
  const m = await loadTlsMaterial({ cert: f.cert, key: f.key, ca: f.ca });
  cleanups.push(() => m.close());
  return m;
}

interface Captured {
  logger: Logger;
  lines: Record<string, unknown>[];
}

function captureLogs(): Captured {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({
    level: "debug",
    destination: { write: (s: string) => void lines.push(JSON.parse(s)) },
  });
  return { logger, lines };
}

const allow = (flags: Parameters<typeof rulesFromFlags>[0]) => compilePolicy(rulesFromFlags(flags));

interface ServerHandle {
  tunnel: TunnelServer;
  address: Address;
  registry: Registry;
  logs: Captured;
  events: ConnectionAuditFields[];
}

async function startServer(
  over: Partial<TunnelServerOptions> & { route?: Partial<Route> } = {},
): Promise<ServerHandle> {
  const registry = new Registry();
  const logs = captureLogs();
  const { route, ...rest } = over;
  const tunnel = new TunnelServer({
    name: "srv",
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    routes: [{ target: echo.address, policy: allow({ allowCn: ["alice", "carol"] }), ...route }],
    material: await material("tunnel-server"),
    registry,
    logger: logs.logger,
    handshakeTimeoutMs: 5000,
    ...rest,
  });
  const events: ConnectionAuditFields[] = [];
  tunnel.on("connection", (e: ConnectionAuditFields) => events.push(e));
  const address = await tunnel.start();
  cleanups.push(() => tunnel.stop(100));
  return { tunnel, address, registry, logs, events };
}

async function startClient(
  server: Address,
  who: string,
  over: Partial<TunnelClientOptions> = {},
): Promise<{ tunnel: TunnelClient; address: Address; registry: Registry; events: ConnectionAuditFields[] }> {
  const registry = new Registry();
  const tunnel = new TunnelClient({
    name: `cli-${who}`,
    listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
    target: { ...server, kind: "tcp", host: "localhost" } as Address,
    material: await material(who),
    registry,
    ...over,
  });
  const events: ConnectionAuditFields[] = [];
  tunnel.on("connection", (e: ConnectionAuditFields) => events.push(e));
  const address = await tunnel.start();
  cleanups.push(() => tunnel.stop(100));
  return { tunnel, address, registry, events };
}

function dial(a: Address): Promise<Socket> {
  assert.equal(a.kind, "tcp");
  const s = connect({ host: a.host, port: a.port, allowHalfOpen: true });
  cleanups.push(() => s.destroy());
  return within(once(s, "connect"), 5000, "connect").then(() => s);
}

/** Sends `data` and reads until `n` bytes came back. */
async function roundTrip(s: Socket, data: Buffer | string, n = Buffer.byteLength(data)): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  const done = new Promise<Buffer>((resolve, reject) => {
    const onData = (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      if (got >= n) {
        s.off("data", onData);
        s.off("close", onClose);
        resolve(Buffer.concat(chunks));
      }
    };
    const onClose = () => reject(new Error(`closed after ${got} of ${n} bytes`));
    s.on("data", onData);
    s.once("close", onClose);
  });
  s.write(data);
  return within(done, 10_000, "round trip");
}

/** Resolves when the peer closed or ended the connection (the socket is read so that "end" can come). */
function gone(s: Socket): Promise<unknown> {
  s.resume();
  return Promise.race([once(s, "end"), once(s, "close")]);
}

function readAll(s: Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  s.on("data", (d: Buffer) => chunks.push(d));
  return within(
    new Promise((resolve) => s.once("end", () => resolve(Buffer.concat(chunks)))),
    10_000,
    "read to the end",
  );
}

async function metric(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const m = registry.getSingleMetric(name);
  assert.ok(m, `metric ${name}`);
  const { values } = await m.get();
  const hit = values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val));
  return hit?.value ?? 0;
}

/** A direct TLS client to the tunnel server, optionally with a client certificate. */
function tlsDial(a: Address, who?: string): Promise<TLSSocket> {
  assert.equal(a.kind, "tcp");
  const f = who ? files[who] : undefined;
  const s = tlsConnect({
    host: a.host,
    port: a.port,
    servername: "localhost",
    ca: readFileSync(files["tunnel-server"]?.ca as string),
    ...(f ? { cert: readFileSync(f.cert), key: readFileSync(f.key) } : {}),
  });
  s.on("error", () => undefined);
  cleanups.push(() => s.destroy());
  return within(once(s, "secureConnect"), 5000, "TLS connect").then(() => s);
}

// ---------------------------------------------------------------------------------------------

describe("tunnel client → tunnel server → echo", () => {
  let srv: ServerHandle;
  let cli: Awaited<ReturnType<typeof startClient>>;
  before(async () => {
    srv = await startServer();
    cli = await startClient(srv.address, "alice");
  });

  it("carries bytes both ways", async () => {
    const s = await dial(cli.address);
    assert.equal((await roundTrip(s, "hello tunnel")).toString(), "hello tunnel");
    s.end();
    assert.equal((await readAll(s)).toString(), "bye");
    await until(() => srv.events.length > 0, 2000, "audit event");
    const e = srv.events.at(-1) as ConnectionAuditFields;
    assert.equal(e.allowed, true);
    assert.equal(e.reason, "closed");
    assert.equal(e.identity?.serial, files.alice?.serial);
    assert.deepEqual(e.identity?.sans, ["uri:spiffe://acme.test/user/alice"]);
    assert.equal(e.bytesIn, 12);
    assert.equal(e.bytesOut, 15);
    assert.equal(e.rule, "cn=alice");
    const line = srv.logs.lines.find((l) => l.event === "connection" && l.allowed === true);
    assert.ok(line && typeof line.time === "string" && line.tunnel === "srv" && line.peer);
    assert.ok(!JSON.stringify(srv.logs.lines).includes("PRIVATE KEY"));
  });

  it("moves 50 MB intact (SHA-256) and counts the bytes", async (t) => {
    const s = await dial(cli.address);
    const size = 50 * 1024 * 1024;
    const data = randomBytes(size);
    const sent = createHash("sha256").update(data).digest("hex");
    const received = createHash("sha256");
    let got = 0;
    const before = await metric(srv.registry, "mtls_tunnel_bytes_total", { direction: "in" });
    const started = process.hrtime.bigint();
    const done = new Promise<void>((resolve) => {
      s.on("data", (d: Buffer) => {
        received.update(d);
        got += d.length;
        if (got === size) resolve();
      });
    });
    // Writing and reading at once: the echo sends everything back through both tunnels.
    for (let off = 0; off < size; off += 1 << 20) {
      if (!s.write(data.subarray(off, off + (1 << 20)))) await once(s, "drain");
    }
    await within(done, 60_000, "50 MB echoed");
    const secs = Number(process.hrtime.bigint() - started) / 1e9;
    t.diagnostic(
      `50 MB out and back through client+server tunnels in ${secs.toFixed(2)} s: ${((2 * size * 8) / secs / 1e9).toFixed(2)} Gbit/s of payload (both directions at once)`,
    );
    assert.equal(received.digest("hex"), sent);
    const after = await metric(srv.registry, "mtls_tunnel_bytes_total", { direction: "in" });
    assert.equal(after - before, size);
    s.destroy();
  });

  it("carries a half-close: the client ends its writes and still receives the rest", async () => {
    const s = await dial(cli.address);
    assert.equal((await roundTrip(s, "ping")).toString(), "ping");
    const rest = readAll(s);
    s.end("last words");
    // The echo still answers what came before the FIN, then says bye after it.
    assert.equal((await rest).toString(), "last wordsbye");
  });

  it("resumes the TLS session on the next connection", async () => {
    const s1 = await dial(cli.address);
    await roundTrip(s1, "one");
    s1.destroy();
    const s2 = await dial(cli.address);
    await roundTrip(s2, "two");
    s2.end();
    await readAll(s2);
    await until(() => cli.events.filter((e) => e.allowed).length >= 2, 2000, "client audit events");
    assert.equal(cli.events.at(-1)?.resumed, true);
    assert.ok((await metric(cli.registry, "mtls_tunnel_sessions_resumed_total")) >= 1);
    assert.ok((await metric(srv.registry, "mtls_tunnel_sessions_resumed_total")) >= 1);
    // The server saw the client's identity on the resumed session too.
    const e = srv.events.at(-1) as ConnectionAuditFields;
    assert.equal(e.resumed, true);
    assert.equal(e.identity?.serial, files.alice?.serial);
  });

  it("serves /metrics text with the tunnel series", async () => {
    const text = await srv.registry.metrics();
    for (const name of [
      'mtls_tunnel_connections_open{tunnel="srv"}',
      'mtls_tunnel_connections_total{tunnel="srv"}',
      'mtls_tunnel_handshake_failures_total{tunnel="srv",reason="not_allowed"}',
      'mtls_tunnel_bytes_total{tunnel="srv",direction="out"}',
      'mtls_certificate_expiry_seconds{tunnel="srv",certificate="leaf"}',
      'mtls_tunnel_revocations_closed_total{tunnel="srv"}',
    ]) {
      assert.ok(text.includes(name), name);
    }
    const expiry = await metric(srv.registry, "mtls_certificate_expiry_seconds", { certificate: "leaf" });
    assert.ok(expiry > 80 * 86_400 && expiry <= 90 * 86_400, `${expiry}`);
  });
});

describe("refusals", () => {
  it("refuses an identity the policy does not allow (not_allowed)", async () => {
    const srv = await startServer();
    const cli = await startClient(srv.address, "bob");
    const s = await dial(cli.address);
    s.write("let me in");
    await within(gone(s), 5000, "refused connection closes");
    await until(() => srv.events.length > 0, 2000, "audit");
    const e = srv.events[0] as ConnectionAuditFields;
    assert.equal(e.allowed, false);
    assert.equal(e.reason, "not_allowed");
    assert.equal(e.identity?.serial, files.bob?.serial);
    assert.match(e.detail ?? "", /bob/);
    assert.equal(
      await metric(srv.registry, "mtls_tunnel_handshake_failures_total", { reason: "not_allowed" }),
      1,
    );
    assert.equal(await metric(srv.registry, "mtls_tunnel_connections_open"), 0);
  });

  it("refuses a client without a certificate (no_certificate)", async () => {
    const srv = await startServer();
    const s = await tlsDial(srv.address);
    s.write("hi");
    await within(gone(s), 5000, "closed");
    await until(() => srv.events.length > 0, 2000, "audit");
    assert.equal(srv.events[0]?.reason, "no_certificate");
    assert.equal(
      await metric(srv.registry, "mtls_tunnel_handshake_failures_total", { reason: "no_certificate" }),
      1,
    );
  });

  it("counts a handshake that never comes (handshake_timeout)", async () => {
    const srv = await startServer({ handshakeTimeoutMs: 200 });
    const s = await dial(srv.address);
    await within(gone(s), 3000, "silent client dropped");
    await until(
      async () =>
        (await metric(srv.registry, "mtls_tunnel_handshake_failures_total", {
          reason: "handshake_timeout",
        })) === 1,
      2000,
      "handshake_timeout counted",
    );
  });

  it("the client refuses a server without the expected name (bad_name)", async () => {
    const srv = await startServer();
    const cli = await startClient(srv.address, "alice", { serverName: "vnc.acme.test" });
    const s = await dial(cli.address);
    await within(gone(s), 5000, "closed");
    await until(() => cli.events.length > 0, 2000, "audit");
    assert.equal(cli.events[0]?.reason, "bad_name");
    assert.equal(cli.events[0]?.allowed, false);
    assert.equal(
      await metric(cli.registry, "mtls_tunnel_handshake_failures_total", { reason: "bad_name" }),
      1,
    );
  });

  it("refuses a non-loopback target unless told otherwise", async () => {
    await assert.rejects(
      startServer({ route: { target: { kind: "tcp", host: "10.1.2.3", port: 80 } } }),
      /unsafe-target/,
    );
  });

  it("drops connections beyond max-connections", async () => {
    const srv = await startServer({ maxConnections: 2 });
    await tlsDial(srv.address, "alice");
    await tlsDial(srv.address, "alice");
    const third = connect({ host: "127.0.0.1", port: (srv.address as { port: number }).port });
    third.on("error", () => undefined);
    await within(gone(third), 5000, "third connection dropped");
    assert.equal(
      await metric(srv.registry, "mtls_tunnel_connections_rejected_total", { reason: "max_connections" }),
      1,
    );
  });
});

describe("revocation", () => {
  it("closes an open connection within 2 s of its certificate being revoked", async () => {
    const checker: RevocationChecker = await createRevocationChecker({ crl: [paths.crl] });
    cleanups.push(() => checker.close());
    const srv = await startServer({ revocation: checker });
    const cli = await startClient(srv.address, "carol");
    const s = await dial(cli.address);
    assert.equal((await roundTrip(s, "before")).toString(), "before");
    const closed = gone(s);
    const serial = files.carol?.serial as string;
    await ca.revoke([serial], "keyCompromise", "t");
    const t0 = Date.now();
    await within(closed, 2000, "revoked connection closed");
    const took = Date.now() - t0;
    await until(() => srv.events.length > 0, 2000, "audit");
    const e = srv.events[0] as ConnectionAuditFields;
    assert.equal(e.reason, "revoked");
    assert.equal(e.identity?.serial, serial);
    assert.ok(took < 2000, `${took} ms`);
    assert.equal(await metric(srv.registry, "mtls_tunnel_revocations_closed_total"), 1);
    // And a new connection with the revoked certificate is refused at once, resumed session or not.
    const again = await dial(cli.address);
    await within(gone(again), 5000, "refused");
    await until(() => srv.events.length > 1, 2000, "second audit");
    assert.equal(srv.events[1]?.reason, "revoked");
    // That second connection resumed its TLS session: a resumed session carries no chain, and the
    // revocation check still found the issuer (see issuers.ts).
    assert.equal(srv.events[1]?.identity?.serial, serial);
  });
});

describe("reload", () => {
  it("new connections get the new certificate; an open one keeps working", async () => {
    // A copy of the server files that can be replaced without touching the other tests' files.
    const name = "tunnel-server-reload";
    await issue("server", name, [makeSan("dns", "localhost")]);
    const m = await loadTlsMaterial({
      cert: files[name]?.cert as string,
      key: files[name]?.key as string,
      ca: files[name]?.ca as string,
    });
    cleanups.push(() => m.close());
    m.watch();
    const srv = await startServer({ material: m });
    const cli = await startClient(srv.address, "alice");
    const old = await dial(cli.address);
    await roundTrip(old, "old");
    const first = await tlsDial(srv.address, "alice");
    assert.equal(
      first.getPeerX509Certificate()?.serialNumber.toLowerCase(),
      files[name]?.serial.replace(/:/g, "").toLowerCase(),
    );
    first.destroy();

    const reloaded = once(srv.tunnel, "reload");
    const previous = files[name]?.serial;
    await issue("server", name, [makeSan("dns", "localhost")]);
    await within(reloaded, 3000, "reload after the files changed");
    const fresh = await tlsDial(srv.address, "alice");
    const seen = fresh.getPeerX509Certificate()?.serialNumber.toLowerCase();
    assert.notEqual(seen, previous?.replace(/:/g, "").toLowerCase());
    assert.equal(seen, files[name]?.serial.replace(/:/g, "").toLowerCase());
    fresh.destroy();
    // The connection opened before the reload still works.
    assert.equal((await roundTrip(old, "still here")).toString(), "still here");
    // And a new one through the client tunnel works (the client resumes no stale session).
    const again = await dial(cli.address);
    assert.equal((await roundTrip(again, "new")).toString(), "new");
  });
});

describe("limits and shutdown", () => {
  it("stop() drains: open connections finish, new ones are refused", async () => {
    const srv = await startServer();
    const cli = await startClient(srv.address, "alice");
    const s = await dial(cli.address);
    await roundTrip(s, "x");
    const stopped = srv.tunnel.stop(5000);
    // Not accepting any more.
    const probe = connect({ host: "127.0.0.1", port: (srv.address as { port: number }).port });
    const err = (await within(once(probe, "error"), 2000, "refused")) as [NodeJS.ErrnoException];
    assert.equal(err[0].code, "ECONNREFUSED");
    // The open connection still works until it ends.
    assert.equal((await roundTrip(s, "still")).toString(), "still");
    s.end();
    await readAll(s);
    assert.deepEqual(await within(stopped, 3000, "stop"), { drained: 1, cut: 0 });
  });

  it("stop() cuts what is still open at the deadline", async () => {
    const srv = await startServer();
    const cli = await startClient(srv.address, "alice");
    const s = await dial(cli.address);
    await roundTrip(s, "x");
    const t0 = Date.now();
    assert.deepEqual(await within(srv.tunnel.stop(300), 3000, "stop"), { drained: 0, cut: 1 });
    assert.ok(Date.now() - t0 >= 290);
    await within(gone(s), 2000, "cut");
    assert.equal(srv.events.at(-1)?.reason, "shutdown");
  });

  it("closes connections older than max-conn-lifetime", async () => {
    const srv = await startServer({ maxConnLifetimeMs: 300 });
    const cli = await startClient(srv.address, "alice");
    const s = await dial(cli.address);
    await roundTrip(s, "x");
    await within(gone(s), 3000, "closed at its lifetime");
    await until(() => srv.events.length > 0, 2000, "audit");
    assert.equal(srv.events[0]?.reason, "max_lifetime");
  });

  it("closes idle connections", async () => {
    const srv = await startServer({ idleTimeoutMs: 200 });
    const cli = await startClient(srv.address, "alice");
    const s = await dial(cli.address);
    await roundTrip(s, "x");
    await within(gone(s), 3000, "closed when idle");
    await until(() => srv.events.length > 0, 2000, "audit");
    assert.equal(srv.events[0]?.reason, "idle_timeout");
  });
});

describe("Unix sockets", () => {
  it("listens on and forwards to Unix sockets", async () => {
    const echoPath = join(dir, "echo.sock");
    const unixEcho = createServer({ allowHalfOpen: true }, (s) => {
      s.on("error", () => undefined);
      s.pipe(s);
    });
    unixEcho.listen(echoPath);
    await once(unixEcho, "listening");
    cleanups.push(() => unixEcho.close());
    const listenPath = join(dir, "tunnel.sock");
    const srv = await startServer({
      listen: { kind: "unix", path: listenPath },
      route: { target: { kind: "unix", path: echoPath } },
    });
    assert.deepEqual(srv.address, { kind: "unix", path: listenPath });
    const cli = await startClient(srv.address, "alice", {
      target: { kind: "unix", path: listenPath },
      serverName: "localhost",
    });
    const s = await dial(cli.address);
    assert.equal((await roundTrip(s, "over unix")).toString(), "over unix");
    s.end();
    await until(() => srv.events.length > 0, 2000, "audit");
    assert.equal(srv.events[0]?.peer, `unix:${listenPath}`);
    assert.equal(srv.events[0]?.target, `unix:${echoPath}`);
  });
});

describe("PROXY protocol and HTTP CONNECT", () => {
  it("sends a PROXY v2 header with the TLS details and the client certificate first", async () => {
    let header: Buffer = Buffer.alloc(0);
    const gotHeader = new Promise<ReturnType<typeof parseProxyHeaderV2>>((resolve) => {
      const target = createServer((s) => {
        s.on("data", (d: Buffer) => {
          header = Buffer.concat([header, d]);
          const parsed = parseProxyHeaderV2(header);
          if (parsed) {
            resolve(parsed);
            s.end(header.subarray(parsed.length)); // echo the payload after the header
          }
        });
      });
      target.listen(0, "127.0.0.1", () => {
        void (async () => {
          const srv = await startServer({
            proxyProtocol: true,
            route: {
              target: { kind: "tcp", host: "127.0.0.1", port: (target.address() as AddressInfo).port },
            },
          });
          const s = await tlsDial(srv.address, "alice");
          s.write("payload");
          cleanups.push(() => target.close());
        })();
      });
    });
    const parsed = await within(gotHeader, 5000, "PROXY header");
    assert.ok(parsed);
    const h = parsed.header;
    assert.equal(h.command, "proxy");
    assert.equal(h.source?.family, "inet");
    assert.equal(h.authority, "localhost");
    assert.equal(h.ssl?.verify, 0);
    assert.equal(h.ssl?.client, PP2_CLIENT.SSL | PP2_CLIENT.CERT_CONN | PP2_CLIENT.CERT_SESS);
    assert.equal(h.ssl?.version, "TLSv1.3");
    assert.equal(h.ssl?.cn, "alice");
    assert.equal(h.ssl?.keyAlg, "EC256");
    assert.equal(h.ssl?.sigAlg, "ecdsa-with-SHA256");
    const certPem = readFileSync(files.alice?.cert as string, "utf8");
    const der = Buffer.from(certPem.split("-----")[2]?.replace(/\s/g, "") ?? "", "base64");
    assert.ok(h.ssl?.clientCert && Buffer.from(h.ssl.clientCert).equals(der));
  });

  it("the client reaches its server through an HTTP CONNECT proxy", async () => {
    const srv = await startServer();
    const requests: string[] = [];
    const proxy = createServer((s) => {
      s.once("data", (d: Buffer) => {
        const head = d.toString("latin1");
        requests.push(head.split("\r\n")[0] as string);
        const [, port] = /^CONNECT [^:]+:(\d+) /.exec(head) ?? [];
        const up = connect({ host: "127.0.0.1", port: Number(port) }, () => {
          s.write("HTTP/1.1 200 Connection established\r\n\r\n");
          s.pipe(up).pipe(s);
        });
        up.on("error", () => s.destroy());
      });
      s.on("error", () => undefined);
    });
    proxy.listen(0, "127.0.0.1");
    await once(proxy, "listening");
    cleanups.push(() => proxy.close());
    const cli = await startClient(srv.address, "alice", {
      proxy: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
    });
    const s = await dial(cli.address);
    assert.equal((await roundTrip(s, "via proxy")).toString(), "via proxy");
    assert.deepEqual(requests, [`CONNECT localhost:${(srv.address as { port: number }).port} HTTP/1.1`]);
    s.destroy();
  });
});
