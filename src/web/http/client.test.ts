/**
 * The HTTP client against a real node:http server over TCP loopback (the TLS layer is tested apart;
 * here the ByteStream is a plain socket).
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import http from "node:http";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { connectByteStream } from "../../../test/fixtures/byte-stream.js";
import { until, within } from "../../../test/fixtures/wait.js";
import { isMtlsError } from "../../errors.js";
import { createHttpClient, type HttpClient, type HttpClientOptions } from "./index.js";

interface TestServer {
  url: string;
  /** Every socket the server accepted, in order. */
  sockets: net.Socket[];
  server: http.Server;
  close(): Promise<void>;
}

async function startServer(
  handler: http.RequestListener,
  configure?: (s: http.Server) => void,
): Promise<TestServer> {
  const server = http.createServer(handler);
  configure?.(server);
  const sockets: net.Socket[] = [];
  server.on("connection", (s: net.Socket) => sockets.push(s));
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    sockets,
    server,
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, "close");
    },
  };
}

function tcpClient(extra: Partial<HttpClientOptions> = {}): HttpClient & { connects: number } {
  let connects = 0;
  const client = createHttpClient({
    async connect(origin) {
      connects++;
      return connectByteStream(Number(origin.port), origin.hostname);
    },
    ...extra,
  });
  return Object.defineProperty(client, "connects", { get: () => connects }) as HttpClient & {
    connects: number;
  };
}

async function readAll(req: http.IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of req) parts.push(p as Buffer);
  return Buffer.concat(parts);
}

/** Deterministic bytes so a body can be checked without holding it. */
function pattern(offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) b[i] = (offset + i) % 251;
  return b;
}

