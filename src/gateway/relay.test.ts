import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { request } from "node:https";
import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import { createServer as createTlsServer, type Server as TlsServer, connect as tlsConnect } from "node:tls";
import { createWebSocketStream, WebSocket } from "ws";
import { createTestPki, type IssuedFiles, type TestPki } from "../../test/fixtures/pki.js";
import { until, within } from "../../test/fixtures/wait.js";
import { gatewaySpecOf, gatewaySpecsFromConfig } from "../cli/gateway.js";
import { parseConfig } from "../config/index.js";
import { createLogger, createRegistry, type Registry } from "../observe/index.js";
import { makeSan } from "../pki/names.js";
import { type BuiltGateway, buildGateway, type GatewaySpec } from "./build.js";
import type { RelaySessionAuditFields, RelaySettings } from "./relay.js";

let pki: TestPki;
let gw: BuiltGateway;
let spec: GatewaySpec;
let port: number;
let ca: string;
let registry: Registry;
const files: Record<string, IssuedFiles> = {};
const servers: (Server | TlsServer)[] = [];
const ports: Record<string, number> = {};
/** JSON log lines the gateway wrote. */
const logLines: Record<string, unknown>[] = [];
/** Sessions that ended ("relay" events). */
const sessions: RelaySessionAuditFields[] = [];
/** Sockets accepted by the back-pressure target, by the test that waits for them. */
let heldTarget: ((s: Socket) => void) | undefined;

const listen = async (name: string, server: Server | TlsServer) => {
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  ports[name] = (server.address() as AddressInfo).port;
};

function relaySettings(
  extra: Partial<RelaySettings> = {},
  targets = ["echo", "mtls", "bye", "dead", "held"],
) {
  return {
    targets: targets.map((name) => ({ name, target: `127.0.0.1:${ports[name]}` })),
    origins: ["https://app.example.test"],
    ...extra,
  };
}

async function reconfigure(extra: Partial<RelaySettings> = {}, targets?: string[]) {
  spec = { ...spec, relay: relaySettings(extra, targets) };
  await gw.reconfigure(spec);
}

interface Opened {
  ws: WebSocket;
  /** The client's port: the session's audit line names it in `peer`. */
  localPort: number;
  messages: Buffer[];
  closed: Promise<{ code: number; reason: string }>;
}

/** A WebSocket to the relay `name` (rejects with the HTTP status when the upgrade is refused). */
function openWs(name: string, opts: { origin?: string; gwPort?: number } = {}): Promise<Opened> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://127.0.0.1:${opts.gwPort ?? port}/.mtls/relay/${name}`, {
      ca,
      ...(opts.origin ? { origin: opts.origin } : {}),
    });
    const messages: Buffer[] = [];
    const closed = new Promise<{ code: number; reason: string }>((r) =>
      ws.once("close", (code, reason) => r({ code, reason: reason.toString() })),
    );
    ws.on("message", (d: Buffer) => messages.push(d));
    let localPort = 0;
    ws.once("upgrade", (res) => {
      localPort = res.socket.localPort ?? 0;
    });
    ws.once("unexpected-response", (_req, res) => {
      reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode }));
      ws.terminate();
    });
    ws.once("error", (err) => reject(err));
    ws.once("open", () => resolve({ ws, localPort, messages, closed }));
  });
}

async function refusedStatus(name: string, origin?: string): Promise<number> {
  try {
    const o = await openWs(name, origin ? { origin } : {});
    o.ws.terminate();
    return 101;
  } catch (err) {
    return (err as { status?: number }).status ?? 0;
  }
}

/** A plain HTTPS request to the gateway. */
function plain(method: string, path: string): Promise<{ status: number; body: string; upgrade?: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: "127.0.0.1", port, path, method, servername: "localhost", ca, agent: false },
      (res) => {
        let body = "";
        res.on("data", (d: Buffer) => {
          body += d;
        });
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            body,
            ...(typeof res.headers.upgrade === "string" ? { upgrade: res.headers.upgrade } : {}),
          }),
        );
      },
    );
    req.on("error", reject);
    req.end();
  });
}

