import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { connect as h2connect } from "node:http2";
import { Agent, createServer as createHttpsServer, request } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type TLSSocket, connect as tlsConnect } from "node:tls";
import { createTestPki, type IssuedFiles, type TestPki } from "../../test/fixtures/pki.js";
import { parseConfig } from "../config/index.js";
import { createRegistry, type Registry, silentLogger } from "../observe/index.js";
import { makeSan } from "../pki/names.js";
import { type BuiltGateway, buildGateway, type GatewaySpec } from "./build.js";
import type { RequestAuditFields } from "./gateway.js";
import { GatewayGroup } from "./group.js";

let pki: TestPki;
let upstream: Server;
let gw: BuiltGateway;
let port: number;
let ca: string;
let registry: Registry;
const certs: Record<string, IssuedFiles> = {};

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  reused: boolean;
}

function get(
  who: string | undefined,
  path: string,
  opts: { host?: string; agent?: Agent; accept?: string } = {},
): Promise<Answer> {
  const c = who ? certs[who] : undefined;
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path,
        servername: "localhost",
        ca,
        ...(c ? { cert: readFileSync(c.cert), key: readFileSync(c.key) } : {}),
        headers: { host: opts.host ?? "localhost", ...(opts.accept ? { accept: opts.accept } : {}) },
        ...(opts.agent ? { agent: opts.agent } : { agent: false }),
      },
      (res) => {
        let body = "";
        res.on("data", (d: Buffer) => {
          body += d;
        });
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body, reused: req.reusedSocket }),
        );
      },
    );
    req.on("error", reject);
    req.end();
  });
}

const echoed = (a: Answer) => JSON.parse(a.body) as { url: string; headers: IncomingHttpHeaders };

/** An upgrade request through the gateway on `gwPort`; resolves once the upstream's greeting arrived. */
async function openUpgrade(
  who: string,
  path: string,
  gwPort = port,
): Promise<{
  socket: TLSSocket;
  greeting: { url: string; identity: string | null };
  closed: Promise<number>;
}> {
  const c = certs[who] as IssuedFiles;
  const socket = tlsConnect({
    host: "127.0.0.1",
    port: gwPort,
    servername: "localhost",
    ca,
    cert: readFileSync(c.cert),
    key: readFileSync(c.key),
  });
  socket.on("error", () => undefined);
  const closed = new Promise<number>((r) => socket.once("close", () => r(Date.now())));
  socket.write(
    `GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
  );
  let received = "";
  const greeting = await new Promise<{ url: string; identity: string | null }>((resolve, reject) => {
    const onData = (d: Buffer) => {
      received += d.toString("latin1");
      const end = received.indexOf("\r\n\r\n");
      const nl = received.indexOf("\n", end + 4);
      if (end < 0 || nl < 0) return;
      socket.off("data", onData);
      if (!received.startsWith("HTTP/1.1 101")) return reject(new Error(received.split("\r\n")[0]));
      resolve(JSON.parse(received.slice(end + 4, nl)));
    };
    socket.on("data", onData);
    socket.once("close", () => reject(new Error(`closed before the greeting: ${received}`)));
  });
  return { socket, greeting, closed };
}

/** Sends a line on an upgraded socket and waits for its echo. */
function echo(socket: Socket, line: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = "";
    const onData = (d: Buffer) => {
      got += d;
      if (got.includes(line)) {
        socket.off("data", onData);
        resolve();
      }
    };
    socket.on("data", onData);
    socket.once("close", () => reject(new Error("closed")));
    socket.write(line);
  });
}

const waitUntil = async (what: string, cond: () => boolean, ms = 5_000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
};

async function metric(series: string): Promise<number> {
  const text = await registry.metrics();
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(" ")[1]) : 0;
}

const gwTls = () => {
  const f = certs.gw as IssuedFiles;
  return { cert: f.cert, key: f.key, ca: f.ca };
};
const codeOf = (a: Answer) => (JSON.parse(a.body) as { error: { code: string } }).error.code;

before(async () => {
  pki = await createTestPki("mtls-gateway-");
  certs.gw = await pki.issue("server", "gw", {
    sans: [makeSan("dns", "localhost"), makeSan("ip", "127.0.0.1"), makeSan("uri", "spiffe://acme.test/gw")],
  });
  ca = readFileSync((certs.gw as IssuedFiles).ca, "utf8");
  registry = createRegistry();
  for (const name of ["alice", "dave", "wsuser", "h2user", "slowuser", "reload"]) {
    certs[name] = await pki.issue("client", name, {
      sans: [makeSan("uri", `spiffe://acme.test/user/${name}`)],
    });
  }
  certs.old = await pki.issue("client", "old", {
    sans: [makeSan("uri", "spiffe://acme.test/user/old")],
    at: new Date(Date.now() - 2 * 3_600_000),
    ttlMs: 3_600_000,
  });
  upstream = createServer((req, res) => {
    // A response that never ends (a long download, server-sent events).
    if (req.url?.endsWith("/endless")) {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write("data: first\n\n");
      return;
    }
    // An upstream that breaks off in the middle of its answer.
    if (req.url?.endsWith("/broken")) {
      res.writeHead(200, { "content-type": "text/plain", "content-length": "100000" });
      res.write("x".repeat(1000), () => setTimeout(() => req.socket.destroy(), 50));
      return;
    }
    let bytes = 0;
    req.on("data", (d: Buffer) => {
      bytes += d.length;
    });
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ url: req.url, headers: req.headers, bytes }));
    });
  });
  // WebSocket-ish: answers the upgrade, says who it saw, then echoes every byte.
  upstream.on("upgrade", (req, socket: Socket) => {
    socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    socket.write(`${JSON.stringify({ url: req.url, identity: req.headers["x-client-identity"] ?? null })}\n`);
    socket.on("error", () => undefined);
    socket.pipe(socket);
  });
  await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", () => r()));
  const up = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  const rules = [{ uri: ["spiffe://acme.test/user/*"] }];
  const gwFiles = certs.gw as IssuedFiles;
  gw = await buildGateway(
    {
      name: "test",
      listen: { host: "127.0.0.1", port: 0 },
      tls: { cert: gwFiles.cert, key: gwFiles.key, ca: gwFiles.ca },
      crl: [pki.ca.paths.crl],
      identityHeaders: "both",
      routes: [
        { host: "app.acme.test", path: "/", upstream: up, mode: "require", rules },
        { path: "/api/", upstream: up, mode: "require", rules },
        // Nothing listens on port 9 of loopback.
        { path: "/dead/", upstream: "http://127.0.0.1:9", mode: "none", rules: [] },
      ],
    },
    { logger: silentLogger(), registry },
  );
  const addr = (await gw.start()) as AddressInfo;
  port = addr.port;
});