describe("HTTP/1.1 client over TCP", { timeout: 30_000 }, () => {
  let srv: TestServer;
  let client: ReturnType<typeof tcpClient>;
  before(async () => {
    srv = await startServer(async (req, res) => {
      const u = new URL(req.url ?? "/", "http://x");
      const body = await readAll(req);
      switch (u.pathname) {
        case "/echo":
          res.setHeader("x-method", req.method ?? "");
          res.setHeader("x-content-length", req.headers["content-length"] ?? "none");
          res.setHeader("x-transfer-encoding", req.headers["transfer-encoding"] ?? "none");
          res.setHeader("x-host", req.headers.host ?? "");
          res.setHeader("x-socket", String(srv.sockets.indexOf(req.socket)));
          res.statusMessage = "Echoed Fine";
          res.end(body);
          return;
        case "/close":
          res.setHeader("connection", "close");
          res.end("bye");
          return;
        case "/trailers":
          res.writeHead(200, { "content-type": "text/plain", trailer: "x-checksum" });
          res.write("part one, ");
          res.write("part two");
          res.addTrailers({ "x-checksum": "abc123" });
          res.end();
          return;
        case "/204":
          res.writeHead(204, { "x-kind": "empty" });
          res.end();
          return;
        case "/head":
          res.writeHead(200, { "content-length": "12345", "content-type": "text/plain" });
          res.end(req.method === "HEAD" ? undefined : "x".repeat(12345));
          return;
        case "/empty":
          res.writeHead(200, { "content-length": "0" });
          res.end();
          return;
        default:
          res.writeHead(404);
          res.end("not found");
      }
    });
    client = tcpClient();
  });
  after(async () => {
    await client.close();
    await srv.close();
  });

  it("GET: status, reason, headers, body, Host, url", async () => {
    const res = await client.fetch(`${srv.url}/echo?q=1`, { headers: { "x-test": "1" } });
    assert.equal(res.status, 200);
    assert.equal(res.statusText, "Echoed Fine");
    assert.equal(res.headers.get("x-method"), "GET");
    assert.equal(res.headers.get("x-host"), new URL(srv.url).host);
    assert.equal(res.headers.get("x-content-length"), "none");
    assert.equal(res.url, `${srv.url}/echo?q=1`);
    assert.equal(await res.text(), "");
  });

  it("POST with a string body and with a byte body", async () => {
    const r1 = await client.fetch(`${srv.url}/echo`, { method: "POST", body: "grüße" });
    assert.equal(r1.headers.get("x-content-length"), "7");
    assert.equal(await r1.text(), "grüße");
    const bytes = new Uint8Array(200_000).map((_, i) => (i * 7) % 256);
    const r2 = await client.fetch(`${srv.url}/echo`, { method: "PUT", body: bytes });
    assert.equal(r2.headers.get("x-method"), "PUT");
    assert.equal(r2.headers.get("x-content-length"), "200000");
    assert.deepEqual(new Uint8Array(await r2.arrayBuffer()), bytes);
  });

  it("sends a ReadableStream body chunked; the server sees the bytes", async () => {
    const parts = ["alpha,", "", "beta,", "x".repeat(70_000), "gamma"].map((s) =>
      new TextEncoder().encode(s),
    );
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        const p = parts.shift();
        if (p) c.enqueue(p);
        else c.close();
      },
    });
    const res = await client.fetch(`${srv.url}/echo`, { method: "POST", body });
    assert.equal(res.headers.get("x-transfer-encoding"), "chunked");
    assert.equal(res.headers.get("x-content-length"), "none");
    assert.equal(await res.text(), `alpha,beta,${"x".repeat(70_000)}gamma`);
  });

  it("keeps the connection alive: 3 requests, one socket", async () => {
    const c = tcpClient();
    const before = srv.sockets.length;
    const seen = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const res = await c.fetch(`${srv.url}/echo`);
      seen.add(res.headers.get("x-socket") ?? "");
      await res.arrayBuffer();
    }
    assert.equal(seen.size, 1);
    assert.equal(srv.sockets.length - before, 1);
    assert.equal(c.connects, 1);
    await c.close();
  });

  it("honours Connection: close from the server and from the caller", async () => {
    const c = tcpClient();
    const before = srv.sockets.length;
    const r1 = await c.fetch(`${srv.url}/close`);
    assert.equal(await r1.text(), "bye");
    const r2 = await c.fetch(`${srv.url}/echo`, { headers: { connection: "close" } });
    await r2.text();
    const r3 = await c.fetch(`${srv.url}/echo`);
    await r3.text();
    assert.equal(c.connects, 3);
    assert.equal(srv.sockets.length - before, 3);
    await until(() => (srv.sockets[before] as net.Socket).destroyed, 2000, "server socket closed");
    await c.close();
  });

  it("reads a chunked response with trailers, then reuses the connection", async () => {
    const c = tcpClient();
    const res = await c.fetch(`${srv.url}/trailers`);
    assert.equal(res.headers.get("transfer-encoding"), "chunked");
    assert.equal(await res.text(), "part one, part two");
    const again = await c.fetch(`${srv.url}/echo`);
    await again.text();
    assert.equal(c.connects, 1);
    await c.close();
  });

  it("204, HEAD and Content-Length: 0 have no body and keep the connection", async () => {
    const c = tcpClient();
    const r204 = await c.fetch(`${srv.url}/204`);
    assert.equal(r204.status, 204);
    assert.equal(r204.body, null);
    assert.equal(r204.headers.get("x-kind"), "empty");
    const head = await c.fetch(`${srv.url}/head`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get("content-length"), "12345");
    assert.equal(head.body, null);
    const empty = await c.fetch(`${srv.url}/empty`);
    assert.equal(await empty.text(), "");
    const get = await c.fetch(`${srv.url}/head`);
    assert.equal((await get.text()).length, 12345);
    assert.equal(c.connects, 1);
    await c.close();
  });

  it("fails to connect with E_UNAVAILABLE and the cause", async () => {
    const probe = net.createServer().listen(0, "127.0.0.1");
    await once(probe, "listening");
    const { port } = probe.address() as net.AddressInfo;
    probe.close();
    await once(probe, "close");
    const c = tcpClient();
    await assert.rejects(c.fetch(`http://127.0.0.1:${port}/`), (err: unknown) => {
      assert.ok(isMtlsError(err, "E_UNAVAILABLE"));
      assert.equal((err.cause as NodeJS.ErrnoException).code, "ECONNREFUSED");
      return true;
    });
    await c.close();
    await assert.rejects(c.fetch(`${srv.url}/echo`), (err: unknown) => isMtlsError(err, "E_UNAVAILABLE"));
  });
});