async function metric(series: string): Promise<number> {
  const text = await registry.metrics();
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(" ")[1]) : 0;
}

/** The audit of the session `o` opened, once it ended. */
async function sessionOf(o: Opened): Promise<RelaySessionAuditFields> {
  const mine = () => sessions.find((r) => r.peer === `127.0.0.1:${o.localPort}`);
  await until(() => mine() !== undefined, 5_000, "the session's audit");
  return mine() as RelaySessionAuditFields;
}

const bytes = (n: number, seed = 7) => {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
};

before(async () => {
  pki = await createTestPki("mtls-relay-");
  files.gw = await pki.issue("server", "gw", {
    sans: [makeSan("dns", "localhost"), makeSan("ip", "127.0.0.1")],
  });
  files.target = await pki.issue("server", "target", { sans: [makeSan("dns", "api.internal")] });
  files.page = await pki.issue("client", "page", { sans: [makeSan("uri", "spiffe://acme.test/page")] });
  ca = readFileSync((files.gw as IssuedFiles).ca, "utf8");
  registry = createRegistry();

  await listen(
    "echo",
    createServer((s) => {
      s.on("error", () => undefined);
      s.pipe(s);
    }),
  );
  // An mTLS server: only clients with a certificate from the CA; says whose it is, then echoes.
  const t = files.target as IssuedFiles;
  await listen(
    "mtls",
    createTlsServer(
      {
        cert: readFileSync(t.cert),
        key: readFileSync(t.key),
        ca,
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: "TLSv1.3",
      },
      (s) => {
        s.on("error", () => undefined);
        const uri = s.getPeerCertificate().subjectaltname ?? "";
        s.write(`hello ${uri}\n`);
        s.pipe(s);
      },
    ),
  );
  // Says goodbye and closes (FIN); what the client sends afterwards is still read.
  await listen(
    "bye",
    createServer({ allowHalfOpen: true }, (s) => {
      s.on("error", () => undefined);
      s.end("goodbye");
    }),
  );
  // A port nothing listens on.
  const gone = createServer();
  await new Promise<void>((r) => gone.listen(0, "127.0.0.1", () => r()));
  ports.dead = (gone.address() as AddressInfo).port;
  await new Promise<void>((r) => gone.close(() => r()));
  await listen(
    "held",
    createServer((s) => {
      s.on("error", () => undefined);
      heldTarget?.(s);
    }),
  );

  const g = files.gw as IssuedFiles;
  spec = {
    name: "relaytest",
    listen: { host: "127.0.0.1", port: 0 },
    tls: { cert: g.cert, key: g.key, ca: g.ca },
    routes: [{ path: "/", upstream: `http://127.0.0.1:${ports.dead}`, mode: "none", rules: [] }],
    relay: relaySettings(),
  };
  const logger = createLogger({
    level: "info",
    destination: { write: (line: string) => logLines.push(JSON.parse(line)) },
  });
  gw = await buildGateway(spec, { logger, registry });
  gw.gateway.on("relay", (r: RelaySessionAuditFields) => sessions.push(r));
  port = ((await gw.start()) as AddressInfo).port;
});

after(async () => {
  await gw?.stop(1000);
  for (const s of servers) s.close();
  await pki?.close();
});

/** Whether a TLS 1.3 handshake with 127.0.0.1:port carries a CertificateRequest (openssl s_client -msg). */
function sendsCertificateRequest(gwPort: number): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      "openssl",
      ["s_client", "-connect", `127.0.0.1:${gwPort}`, "-tls1_3", "-msg"],
      { timeout: 10_000 },
      (err, out) =>
        /Handshake .*ServerHello/.test(out) ? resolve(/CertificateRequest/.test(out)) : reject(err),
    );
    child.stdin?.end();
  });
}