after(async () => {
  await gw?.stop(0);
  await new Promise<void>((r) => (upstream ? upstream.close(() => r()) : r()));
  await pki?.close();
});

describe("Gateway", () => {
  it("routes by host and path, and answers 404 where no route applies", async () => {
    const app = await get("alice", "/x", { host: "app.acme.test" });
    assert.equal(app.status, 200);
    assert.equal(echoed(app).url, "/x");
    const api = await get("alice", "/api/y");
    assert.equal(api.status, 200);
    const none = await get("alice", "/x");
    assert.equal(none.status, 404);
    assert.equal(codeOf(none), "E_NOT_FOUND");
  });

  it("sends RFC 9440 and XFCC headers with --identity-headers both", async () => {
    const h = echoed(await get("alice", "/api/")).headers;
    assert.match(h["client-cert"] as string, /^:[A-Za-z0-9+/=]+:$/);
    assert.match(h["client-cert-chain"] as string, /^:[A-Za-z0-9+/=]+:$/);
    const xfcc = h["x-forwarded-client-cert"] as string;
    assert.match(xfcc, /^By=spiffe:\/\/acme\.test\/gw;Hash=[0-9a-f]{64};Cert="-----BEGIN%20CERTIFICATE-----/);
    assert.match(xfcc, /;URI=spiffe:\/\/acme\.test\/user\/alice$/);
  });

  it("sends the chain without revocation checking too (--crl not given)", async () => {
    const gwFiles = certs.gw as IssuedFiles;
    const plain = await buildGateway(
      {
        listen: { host: "127.0.0.1", port: 0 },
        tls: { cert: gwFiles.cert, key: gwFiles.key, ca: gwFiles.ca },
        http2: false,
        routes: [
          {
            path: "/",
            upstream: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`,
            mode: "require",
            rules: [{ all: true }],
          },
        ],
      },
      { logger: silentLogger(), registry: createRegistry() },
    );
    const mainPort = port;
    try {
      port = ((await plain.start()) as AddressInfo).port;
      const h = echoed(await get("alice", "/")).headers;
      assert.match(h["client-cert-chain"] as string, /^:[A-Za-z0-9+/=]+:$/);
      assert.equal(h["x-forwarded-client-cert"], undefined);
    } finally {
      port = mainPort;
      await plain.stop(0);
    }
  });

  it("refuses an expired certificate with E_EXPIRED and a page for browsers", async () => {
    const json = await get("old", "/api/");
    assert.equal(json.status, 401);
    assert.equal(codeOf(json), "E_EXPIRED");
    const page = await get("old", "/api/", { accept: "text/html" });
    assert.match(page.body, /Your certificate has expired/);
    assert.match(String(page.headers["content-type"]), /^text\/html/);
  });

  it("answers 502 with E_UNAVAILABLE when the upstream cannot be reached", async () => {
    const r = await get(undefined, "/dead/x");
    assert.equal(r.status, 502);
    assert.equal(codeOf(r), "E_UNAVAILABLE");
  });

  it("closes an idle kept-alive connection once its certificate is revoked, and refuses the next request", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await get("dave", "/api/", { agent });
      assert.equal(first.status, 200);
      const idle = Object.values(agent.freeSockets).flat()[0] as Socket;
      assert.ok(idle, "a kept-alive connection");
      const closed = new Promise<void>((r) => idle.once("close", () => r()));
      const cutBefore = await metric('mtls_gateway_connections_cut_total{gateway="test",reason="revoked"}');
      await pki.ca.revoke([(certs.dave as IssuedFiles).certificate.serial], "keyCompromise", "test");
      await Promise.race([
        closed,
        new Promise((_, reject) => setTimeout(() => reject(new Error("still open after 5 s")), 5_000)),
      ]);
      assert.equal(
        await metric('mtls_gateway_connections_cut_total{gateway="test",reason="revoked"}'),
        cutBefore + 1,
      );
      const last = await get("dave", "/api/", { agent });
      assert.equal(last.status, 401);
      assert.equal(codeOf(last), "E_REVOKED");
    } finally {
      agent.destroy();
    }
  });

  it("cuts an open WebSocket once its certificate is revoked, with an audit line", async () => {
    const audits: RequestAuditFields[] = [];
    const onRequest = (r: RequestAuditFields) => audits.push(r);
    gw.gateway.on("request", onRequest);
    try {
      const other = await openUpgrade("alice", "/api/ws");
      const ws = await openUpgrade("wsuser", "/api/ws");
      assert.match(String(ws.greeting.identity), /CN=wsuser/);
      await echo(ws.socket, "ping\n");
      const revokedAt = Date.now();
      await pki.ca.revoke([(certs.wsuser as IssuedFiles).certificate.serial], "keyCompromise", "test");
      const closedAt = await Promise.race([
        ws.closed,
        new Promise<number>((_, reject) =>
          setTimeout(() => reject(new Error("still open after 5 s")), 5_000),
        ),
      ]);
      assert.ok(closedAt - revokedAt < 5_000);
      await waitUntil("the audit line", () => audits.some((a) => a.reason === "revoked"));
      const line = audits.find((a) => a.reason === "revoked") as RequestAuditFields;
      assert.equal(line.status, 101);
      assert.equal(line.route, "*/api/");
      assert.match(String(line.detail), /revoked/);
      // Someone else's WebSocket stays up.
      await echo(other.socket, "still here\n");
      other.socket.destroy();
    } finally {
      gw.gateway.off("request", onRequest);
    }
  });

  /**
   * A request as `who` that resolves once the first bytes of the answer arrived, with how the answer
   * then ends ("ended" or "aborted"). Wrapped: a promise resolved with a promise would wait for that one.
   */
  function firstBytes(
    who: string,
    path: string,
  ): Promise<{ req: ReturnType<typeof request>; ended: Promise<string> }> {
    const c = certs[who] as IssuedFiles;
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: "127.0.0.1",
          port,
          path,
          servername: "localhost",
          ca,
          cert: readFileSync(c.cert),
          key: readFileSync(c.key),
          headers: { host: "localhost" },
          agent: false,
        },
        (res) => {
          res.once("data", () =>
            resolve({
              req,
              ended: new Promise<string>((done) => {
                res.on("error", () => done("aborted"));
                res.on("aborted", () => done("aborted"));
                res.on("end", () => done("ended"));
                res.resume();
              }),
            }),
          );
        },
      );
      req.on("error", reject);
      req.end();
      setTimeout(() => reject(new Error("no answer within 5 s")), 5_000).unref();
    });
  }

  it("cuts the client's answer when the upstream breaks off mid-body: audit reason upstream_reset", async () => {
    const audits: RequestAuditFields[] = [];
    const onRequest = (r: RequestAuditFields) => audits.push(r);
    gw.gateway.on("request", onRequest);
    try {
      const { ended } = await firstBytes("alice", "/api/broken");
      assert.equal(await ended, "aborted", "a truncated answer must not look complete");
      await waitUntil("the audit line", () => audits.some((a) => a.path === "/api/broken"));
      const line = audits.find((a) => a.path === "/api/broken") as RequestAuditFields;
      assert.equal(line.reason, "upstream_reset");
      assert.equal(line.status, 200);
    } finally {
      gw.gateway.off("request", onRequest);
    }
  });

  it("stops reading the upstream when the client goes away: audit reason client_aborted", async () => {
    const audits: RequestAuditFields[] = [];
    const onRequest = (r: RequestAuditFields) => audits.push(r);
    gw.gateway.on("request", onRequest);
    try {
      const { req } = await firstBytes("alice", "/api/endless");
      req.destroy();
      await waitUntil("the audit line", () => audits.some((a) => a.path === "/api/endless"));
      const line = audits.find((a) => a.path === "/api/endless") as RequestAuditFields;
      assert.equal(line.reason, "client_aborted");
    } finally {
      gw.gateway.off("request", onRequest);
    }
  });

  it("cuts a response in flight once its certificate is revoked, saying so in its audit line", async () => {
    const audits: RequestAuditFields[] = [];
    const onRequest = (r: RequestAuditFields) => audits.push(r);
    gw.gateway.on("request", onRequest);
    const c = certs.slowuser as IssuedFiles;
    try {
      const { ended } = await firstBytes("slowuser", "/api/endless");
      await pki.ca.revoke([c.certificate.serial], "keyCompromise", "test");
      const how = await Promise.race([
        ended,
        new Promise<string>((_, reject) =>
          setTimeout(() => reject(new Error("still streaming after 5 s")), 5_000),
        ),
      ]);
      assert.equal(how, "aborted");
      await waitUntil("the audit line", () => audits.some((a) => a.path === "/api/endless"));
      const line = audits.find((a) => a.path === "/api/endless") as RequestAuditFields;
      assert.equal(line.reason, "revoked");
      assert.equal(line.allowed, true, "it had been allowed");
      assert.match(String(line.detail), /was revoked \(keyCompromise\)/);
    } finally {
      gw.gateway.off("request", onRequest);
    }
  });

  it("ends an HTTP/2 session (GOAWAY) once its certificate is revoked", async () => {
    const c = certs.h2user as IssuedFiles;
    const session = h2connect(`https://localhost:${port}`, {
      ca,
      cert: readFileSync(c.cert),
      key: readFileSync(c.key),
      host: "127.0.0.1",
      servername: "localhost",
    } as never);
    session.on("error", () => undefined);
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const s = session.request({ ":path": "/api/h2" });
        let st = 0;
        s.on("response", (h) => {
          st = Number(h[":status"]);
        });
        s.resume();
        s.on("end", () => resolve(st));
        s.on("error", reject);
        s.end();
      });
      assert.equal(status, 200);
      const goaway = new Promise<void>((r) => session.once("goaway", () => r()));
      const closed = new Promise<void>((r) => session.once("close", () => r()));
      await pki.ca.revoke([c.certificate.serial], "keyCompromise", "test");
      await Promise.race([
        Promise.all([goaway, closed]),
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error("session still open after 5 s")), 5_000),
        ),
      ]);
    } finally {
      session.destroy();
    }
  });

  it("cuts an open WebSocket when its certificate expires", async () => {
    // Valid for about 4 more seconds.
    const short = await pki.issue("client", "short", {
      sans: [makeSan("uri", "spiffe://acme.test/user/short")],
      at: new Date(Date.now() - 60_000),
      ttlMs: 64_000,
    });
    certs.short = short;
    const audits: RequestAuditFields[] = [];
    const onRequest = (r: RequestAuditFields) => audits.push(r);
    gw.gateway.on("request", onRequest);
    try {
      const ws = await openUpgrade("short", "/api/ws");
      await echo(ws.socket, "ping\n");
      const closedAt = await Promise.race([
        ws.closed,
        new Promise<number>((_, reject) =>
          setTimeout(() => reject(new Error("still open after 10 s")), 10_000),
        ),
      ]);
      assert.ok(closedAt >= short.certificate.notAfter.getTime(), "not before notAfter");
      await waitUntil("the audit line", () => audits.some((a) => a.reason === "expired"));
    } finally {
      gw.gateway.off("request", onRequest);
    }
  });

  it("serves HTTP/2 streams of one connection with the identity", async () => {
    const c = certs.alice as IssuedFiles;
    const session = h2connect(`https://localhost:${port}`, {
      ca,
      cert: readFileSync(c.cert),
      key: readFileSync(c.key),
      host: "127.0.0.1",
      servername: "localhost",
    } as never);
    try {
      const one = (path: string) =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const s = session.request({ ":path": path });
          let status = 0;
          let body = "";
          s.on("response", (h) => {
            status = Number(h[":status"]);
          });
          s.on("data", (d: Buffer) => {
            body += d;
          });
          s.on("end", () => resolve({ status, body }));
          s.on("error", reject);
          s.end();
        });
      const [a, b] = await Promise.all([one("/api/a"), one("/api/b")]);
      // A body without content-length (HTTP/2 needs none) reaches the upstream chunked.
      const posted = await new Promise<{ bytes: number; headers: IncomingHttpHeaders }>((resolve, reject) => {
        const s = session.request({ ":path": "/api/post", ":method": "POST" });
        let body = "";
        s.on("data", (d: Buffer) => {
          body += d;
        });
        s.on("end", () => resolve(JSON.parse(body)));
        s.on("error", reject);
        s.write(Buffer.alloc(100_000, 1));
        s.end(Buffer.alloc(23, 2));
      });
      assert.equal(posted.bytes, 100_023);
      assert.equal(posted.headers["transfer-encoding"], "chunked");
      assert.equal(a.status, 200);
      assert.equal(b.status, 200);
      const h = (JSON.parse(a.body) as { headers: IncomingHttpHeaders }).headers;
      assert.equal(h.host, `localhost:${port}`);
      assert.match(h["x-client-identity"] as string, /CN=alice/);
    } finally {
      session.close();
    }
  });
});