describe("interim responses", { timeout: 30_000 }, () => {
  it("skips 100 Continue: the body is sent after it", async () => {
    const srv = await startServer(
      () => {},
      (s) =>
        s.on("checkContinue", async (req, res) => {
          res.writeContinue();
          const body = await readAll(req);
          res.end(`got ${body.length} after continue`);
        }),
    );
    const c = tcpClient();
    const res = await c.fetch(`${srv.url}/up`, {
      method: "POST",
      headers: { expect: "100-continue" },
      body: "y".repeat(1000),
    });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "got 1000 after continue");
    // A plain 1xx (103) before the final answer is skipped too.
    const srv2 = await startServer((_req, res) => {
      res.writeEarlyHints({ link: "</style.css>; rel=preload" });
      res.end("final");
    });
    const r2 = await c.fetch(`${srv2.url}/`);
    assert.equal(r2.status, 200);
    assert.equal(await r2.text(), "final");
    await c.close();
    await srv.close();
    await srv2.close();
  });

  it("does not send the body when the server answers before 100 Continue", async () => {
    let received = -1;
    const srv = await startServer(
      () => {},
      (s) =>
        s.on("checkContinue", (req, res) => {
          res.writeHead(417, { connection: "close" });
          res.end("no thanks");
          req.on("data", (d: Buffer) => {
            received = Math.max(received, 0) + d.length;
          });
        }),
    );
    const c = tcpClient();
    const res = await c.fetch(`${srv.url}/up`, {
      method: "POST",
      headers: { expect: "100-continue" },
      body: "z".repeat(5000),
    });
    assert.equal(res.status, 417);
    assert.equal(await res.text(), "no thanks");
    await new Promise((r) => setTimeout(r, 1200));
    assert.equal(received, -1);
    await c.close();
    await srv.close();
  });
});

