import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { connect as h2connect } from "node:http2";
import { Agent, request } from "node:https";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { createTestPki, type IssuedFiles, type TestPki } from "../../test/fixtures/pki.js";
import { createRegistry, silentLogger } from "../observe/index.js";
import { makeSan } from "../pki/names.js";
import { type BuiltGateway, buildGateway } from "./build.js";

let pki: TestPki;
let upstream: Server;
let gw: BuiltGateway;
let port: number;
let ca: string;
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
const codeOf = (a: Answer) => (JSON.parse(a.body) as { error: { code: string } }).error.code;

before(async () => {
  pki = await createTestPki("mtls-gateway-");
  certs.gw = await pki.issue("server", "gw", {
    sans: [makeSan("dns", "localhost"), makeSan("ip", "127.0.0.1"), makeSan("uri", "spiffe://acme.test/gw")],
  });
  ca = readFileSync((certs.gw as IssuedFiles).ca, "utf8");
  for (const name of ["alice", "dave"]) {
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
    let bytes = 0;
    req.on("data", (d: Buffer) => {
      bytes += d.length;
    });
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ url: req.url, headers: req.headers, bytes }));
    });
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
    { logger: silentLogger(), registry: createRegistry() },
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

  it("refuses the next request of a kept-alive connection once its certificate is revoked", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await get("dave", "/api/", { agent });
      assert.equal(first.status, 200);
      await pki.ca.revoke([(certs.dave as IssuedFiles).certificate.serial], "keyCompromise", "test");
      const end = Date.now() + 5_000;
      let last: Answer = first;
      while (Date.now() < end) {
        last = await get("dave", "/api/", { agent });
        if (last.status !== 200) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(last.status, 401);
      assert.equal(codeOf(last), "E_REVOKED");
      assert.ok(last.reused, "the same TLS connection");
    } finally {
      agent.destroy();
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