describe("Gateway with https:// upstreams", () => {
  let tlsUp: ReturnType<typeof createHttpsServer>;
  let mtlsUp: ReturnType<typeof createHttpsServer>;
  let tgw: BuiltGateway;
  let tlsPort: number;
  let mtlsPort: number;
  const sawSni: string[] = [];

  before(async () => {
    const upFiles = await pki.issue("server", "upstream", {
      sans: [makeSan("dns", "upstream.acme.test"), makeSan("dns", "localhost"), makeSan("ip", "127.0.0.1")],
    });
    certs.gwclient = await pki.issue("client", "gwclient", {
      sans: [makeSan("uri", "spiffe://acme.test/svc/gateway")],
    });
    const answer = (req: import("node:http").IncomingMessage, res: import("node:http").ServerResponse) => {
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ url: req.url, peer: peer?.subject?.CN ?? null, headers: req.headers }));
    };
    const onUpgrade = (req: import("node:http").IncomingMessage, socket: Socket) => {
      socket.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
      socket.write(
        `${JSON.stringify({ url: req.url, identity: req.headers["x-client-identity"] ?? null })}\n`,
      );
      socket.on("error", () => undefined);
      socket.pipe(socket);
    };
    const pem = { cert: readFileSync(upFiles.cert), key: readFileSync(upFiles.key) };
    tlsUp = createHttpsServer(
      {
        ...pem,
        SNICallback: (name, cb) => {
          sawSni.push(name);
          cb(null, undefined);
        },
      },
      answer,
    );
    tlsUp.on("upgrade", onUpgrade);
    // Requires a client certificate from the test CA.
    mtlsUp = createHttpsServer({ ...pem, ca, requestCert: true, rejectUnauthorized: true }, answer);
    await new Promise<void>((r) => tlsUp.listen(0, "127.0.0.1", () => r()));
    await new Promise<void>((r) => mtlsUp.listen(0, "127.0.0.1", () => r()));
    tlsPort = (tlsUp.address() as AddressInfo).port;
    mtlsPort = (mtlsUp.address() as AddressInfo).port;
    const caFile = (certs.gw as IssuedFiles).ca;
    const client = certs.gwclient as IssuedFiles;
    const none = { mode: "none" as const, rules: [] };
    tgw = await buildGateway(
      {
        name: "tls",
        listen: { host: "127.0.0.1", port: 0 },
        tls: gwTls(),
        routes: [
          { path: "/ip/", upstream: `https://127.0.0.1:${tlsPort}`, ...none, upstreamTls: { ca: caFile } },
          {
            path: "/ws/",
            upstream: `https://127.0.0.1:${tlsPort}`,
            mode: "require",
            rules: [{ all: true }],
            upstreamTls: { ca: caFile },
          },
          {
            path: "/named/",
            upstream: `https://127.0.0.1:${tlsPort}/base/`,
            ...none,
            upstreamTls: { ca: caFile, serverName: "upstream.acme.test" },
          },
          {
            path: "/wrongname/",
            upstream: `https://127.0.0.1:${tlsPort}`,
            ...none,
            upstreamTls: { ca: caFile, serverName: "elsewhere.acme.test" },
          },
          // Node's CA store does not know the test CA.
          { path: "/system/", upstream: `https://127.0.0.1:${tlsPort}`, ...none },
          {
            path: "/mtls/",
            upstream: `https://127.0.0.1:${mtlsPort}`,
            ...none,
            upstreamTls: { ca: caFile, cert: client.cert, key: client.key },
          },
          {
            path: "/nocert/",
            upstream: `https://127.0.0.1:${mtlsPort}`,
            ...none,
            upstreamTls: { ca: caFile },
          },
        ],
      },
      { logger: silentLogger(), registry: createRegistry() },
    );
    await tgw.start();
  });

  after(async () => {
    await tgw?.stop(0);
    await Promise.all([tlsUp, mtlsUp].map((s) => new Promise<void>((r) => (s ? s.close(() => r()) : r()))));
  });

  const via = async (path: string, agent?: Agent) => {
    const mainPort = port;
    port = (tgw.gateway as unknown as { bound: AddressInfo }).bound.port;
    try {
      return await get("alice", path, agent ? { agent } : {});
    } finally {
      port = mainPort;
    }
  };

  it("verifies the upstream's certificate against --upstream-ca, checking the address or server name", async () => {
    const ip = await via("/ip/x");
    assert.equal(ip.status, 200);
    assert.equal((JSON.parse(ip.body) as { url: string }).url, "/ip/x");
    // No SNI for an address, and never the client's Host header ("localhost" here).
    assert.equal(sawSni.length, 0, `SNI sent: ${sawSni.join(", ")}`);
    const named = await via("/named/y");
    assert.equal(named.status, 200);
    assert.equal((JSON.parse(named.body) as { url: string }).url, "/base/y");
    assert.ok(sawSni.includes("upstream.acme.test"), "SNI is the server name given");
    const wrong = await via("/wrongname/");
    assert.equal(wrong.status, 502);
    assert.equal(codeOf(wrong), "E_UNAVAILABLE");
    const system = await via("/system/");
    assert.equal(system.status, 502);
  });

  it("presents a client certificate to an upstream that requires one", async () => {
    const ok = await via("/mtls/z");
    assert.equal(ok.status, 200);
    assert.equal((JSON.parse(ok.body) as { peer: string }).peer, "gwclient");
    const refused = await via("/nocert/");
    assert.equal(refused.status, 502);
  });

  it("keeps upstream TLS connections alive between requests", async () => {
    const listenersBefore = tlsUp.listenerCount("secureConnection");
    let handshakes = 0;
    const count = () => {
      handshakes++;
    };
    tlsUp.on("secureConnection", count);
    try {
      for (let i = 0; i < 5; i++) assert.equal((await via("/ip/")).status, 200);
      assert.ok(handshakes <= 1, `${handshakes} handshakes for 5 requests`);
    } finally {
      tlsUp.off("secureConnection", count);
      assert.equal(tlsUp.listenerCount("secureConnection"), listenersBefore);
    }
  });

  it("passes WebSocket upgrades to an https upstream", async () => {
    const p = (tgw.gateway as unknown as { bound: AddressInfo }).bound.port;
    const ws = await openUpgrade("alice", "/ws/chat", p);
    assert.equal(ws.greeting.url, "/ws/chat");
    assert.match(String(ws.greeting.identity), /CN=alice/);
    await echo(ws.socket, "over tls\n");
    ws.socket.destroy();
  });

  it("/readyz does a TLS handshake with https upstreams", async () => {
    const r = await tgw.ready();
    assert.equal(r.ok, false, "the wrong name and unknown CA fail");
    assert.match(r.detail, new RegExp(`https://127.0.0.1:${mtlsPort} completes a TLS handshake`));
    const good = await buildGateway(
      {
        listen: { host: "127.0.0.1", port: 0 },
        tls: gwTls(),
        routes: [
          {
            path: "/",
            upstream: `https://localhost:${mtlsPort}`,
            mode: "none",
            rules: [],
            upstreamTls: {
              ca: (certs.gw as IssuedFiles).ca,
              cert: (certs.gwclient as IssuedFiles).cert,
              key: (certs.gwclient as IssuedFiles).key,
            },
          },
        ],
      },
      { logger: silentLogger(), registry: createRegistry() },
    );
    try {
      await good.start();
      const g = await good.ready();
      assert.equal(g.ok, true, g.detail);
    } finally {
      await good.stop(0);
    }
  });

  it("re-reads the upstream TLS files on reloadFiles (SIGHUP)", async () => {
    const other = await pki.issue("client", "stranger", { other: true });
    const caCopy = join(pki.dir, "upstream-ca-copy.pem");
    writeFileSync(caCopy, readFileSync(other.ca));
    const g = await buildGateway(
      {
        listen: { host: "127.0.0.1", port: 0 },
        tls: gwTls(),
        routes: [
          {
            path: "/",
            upstream: `https://127.0.0.1:${tlsPort}`,
            mode: "none",
            rules: [],
            upstreamTls: { ca: caCopy },
          },
        ],
      },
      { logger: silentLogger(), registry: createRegistry() },
    );
    const mainPort = port;
    try {
      port = ((await g.start()) as AddressInfo).port;
      assert.equal((await get(undefined, "/")).status, 502, "another CA: the upstream does not verify");
      assert.equal(await g.reloadFiles(), false, "nothing changed");
      writeFileSync(caCopy, ca);
      assert.equal(await g.reloadFiles(), true);
      assert.equal((await get(undefined, "/")).status, 200);
    } finally {
      port = mainPort;
      await g.stop(0);
    }
  });

  it("refuses upstream TLS files it cannot use, naming the route", async () => {
    await assert.rejects(
      buildGateway(
        {
          listen: { host: "127.0.0.1", port: 0 },
          tls: gwTls(),
          routes: [
            {
              path: "/",
              upstream: "https://127.0.0.1:1",
              mode: "none",
              rules: [],
              upstreamTls: { ca: "/nonexistent/ca.pem" },
            },
          ],
        },
        { logger: silentLogger(), registry: createRegistry() },
      ),
      (err: Error & { code?: string }) =>
        err.code === "E_NOT_FOUND" &&
        /route \*\/: upstream https:\/\/127.0.0.1:1: cannot read the CA file/.test(err.message),
    );
    await assert.rejects(
      buildGateway(
        {
          listen: { host: "127.0.0.1", port: 0 },
          tls: gwTls(),
          routes: [
            {
              path: "/",
              upstream: "https://127.0.0.1:1",
              mode: "none",
              rules: [],
              // The key of another certificate.
              upstreamTls: {
                cert: (certs.gwclient as IssuedFiles).cert,
                key: (certs.alice as IssuedFiles).key,
              },
            },
          ],
        },
        { logger: silentLogger(), registry: createRegistry() },
      ),
      (err: Error & { code?: string }) => err.code === "E_BAD_INPUT",
    );
  });
});