describe("streaming and back-pressure", { timeout: 30_000 }, () => {
  const SIZE = 50 * 1024 * 1024;
  let srv: TestServer;
  let serverSocket: net.Socket | undefined;
  let finished = false;
  before(async () => {
    srv = await startServer(async (req, res) => {
      serverSocket = req.socket;
      const q = new URL(req.url ?? "/", "http://x").searchParams;
      const total = Number(q.get("size"));
      const fixed = q.has("fixed") ? pattern(0, 1 << 20) : null;
      res.writeHead(200, { "content-length": String(total) });
      const block = fixed ? fixed.length : 256 * 1024;
      for (let off = 0; off < total && !res.destroyed; off += block) {
        const n = Math.min(block, total - off);
        if (!res.write(fixed ? fixed.subarray(0, n) : pattern(off, n))) {
          await new Promise<void>((resolve) => {
            const done = () => {
              res.off("drain", done);
              res.off("close", done);
              resolve();
            };
            res.on("drain", done);
            res.on("close", done);
          });
        }
      }
      res.end();
      finished = true;
    });
  });
  after(() => srv.close());

  it("reads 50 MB incrementally; the server stalls while the client does not read", async () => {
    const c = tcpClient();
    finished = false;
    const res = await c.fetch(`${srv.url}/big?size=${SIZE}`);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    let got = 0;
    let bad = -1;
    const check = (chunk: Uint8Array) => {
      for (let i = 0; i < chunk.length; i += 4093) {
        if (chunk[i] !== (got + i) % 251) bad = got + i;
      }
      got += chunk.length;
    };
    while (got < 1024 * 1024) {
      const r = await reader.read();
      assert.equal(r.done, false);
      check(r.value as Uint8Array);
    }
    // Stop reading: the server's writes must stall far below 50 MB (kernel buffers only).
    await new Promise((r) => setTimeout(r, 300));
    const w1 = (serverSocket as net.Socket).bytesWritten;
    await new Promise((r) => setTimeout(r, 300));
    const w2 = (serverSocket as net.Socket).bytesWritten;
    assert.equal(w2, w1, "server kept writing while the client did not read");
    assert.ok(w2 < SIZE / 2, `server wrote ${w2} bytes before stalling`);
    assert.equal(finished, false);
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      check(r.value);
    }
    assert.equal(got, SIZE);
    assert.equal(bad, -1, `byte mismatch at ${bad}`);
    await c.close();
  });

  it("cancel after a small read closes the connection", async () => {
    const c = tcpClient();
    const res = await c.fetch(`${srv.url}/big?size=${SIZE}`);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    await reader.cancel();
    await until(() => (serverSocket as net.Socket).destroyed, 2000, "server sees the close");
    // The next request needs a new connection.
    const r2 = await c.fetch(`${srv.url}/big?size=10`);
    assert.equal((await r2.arrayBuffer()).byteLength, 10);
    assert.equal(c.connects, 2);
    await c.close();
  });

  it("abort mid-body errors the body with the signal's reason and closes the connection", async () => {
    const c = tcpClient();
    const ac = new AbortController();
    const res = await c.fetch(`${srv.url}/big?size=${SIZE}`, { signal: ac.signal });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    ac.abort();
    await assert.rejects(reader.read(), (err: Error) => err.name === "AbortError");
    await until(() => (serverSocket as net.Socket).destroyed, 2000, "server sees the close");
    const reason = new Error("my reason");
    const ac2 = new AbortController();
    const res2 = await c.fetch(`${srv.url}/big?size=${SIZE}`, { signal: ac2.signal });
    ac2.abort(reason);
    await assert.rejects(
      (res2.body as ReadableStream<Uint8Array>).getReader().read(),
      (err) => err === reason,
    );
    await c.close();
  });

  it("measures a 100 MB download over TCP loopback", async (t) => {
    const c = tcpClient();
    const total = 100 * 1024 * 1024;
    const start = performance.now();
    const res = await c.fetch(`${srv.url}/big?fixed&size=${total}`);
    let got = 0;
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) got += chunk.length;
    const secs = (performance.now() - start) / 1000;
    assert.equal(got, total);
    t.diagnostic(`100 MB in ${secs.toFixed(2)} s = ${(100 / secs).toFixed(0)} MB/s`);
    await c.close();
  });
});