describe("client certificates: asked only where a route uses them", () => {
  it("a relay-only gateway asks for none (Chromium cancels a WebSocket on a CertificateRequest it cannot answer)", async () => {
    const g = files.gw as IssuedFiles;
    const only: GatewaySpec = {
      name: "relayonly",
      listen: { host: "127.0.0.1", port: 0 },
      tls: { cert: g.cert, key: g.key, ca: g.ca },
      routes: [],
      relay: relaySettings({ origins: ["*"] }, ["echo"]),
    };
    const relayOnly = await buildGateway(only, {
      logger: createLogger({ level: "silent" }),
      registry: createRegistry(),
    });
    const required = await buildGateway(
      {
        ...only,
        name: "withroute",
        routes: [
          { path: "/", upstream: `http://127.0.0.1:${ports.dead}`, mode: "require", rules: [{ cn: ["x"] }] },
        ],
      },
      { logger: createLogger({ level: "silent" }), registry: createRegistry() },
    );
    try {
      const p1 = ((await relayOnly.start()) as AddressInfo).port;
      const p2 = ((await required.start()) as AddressInfo).port;
      assert.equal(await sendsCertificateRequest(p1), false);
      assert.equal(await sendsCertificateRequest(p2), true);
      assert.equal(await sendsCertificateRequest(port), false, "routes of mode none ask for none either");
      const o = await openWs("echo", { gwPort: p1 });
      o.ws.send(Buffer.from("ping"));
      await until(() => o.messages.length > 0, 5_000, "the echo through a relay-only gateway");
      o.ws.close(1000);
      await o.closed;
      // Turning the need on or off needs a new listener: a reload says so and changes nothing.
      await assert.rejects(
        relayOnly.reconfigure({ ...only, routes: required.spec.routes }),
        /needs a restart/,
      );
    } finally {
      await relayOnly.stop(1000);
      await required.stop(1000);
    }
  });

  it("no route and no relay is a usage error; a relay alone is enough, in flags and in mtls.yaml", async () => {
    const g = files.gw as IssuedFiles;
    await assert.rejects(
      buildGateway(
        {
          name: "empty",
          listen: { host: "127.0.0.1", port: 0 },
          tls: { cert: g.cert, key: g.key, ca: g.ca },
          routes: [],
        },
        { logger: createLogger({ level: "silent" }), registry: createRegistry() },
      ),
      /at least one route \(--route \/=http:\/\/127\.0\.0\.1:PORT\) or relay/,
    );
    const yaml = (extra: string) => `gateways:
  - name: web
    listen: 127.0.0.1:8443
    cert: web.crt
    key: web.key
    ca: ca.crt
${extra}`;
    const [g1] = gatewaySpecsFromConfig(
      parseConfig(
        yaml("    relay:\n      targets:\n        - name: api\n          target: 10.0.0.5:8443\n"),
        { dir: "/" },
      ),
    );
    assert.deepEqual(g1?.routes, []);
    assert.throws(
      () => gatewaySpecsFromConfig(parseConfig(yaml(""), { dir: "/" })),
      /at least one route \(routes:\) or relay/,
    );
  });
});