describe("Gateway reconfigured in place", () => {
  it("puts new rules in force for the next request; open WebSocket and keep-alive connections stay", async () => {
    const up = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    const spec = (allow: string): GatewaySpec => ({
      name: "reload",
      listen: { host: "127.0.0.1", port: 0 },
      tls: gwTls(),
      identityHeaders: "rfc9440",
      routes: [
        { path: "/", upstream: up, mode: "require", rules: [{ uri: [`spiffe://acme.test/user/${allow}`] }] },
      ],
    });
    const group = new GatewayGroup({ logger: silentLogger(), registry: createRegistry() });
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const mainPort = port;
    try {
      const first = await group.apply([spec("reload")]);
      assert.deepEqual(first.started, ["reload"]);
      const built = (group as unknown as { running: Map<string, { built: BuiltGateway }> }).running.get(
        "reload",
      )?.built as BuiltGateway;
      port = (built.gateway as unknown as { bound: AddressInfo }).bound.port;
      const ws = await openUpgrade("reload", "/ws");
      const kept = await get("reload", "/a", { agent });
      assert.equal(kept.status, 200);
      assert.equal((await get("alice", "/a")).status, 403);

      // Port 0 stays port 0: the listener is the same, the rules change.
      const next = { ...spec("alice"), identityHeaders: "both" as const };
      const report = await group.apply([next]);
      assert.deepEqual(report.updated, ["reload"]);
      assert.deepEqual(report.restarted, []);
      const alice = await get("alice", "/a");
      assert.equal(alice.status, 200);
      assert.ok(echoed(alice).headers["x-forwarded-client-cert"], "the new identity header format");
      const again = await get("reload", "/a", { agent });
      assert.equal(again.status, 403, "the new rule on the kept-alive connection");
      assert.ok(again.reused, "the same connection");
      await echo(ws.socket, "still open\n");

      // A route that does not pass leaves the routes in force.
      const bad = await group.apply([
        { ...next, routes: [{ path: "/", upstream: up, mode: "require", rules: [] }] },
      ]);
      assert.equal(bad.failed.length, 1);
      assert.equal((await get("alice", "/a")).status, 200);

      // The listen address changed: a restart (the open WebSocket drains with the old one).
      const moved = await group.apply([{ ...next, listen: { host: "127.0.0.1", port: 0, ipv6Only: false } }]);
      assert.deepEqual(moved.restarted, ["reload"]);
      ws.socket.destroy();
    } finally {
      port = mainPort;
      agent.destroy();
      await group.stop(0);
    }
  });

  it("closes the connection pools of upstreams no route uses any more", async () => {
    const up = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    const other = createServer((_req, res) => res.end("other"));
    await new Promise<void>((r) => other.listen(0, "127.0.0.1", () => r()));
    const otherUp = `http://127.0.0.1:${(other.address() as AddressInfo).port}`;
    const base: GatewaySpec = {
      listen: { host: "127.0.0.1", port: 0 },
      tls: gwTls(),
      routes: [
        { path: "/", upstream: up, mode: "none", rules: [] },
        { path: "/other/", upstream: otherUp, mode: "none", rules: [] },
      ],
    };
    const built = await buildGateway(base, { logger: silentLogger(), registry: createRegistry() });
    const mainPort = port;
    try {
      port = ((await built.start()) as AddressInfo).port;
      assert.equal((await get(undefined, "/other/x")).status, 200);
      let open = 0;
      other.getConnections((_e, n) => {
        open = n;
      });
      await waitUntil("a pooled upstream connection", () => {
        other.getConnections((_e, n) => {
          open = n;
        });
        return open === 1;
      });
      await built.reconfigure({ ...base, routes: [{ path: "/", upstream: up, mode: "none", rules: [] }] });
      await waitUntil("the pooled connection closed", () => {
        other.getConnections((_e, n) => {
          open = n;
        });
        return open === 0;
      });
      assert.equal((await get(undefined, "/other/x")).status, 200, "now the / route's upstream");
    } finally {
      port = mainPort;
      await built.stop(0);
      await new Promise<void>((r) => other.close(() => r()));
    }
  });
});