describe("aborts and keep-alive edge cases", { timeout: 30_000 }, () => {
  it("abort before the response head rejects with AbortError and closes the socket", async () => {
    const srv = await startServer(() => {}); // never answers
    const c = tcpClient();
    const ac = new AbortController();
    const p = c.fetch(`${srv.url}/slow`, { signal: ac.signal });
    await until(() => srv.sockets.length === 1, 2000, "request arrives");
    ac.abort();
    await assert.rejects(within(p, 2000, "fetch"), (err: Error) => err.name === "AbortError");
    await until(() => (srv.sockets[0] as net.Socket).destroyed, 2000, "server sees the close");
    const pre = new AbortController();
    pre.abort();
    await assert.rejects(
      c.fetch(`${srv.url}/`, { signal: pre.signal }),
      (err: Error) => err.name === "AbortError",
    );
    await c.close();
    await srv.close();
  });

  it("honours the server's Keep-Alive timeout and our idle timeout", async () => {
    // Node announces `Keep-Alive: timeout=0` for keepAliveTimeout < 1 s: the client must not pool that.
    const short = await startServer(
      (_req, res) => res.end("ok"),
      (s) => {
        s.keepAliveTimeout = 150;
      },
    );
    const c = tcpClient();
    assert.equal(await (await c.fetch(`${short.url}/`)).text(), "ok");
    await until(() => (short.sockets[0] as net.Socket).destroyed, 1000, "client closes at once");
    assert.equal(await (await c.fetch(`${short.url}/`)).text(), "ok");
    assert.equal(c.connects, 2);
    await c.close();
    await short.close();

    // `timeout=1` (a 1 s keep-alive, as `mtls gateway --keepalive-timeout 1s` sends): reused within half of it.
    const oneSecond = await startServer(
      (_req, res) => res.end("ok"),
      (s) => {
        s.keepAliveTimeout = 1000;
      },
    );
    const c1 = tcpClient();
    assert.equal(await (await c1.fetch(`${oneSecond.url}/`)).text(), "ok");
    assert.equal(await (await c1.fetch(`${oneSecond.url}/`)).text(), "ok");
    assert.equal(c1.connects, 1);
    await c1.close();
    await oneSecond.close();

    const srv = await startServer((_req, res) => res.end("ok"));
    const c2 = tcpClient({ idleTimeoutMs: 200 });
    assert.equal(await (await c2.fetch(`${srv.url}/`)).text(), "ok");
    await new Promise((r) => setTimeout(r, 50));
    assert.equal((srv.sockets[0] as net.Socket).destroyed, false, "kept alive while idle");
    await until(() => (srv.sockets[0] as net.Socket).destroyed, 1000, "client idle timeout");
    await c2.close();
    await srv.close();
  });

  it("abort while connecting, and while a stream body is waiting for its source", async () => {
    let late: { closed: boolean } | undefined;
    let release: (() => void) | undefined;
    const c = createHttpClient({
      connect: () =>
        new Promise((resolve) => {
          release = () => {
            late = { closed: false };
            const l = late;
            resolve({
              read: async () => null,
              write: async () => {},
              close: async () => {
                l.closed = true;
              },
            });
          };
        }),
    });
    const ac = new AbortController();
    const p = c.fetch("http://connect.test/", { signal: ac.signal });
    await until(() => release !== undefined, 1000, "connect called");
    ac.abort();
    await assert.rejects(within(p, 1000, "fetch"), (err: Error) => err.name === "AbortError");
    release?.();
    await until(() => late?.closed === true, 1000, "late stream closed");
    await c.close();

    const srv = await startServer(async (req, res) => {
      await readAll(req).catch(() => {});
      res.end();
    });
    const c2 = tcpClient();
    let cancelled: unknown;
    const body = new ReadableStream<Uint8Array>({
      start(ctl) {
        ctl.enqueue(new Uint8Array([1, 2, 3]));
      },
      cancel(reason) {
        cancelled = reason;
      },
    });
    const ac2 = new AbortController();
    const p2 = c2.fetch(`${srv.url}/`, { method: "POST", body, signal: ac2.signal });
    await until(() => srv.sockets.length === 1, 2000, "request arrives");
    await new Promise((r) => setTimeout(r, 50));
    ac2.abort();
    await assert.rejects(within(p2, 1000, "fetch"), (err: Error) => err.name === "AbortError");
    await until(() => cancelled !== undefined, 1000, "source cancelled");
    assert.equal((cancelled as Error).name, "AbortError");
    await until(() => (srv.sockets[0] as net.Socket).destroyed, 2000, "server sees the close");
    await c2.close();
    await srv.close();
  });

  it("a stream body that fails aborts the request with its error", async () => {
    const srv = await startServer(async (req, res) => {
      await readAll(req).catch(() => {});
      res.end("?");
    });
    const c = tcpClient();
    const boom = new Error("source broke");
    let n = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(ctl) {
        if (n++ < 2) ctl.enqueue(new Uint8Array(10));
        else ctl.error(boom);
      },
    });
    await assert.rejects(
      within(c.fetch(`${srv.url}/`, { method: "POST", body }), 2000, "fetch"),
      (e) => e === boom,
    );
    await c.close();
    await srv.close();
  });
});