describe("gateway relay", () => {
  it("pipes binary frames to the target and back, counts the bytes, writes one audit line per session", async () => {
    const beforeTo = await metric(
      'mtls_relay_bytes_total{gateway="relaytest",relay="echo",direction="to_target"}',
    );
    const o = await openWs("echo", { origin: "https://app.example.test" });
    const sent = bytes(300_000);
    for (let i = 0; i < sent.length; i += 50_000) o.ws.send(sent.subarray(i, i + 50_000));
    await until(() => o.messages.reduce((a, m) => a + m.length, 0) >= sent.length, 5_000, "the echo");
    assert.deepEqual(Buffer.concat(o.messages), sent);
    assert.equal(await metric('mtls_relay_sessions_active{gateway="relaytest",relay="echo"}'), 1);
    o.ws.close(1000, "done");
    assert.equal((await o.closed).code, 1000);
    const r = await sessionOf(o);
    assert.equal(r.relay, "echo");
    assert.equal(r.target, `127.0.0.1:${ports.echo}`);
    assert.equal(r.origin, "https://app.example.test");
    assert.equal(r.result, "closed");
    assert.equal(r.closeCode, 1000);
    assert.equal(r.bytesToTarget, sent.length);
    assert.equal(r.bytesFromTarget, sent.length);
    assert.match(r.peer, /^127\.0\.0\.1:\d+$/);
    assert.ok(r.durationMs > 0 && r.connectMs !== undefined);
    const after = await metric(
      'mtls_relay_bytes_total{gateway="relaytest",relay="echo",direction="to_target"}',
    );
    assert.equal(after - beforeTo, sent.length);
    assert.ok(
      (await metric('mtls_relay_sessions_total{gateway="relaytest",relay="echo",result="closed"}')) >= 1,
    );
    assert.equal(await metric('mtls_relay_sessions_active{gateway="relaytest",relay="echo"}'), 0);
    const line = logLines.findLast((l) => l.event === "relay.session");
    assert.ok(line);
    assert.equal(line.relay, "echo");
    assert.equal(line.origin, "https://app.example.test");
    assert.equal(line.bytesToTarget, sent.length);
    assert.equal(line.bytesFromTarget, sent.length);
    assert.equal(line.gateway, "relaytest");
  });

  it("carries a TLS 1.3 session with a client certificate end to end (the relay sees only ciphertext)", async () => {
    const o = await openWs("mtls");
    const duplex = createWebSocketStream(o.ws);
    duplex.on("error", () => undefined);
    const p = files.page as IssuedFiles;
    const tls = tlsConnect({
      socket: duplex,
      servername: "api.internal",
      ca,
      cert: readFileSync(p.cert),
      key: readFileSync(p.key),
    });
    tls.on("error", () => undefined);
    let got = "";
    tls.on("data", (d: Buffer) => {
      got += d;
    });
    await within(new Promise((r) => tls.once("secureConnect", r)), 5_000, "the TLS handshake");
    assert.equal(tls.getProtocol(), "TLSv1.3");
    assert.ok(tls.authorized);
    await until(() => got.includes("\n"), 5_000, "the greeting");
    assert.equal(got, "hello URI:spiffe://acme.test/page\n");
    tls.write("ping over mTLS");
    await until(() => got.includes("ping over mTLS"), 5_000, "the echo over TLS");
    tls.end();
    const r = await sessionOf(o);
    assert.equal(r.relay, "mtls");
    assert.ok(r.bytesToTarget > 500 && r.bytesFromTarget > 500);
    // The relay never saw the plain text: the target's greeting is not in any byte it counted as such.
    assert.ok(["closed", "target_closed"].includes(r.result), r.result);
  });

  it("the target refuses a session without a client certificate: the gateway asked for none", async () => {
    const o = await openWs("mtls");
    const duplex = createWebSocketStream(o.ws);
    duplex.on("error", () => undefined);
    const tls = tlsConnect({ socket: duplex, servername: "api.internal", ca });
    const failed = new Promise<Error>((r) => tls.once("error", r));
    let data = "";
    tls.on("data", (d: Buffer) => {
      data += d;
    });
    const err = await within(failed, 5_000, "the refusal");
    assert.match(String((err as NodeJS.ErrnoException).code ?? err.message), /CERTIFICATE|ECONNRESET|alert/i);
    assert.equal(data, "");
  });

  it("answers 404 for an unknown relay, 426 for a request that is not an upgrade, 400 for another method", async () => {
    const refusedBefore = await metric(
      'mtls_relay_refused_total{gateway="relaytest",relay="-",reason="unknown_relay"}',
    );
    assert.equal(await refusedStatus("nope"), 404);
    assert.equal(await refusedStatus("ech"), 404);
    assert.equal(
      await metric('mtls_relay_refused_total{gateway="relaytest",relay="-",reason="unknown_relay"}'),
      refusedBefore + 2,
    );
    const get = await plain("GET", "/.mtls/relay/echo");
    assert.equal(get.status, 426);
    assert.equal(get.upgrade, "websocket");
    assert.equal((await plain("GET", "/.mtls/relay/nope")).status, 404);
    assert.equal((await plain("POST", "/.mtls/relay/echo")).status, 400);
    // Other paths are routed as before (here: to an upstream that is down).
    assert.equal((await plain("GET", "/.mtls/relayx")).status, 502);
    assert.ok(logLines.some((l) => l.event === "relay.refused" && l.reason === "unknown_relay"));
  });

  it("accepts the gateway's own origin and configured ones; refuses other origins with 403", async () => {
    assert.equal(await refusedStatus("echo", "https://evil.example"), 403);
    assert.equal(await refusedStatus("echo", "null"), 403);
    assert.equal(await refusedStatus("echo", `https://localhost:${port}`), 403, "Host is 127.0.0.1:port");
    assert.equal(await refusedStatus("echo", `https://127.0.0.1:${port}`), 101);
    assert.equal(await refusedStatus("echo", "https://app.example.test"), 101);
    assert.ok(
      (await metric('mtls_relay_refused_total{gateway="relaytest",relay="echo",reason="origin"}')) >= 3,
    );
    await reconfigure({ origins: ["*"] });
    try {
      assert.equal(await refusedStatus("echo", "https://evil.example"), 101);
    } finally {
      await reconfigure();
    }
  });

  it("limits sessions per client (429) and in all (503) before the upgrade", async () => {
    await reconfigure({ maxSessionsPerClient: 2 });
    const open: Opened[] = [];
    try {
      open.push(await openWs("echo"), await openWs("echo"));
      assert.equal(await refusedStatus("echo"), 429);
      await reconfigure({ maxSessions: 2, maxSessionsPerClient: 10 });
      assert.equal(await refusedStatus("echo"), 503);
      open.pop()?.ws.close();
      await until(async () => (await refusedStatus("echo")) === 101, 5_000, "a free slot");
      assert.ok(
        (await metric(
          'mtls_relay_refused_total{gateway="relaytest",relay="echo",reason="max_sessions_per_client"}',
        )) >= 1,
      );
      assert.ok(
        (await metric('mtls_relay_refused_total{gateway="relaytest",relay="echo",reason="max_sessions"}')) >=
          1,
      );
    } finally {
      for (const o of open) o.ws.close();
      await reconfigure();
    }
  });

  it("closes with 1003 on a text frame and 1009 on a message over the size limit", async () => {
    const a = await openWs("echo");
    a.ws.send("text is not TLS");
    assert.equal((await within(a.closed, 5_000, "close on text")).code, 1003);
    const r = await sessionOf(a);
    assert.equal(r.result, "protocol_error");
    assert.equal(r.closeCode, 1003);

    await reconfigure({ maxMessageBytes: 4096 });
    try {
      const b = await openWs("echo");
      b.ws.send(bytes(4096));
      await until(() => b.messages.length > 0, 5_000, "the 4096-byte echo");
      b.ws.send(bytes(4097));
      assert.equal((await within(b.closed, 5_000, "close on size")).code, 1009);
      const s = await sessionOf(b);
      assert.equal(s.result, "protocol_error");
      assert.equal(s.bytesToTarget, 4096);
    } finally {
      await reconfigure();
    }
  });

  it("closes with 1011 when the target is down, and with 1000 after what a closing target sent", async () => {
    const d = await openWs("dead");
    const c = await within(d.closed, 5_000, "close for a dead target");
    assert.equal(c.code, 1011);
    assert.match(c.reason, /ECONNREFUSED/);
    assert.equal((await sessionOf(d)).result, "target_unreachable");

    const b = await openWs("bye");
    const closed = await within(b.closed, 5_000, "close after goodbye");
    assert.equal(closed.code, 1000);
    assert.equal(Buffer.concat(b.messages).toString(), "goodbye");
    const r = await sessionOf(b);
    assert.equal(r.result, "target_closed");
    assert.equal(r.bytesFromTarget, 7);
  });

  it("closes idle sessions (1001) after the idle timeout", async () => {
    await reconfigure({ idleTimeoutMs: 300 });
    try {
      const o = await openWs("echo");
      const t0 = Date.now();
      // Activity keeps it open.
      for (let i = 0; i < 4; i++) {
        o.ws.send(bytes(10));
        await new Promise((r) => setTimeout(r, 150));
      }
      const c = await within(o.closed, 5_000, "the idle close");
      assert.ok(Date.now() - t0 >= 750, `closed after ${Date.now() - t0} ms`);
      assert.equal(c.code, 1001);
      assert.match(c.reason, /idle/);
      assert.equal((await sessionOf(o)).result, "idle_timeout");
    } finally {
      await reconfigure();
    }
  });

  it("applies back-pressure from the browser to the target and from the target to the browser", async () => {
    // Target -> browser: the browser does not read; the target cannot write much before it must wait.
    let target: Socket | undefined;
    heldTarget = (s) => {
      target = s;
    };
    const o = await openWs("held");
    await until(() => target !== undefined, 5_000, "the target connection");
    const t = target as Socket;
    o.ws.pause();
    // Kernel socket buffers on the way hold ~10 MB (measured); without back-pressure all 40 MiB go.
    const total = 40 * 1024 * 1024;
    const chunk = bytes(64 * 1024);
    let written = 0;
    const pump = () => {
      while (written < total) {
        written += chunk.length;
        if (!t.write(chunk)) return t.once("drain", pump);
      }
    };
    pump();
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(written < 28 * 1024 * 1024, `the target wrote ${written} bytes unhindered`);
    o.ws.resume();
    await until(() => o.messages.reduce((a, m) => a + m.length, 0) >= total, 15_000, "all bytes");

    // Browser -> target: the target does not read; the browser's queue fills and stays full.
    t.pause();
    let sent = 0;
    const send = () => {
      while (sent < total && o.ws.bufferedAmount < 1024 * 1024) {
        o.ws.send(chunk);
        sent += chunk.length;
      }
    };
    const timer = setInterval(send, 5);
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(sent < 28 * 1024 * 1024, `the browser sent ${sent} bytes unhindered`);
    let received = 0;
    t.on("data", (d: Buffer) => {
      received += d.length;
    });
    t.resume();
    await until(() => received >= total, 15_000, "all bytes at the target");
    clearInterval(timer);
    o.ws.close();
    heldTarget = undefined;
  });

  it("puts a new relay list in force without a restart; open sessions keep their target", async () => {
    const o = await openWs("echo");
    try {
      await reconfigure({}, ["mtls", "held"]);
      assert.equal(await refusedStatus("echo"), 404);
      assert.equal(await refusedStatus("held"), 101);
      o.ws.send(Buffer.from("still here"));
      await until(() => Buffer.concat(o.messages).toString() === "still here", 5_000, "the old session");
      // A bad list is refused as a whole; the one in force stays.
      const bad = { ...spec, relay: { targets: [{ name: "x y", target: "127.0.0.1:1" }] } };
      await assert.rejects(gw.reconfigure(bad), /not a relay name/);
      assert.equal(await refusedStatus("echo"), 404);
      assert.equal(await refusedStatus("mtls"), 101);
    } finally {
      o.ws.close();
      await reconfigure();
    }
    assert.equal(await refusedStatus("echo"), 101);
  });

  it("stop() closes relay sessions with 1001 within its drain", async () => {
    const g = files.gw as IssuedFiles;
    const other = await buildGateway(
      { ...spec, name: "stopping", tls: { cert: g.cert, key: g.key, ca: g.ca } },
      { logger: createLogger({ level: "silent" }), registry },
    );
    const otherPort = ((await other.start()) as AddressInfo).port;
    const o = await openWs("echo", { gwPort: otherPort });
    o.ws.send(Buffer.from("x"));
    await until(() => o.messages.length > 0, 5_000, "the echo");
    const t0 = Date.now();
    const stopped = await other.stop(3_000);
    assert.ok(Date.now() - t0 < 2_500, `stop took ${Date.now() - t0} ms`);
    assert.equal(stopped.cut, 0);
    const c = await within(o.closed, 2_000, "the close");
    assert.equal(c.code, 1001);
  });
});