describe("upstream_* keys in mtls.yaml", () => {
  const yaml = (route: string, gateway = "") => `gateways:
  - name: web
    listen: 127.0.0.1:8443
    cert: web.crt
    key: web.key
    ca: ca.crt${gateway}
    routes:
      - path: /
        mode: none
${route}`;

  it("reads a route's upstream TLS, the gateway's as defaults, paths relative to the file", () => {
    const cfg = parseConfig(
      yaml(
        "        upstream: https://api.acme.test:8443\n        upstream_servername: api.internal.test\n      - path: /b/\n        mode: none\n        upstream: https://b.acme.test\n        upstream_identity: gw-b\n      - path: /c/\n        mode: none\n        upstream: http://127.0.0.1:3000\n",
        "\n    state: st\n    upstream_ca: up-ca.pem\n    upstream_cert: gw.crt\n    upstream_key: gw.key",
      ).replace(
        "    cert: web.crt\n    key: web.key\n    ca: ca.crt\n    state: st",
        "    identity: web\n    state: st",
      ),
      { dir: "/etc/mtls" },
    );
    const [a, b, c] = cfg.gateways?.[0]?.routes ?? [];
    assert.deepEqual(a?.upstreamTls, {
      ca: "/etc/mtls/up-ca.pem",
      cert: "/etc/mtls/gw.crt",
      key: "/etc/mtls/gw.key",
      serverName: "api.internal.test",
    });
    assert.deepEqual(b?.upstreamTls, {
      ca: "/etc/mtls/up-ca.pem",
      identity: { state: "/etc/mtls/st", name: "gw-b" },
    });
    assert.equal(c?.upstreamTls, undefined, "http:// routes take none");
  });

  it("refuses upstream keys that do not fit, naming the route", () => {
    assert.throws(
      () => parseConfig(yaml("        upstream: http://127.0.0.1:3000\n        upstream_ca: ca.pem\n")),
      /gateways\[0\]\.routes\[0\]: the upstream_\* keys go with an https:\/\/ upstream/,
    );
    assert.throws(
      () => parseConfig(yaml("        upstream: https://a.acme.test\n        upstream_cert: c.pem\n")),
      /gateways\[0\]\.routes\[0\]: give upstream_cert and upstream_key together/,
    );
  });
});