describe("relay settings: flags and mtls.yaml", () => {
  const flags = {
    listen: "127.0.0.1:8443",
    route: ["/=http://127.0.0.1:3000"],
    mode: "none",
    cert: "gw.crt",
    key: "gw.key",
    ca: "ca.crt",
    identityHeaders: "rfc9440",
    maxBody: "100m",
    requestTimeout: "5m",
    upstreamTimeout: "60s",
    keepaliveTimeout: "60s",
    handshakeTimeout: "10s",
    maxConnections: "0",
    shutdownTimeout: "30s",
    http2: true,
    logLevel: "info",
    workers: "1",
  };

  it("--relay NAME=host:port (repeatable) with --relay-origin and limits", () => {
    const s = gatewaySpecOf({
      ...flags,
      relay: ["api=10.0.0.5:8443", "ca=[::1]:8443"],
      relayOrigin: ["https://app.example.com"],
      relayMaxSessions: "50",
      relayMaxPerClient: "4",
      relayMaxMessage: "64k",
      relayConnectTimeout: "3s",
      relayIdleTimeout: "2m",
    } as Parameters<typeof gatewaySpecOf>[0]);
    assert.deepEqual(s.relay, {
      targets: [
        { name: "api", target: "10.0.0.5:8443" },
        { name: "ca", target: "[::1]:8443" },
      ],
      origins: ["https://app.example.com"],
      maxSessions: 50,
      maxSessionsPerClient: 4,
      maxMessageBytes: 65536,
      connectTimeoutMs: 3000,
      idleTimeoutMs: 120_000,
    });
    const bad = (extra: Record<string, unknown>, pattern: RegExp) =>
      assert.throws(
        () => gatewaySpecOf({ ...flags, ...extra } as Parameters<typeof gatewaySpecOf>[0]),
        pattern,
      );
    bad({ relay: ["api"] }, /expected NAME=host:port/);
    bad({ relay: ["a/b=127.0.0.1:1"] }, /not a relay name/);
    bad({ relay: ["api=nohost"] }, /expected host:port/);
    bad({ relay: ["a=127.0.0.1:1", "a=127.0.0.1:2"] }, /given twice/);
    bad({ relay: ["a=127.0.0.1:1"], relayOrigin: ["https://x.example/path"] }, /invalid relay origin/);
    bad({ relayOrigin: ["*"] }, /--relay-origin goes with --relay/);
    assert.equal(gatewaySpecOf(flags as Parameters<typeof gatewaySpecOf>[0]).relay, undefined);
  });

  it("gateways[].relay in mtls.yaml", () => {
    const text = `gateways:
  - name: web
    listen: 127.0.0.1:8443
    cert: web.crt
    key: web.key
    ca: ca.crt
    routes:
      - path: /
        upstream: http://127.0.0.1:3000
        mode: none
    relay:
      targets:
        - name: api
          target: 10.0.0.5:8443
      origins: [https://app.example.com]
      max_sessions: 100
      max_per_client: 0
      max_message: 256k
      idle_timeout: 5m
`;
    const [g] = gatewaySpecsFromConfig(parseConfig(text, { dir: "/etc/mtls" }));
    assert.deepEqual(g?.relay, {
      targets: [{ name: "api", target: "10.0.0.5:8443" }],
      origins: ["https://app.example.com"],
      maxSessions: 100,
      maxSessionsPerClient: 0,
      maxMessageBytes: 262144,
      idleTimeoutMs: 300_000,
    });
    assert.throws(
      () => gatewaySpecsFromConfig(parseConfig(text.replace("target: 10", "targe: 10"), { dir: "/" })),
      /relay\.targets\[0\]: unknown key "targe"/,
    );
    assert.throws(
      () => gatewaySpecsFromConfig(parseConfig(text.replace("name: api", "name: a b"), { dir: "/" })),
      /not a relay name/,
    );
  });
});
