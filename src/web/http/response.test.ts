/**
 * Responses from a raw TCP server: malformed and oversized heads, framing conflicts, truncation,
 * and keep-alive corner cases (stale reused connections) that node:http never produces on its own.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import net from "node:net";
import { after, before, describe, it } from "node:test";
import { connectByteStream } from "../../../test/fixtures/byte-stream.js";
import { until, within } from "../../../test/fixtures/wait.js";
import { isMtlsError } from "../../errors.js";
import { createHttpClient, type HttpClient, type HttpClientOptions } from "./index.js";

/** What the raw server does with the n-th request (0-based, over all connections) on a socket. */
type Script = (socket: net.Socket, request: string, n: number, perSocket: number) => void;

interface RawServer {
  url: string;
  requests: string[];
  sockets: net.Socket[];
  close(): Promise<void>;
}

async function rawServer(script: Script): Promise<RawServer> {
  const requests: string[] = [];
  const sockets: net.Socket[] = [];
  const server = net.createServer((socket) => {
    sockets.push(socket);
    socket.on("error", () => {});
    let buf = "";
    let perSocket = 0;
    socket.on("data", (d: Buffer) => {
      buf += d.toString("latin1");
      for (;;) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = buf.slice(0, end + 4);
        const m = /content-length: (\d+)/i.exec(head);
        const bodyLen = m ? Number(m[1]) : 0;
        if (buf.length < end + 4 + bodyLen) return;
        const req = buf.slice(0, end + 4 + bodyLen);
        buf = buf.slice(end + 4 + bodyLen);
        requests.push(req);
        script(socket, req, requests.length - 1, perSocket++);
      }
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    sockets,
    async close() {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, "close");
    },
  };
}

/** A server that answers every request with `response` and then optionally closes. */
function answer(response: string | Buffer, end = false): Script {
  return (socket) => {
    socket.write(response);
    if (end) socket.end();
  };
}

function tcpClient(extra: Partial<HttpClientOptions> = {}): HttpClient & { connects: number } {
  let connects = 0;
  const client = createHttpClient({
    connect(origin) {
      connects++;
      return connectByteStream(Number(origin.port), origin.hostname);
    },
    ...extra,
  });
  return Object.defineProperty(client, "connects", { get: () => connects }) as HttpClient & {
    connects: number;
  };
}

const protocolErr = (err: unknown) => {
  assert.ok(isMtlsError(err, "E_HTTP_PROTOCOL"), `expected E_HTTP_PROTOCOL, got ${String(err)}`);
  return true;
};

/** fetch must reject with E_HTTP_PROTOCOL. */
async function headFails(response: string, options: Partial<HttpClientOptions> = {}): Promise<void> {
  const srv = await rawServer(answer(response, true));
  const c = tcpClient(options);
  try {
    await assert.rejects(within(c.fetch(`${srv.url}/`), 3000, "fetch"), protocolErr);
  } finally {
    await c.close();
    await srv.close();
  }
}

/** fetch resolves, reading the body must fail with E_HTTP_PROTOCOL. */
async function bodyFails(response: string): Promise<void> {
  const srv = await rawServer(answer(response, true));
  const c = tcpClient();
  try {
    const res = await within(c.fetch(`${srv.url}/`), 3000, "fetch");
    await assert.rejects(within(res.arrayBuffer(), 3000, "body"), (err: unknown) => {
      // Response.arrayBuffer() rethrows the stream's error as is.
      return protocolErr(err);
    });
  } finally {
    await c.close();
    await srv.close();
  }
}

describe("malformed responses", { timeout: 30_000 }, () => {
  it("bad status lines", async () => {
    await headFails("HTTP/1.1 2OO OK\r\ncontent-length: 0\r\n\r\n");
    await headFails("HTX/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    await headFails("HTTP/2 200 OK\r\ncontent-length: 0\r\n\r\n");
    await headFails("HTTP/1.1 700 Odd\r\ncontent-length: 0\r\n\r\n");
    await headFails("HTTP/1.1 200 O\u0001K\r\ncontent-length: 0\r\n\r\n");
    await headFails("hello world\r\n\r\n");
    await headFails("HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n");
  });

  it("bad header sections", async () => {
    await headFails("HTTP/1.1 200 OK\ncontent-length: 0\n\n"); // bare LF
    await headFails("HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\ncontent-length: 0\r\n\r\n"); // obs-fold
    await headFails("HTTP/1.1 200 OK\r\nx a: 1\r\ncontent-length: 0\r\n\r\n");
    await headFails("HTTP/1.1 200 OK\r\nx-a : 1\r\ncontent-length: 0\r\n\r\n");
    await headFails("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n");
    await headFails("HTTP/1.1 200 OK\r\nx-a: 1\u0000\r\ncontent-length: 0\r\n\r\n");
    await headFails("HTTP/1.1 200 OK\r\nx-a: 1\rx\r\ncontent-length: 0\r\n\r\n");
    await headFails("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n"); // closed inside the head
  });

  it("header too large, too many headers, configurable limit", async () => {
    await headFails(`HTTP/1.1 200 OK\r\nx-big: ${"a".repeat(70_000)}\r\ncontent-length: 0\r\n\r\n`);
    await headFails(`HTTP/1.1 200 OK\r\n${"x-a: 1\r\n".repeat(9000)}content-length: 0\r\n\r\n`);
    await headFails(`HTTP/1.1 200 OK\r\n${"x-a: 1\r\n".repeat(101)}content-length: 0\r\n\r\n`);
    await headFails(`HTTP/1.1 200 OK\r\nx-big: ${"a".repeat(2000)}\r\ncontent-length: 0\r\n\r\n`, {
      maxHeaderBytes: 1024,
    });
    // Exactly 100 fields and a large but allowed head pass.
    const ok = await rawServer(
      answer(
        `HTTP/1.1 200 OK\r\n${"x-a: 1\r\n".repeat(98)}x-b: ${"b".repeat(60_000)}\r\ncontent-length: 2\r\n\r\nok`,
      ),
    );
    const c = tcpClient();
    const res = await c.fetch(`${ok.url}/`);
    assert.equal(res.headers.get("x-a"), Array(98).fill("1").join(", "));
    assert.equal(await res.text(), "ok");
    await c.close();
    await ok.close();
  });

  it("Content-Length: conflicting, invalid; equal duplicates accepted", async () => {
    await headFails("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!");
    await headFails("HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello!");
    await headFails("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n");
    await headFails("HTTP/1.1 200 OK\r\ncontent-length: 0x10\r\n\r\n");
    await headFails("HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n");
    await headFails("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
    const srv = await rawServer(
      answer("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5, 5\r\n\r\nhello"),
    );
    const c = tcpClient();
    assert.equal(await (await c.fetch(`${srv.url}/`)).text(), "hello");
    await c.close();
    await srv.close();
  });

  it("bad chunked bodies fail through the body stream", async () => {
    await bodyFails("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n");
    await bodyFails("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"); // no CRLF after data
    await bodyFails("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n");
    await bodyFails(
      "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nfffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    );
    await bodyFails("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5 x\r\nhello\r\n0\r\n\r\n");
    await bodyFails(
      `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;${"e".repeat(5000)}\r\nhello\r\n0\r\n\r\n`,
    );
    await bodyFails("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel"); // truncated in a chunk
    await bodyFails("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"); // no last chunk
    await bodyFails(
      `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx: ${"t".repeat(70_000)}\r\n\r\n`,
    );
  });

  it("truncated Content-Length body fails through the body stream", async () => {
    await bodyFails(`HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n${"x".repeat(50)}`);
  });

  it("accepts chunk extensions, upper-case hex, trailers; reads until close without framing", async () => {
    const srv = await rawServer(
      answer(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5 ;a=b;c\r\nhello\r\nA\r\n0123456789\r\n0\r\nx-t: 1\r\n\r\n",
      ),
    );
    const c = tcpClient();
    assert.equal(await (await c.fetch(`${srv.url}/`)).text(), "hello0123456789");
    await srv.close();
    const eof = await rawServer(answer("HTTP/1.1 200 OK\r\n\r\nuntil the end", true));
    const res = await c.fetch(`${eof.url}/`);
    assert.equal(await res.text(), "until the end");
    await c.close();
    await eof.close();
  });

  it("205 carries no body; 304 ignores its Content-Length and keeps the connection", async () => {
    const responses = [
      "HTTP/1.1 205 Reset Content\r\ncontent-length: 0\r\n\r\n",
      "HTTP/1.1 304 Not Modified\r\ncontent-length: 1234\r\netag: x\r\n\r\n",
      "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ];
    const srv = await rawServer((socket, _req, n) => socket.write(responses[n] ?? ""));
    const c = tcpClient();
    const r205 = await c.fetch(`${srv.url}/`);
    assert.equal(r205.status, 205);
    assert.equal(r205.body, null);
    const r304 = await c.fetch(`${srv.url}/`);
    assert.equal(r304.status, 304);
    assert.equal(r304.body, null);
    assert.equal(await (await c.fetch(`${srv.url}/`)).text(), "ok");
    assert.equal(c.connects, 1);
    await c.close();
    await srv.close();
  });

  it("a server that closes without answering is E_UNAVAILABLE", async () => {
    const srv = await rawServer((socket) => socket.destroy());
    const c = tcpClient();
    await assert.rejects(c.fetch(`${srv.url}/`), (err: unknown) => isMtlsError(err, "E_UNAVAILABLE"));
    assert.equal(srv.requests.length, 1); // not retried: the connection was fresh
    await c.close();
    await srv.close();
  });
});

describe("keep-alive corner cases", { timeout: 30_000 }, () => {
  const OK = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
  let c: ReturnType<typeof tcpClient>;
  before(() => {
    c = tcpClient();
  });
  after(() => c.close());

  it("retries an idempotent request once when a reused connection dies before the response", async () => {
    // First request on each socket is answered; a second one on the same socket kills it.
    const srv = await rawServer((socket, _req, _n, perSocket) => {
      if (perSocket === 0) socket.write(OK);
      else socket.destroy();
    });
    const client = tcpClient();
    assert.equal(await (await client.fetch(`${srv.url}/a`)).text(), "ok");
    assert.equal(await (await client.fetch(`${srv.url}/b`)).text(), "ok");
    assert.equal(client.connects, 2);
    assert.deepEqual(
      srv.requests.map((r) => r.split(" ")[1]),
      ["/a", "/b", "/b"],
    );
    // Not for POST: the server may have acted on it.
    await assert.rejects(client.fetch(`${srv.url}/c`, { method: "POST", body: "x" }), (err: unknown) =>
      isMtlsError(err, "E_UNAVAILABLE"),
    );
    assert.equal(srv.requests.filter((r) => r.startsWith("POST")).length, 1);
    // Retried once only: a server that kills every reused request and every fresh one fails the fetch.
    await client.close();
    await srv.close();
  });

  it("does not retry twice", async () => {
    let fresh = 0;
    const srv = await rawServer((socket, _req, _n, perSocket) => {
      if (perSocket === 0 && fresh++ === 0) socket.write(OK);
      else socket.destroy();
    });
    const client = tcpClient();
    assert.equal(await (await client.fetch(`${srv.url}/a`)).text(), "ok");
    await assert.rejects(client.fetch(`${srv.url}/b`), (err: unknown) => isMtlsError(err, "E_UNAVAILABLE"));
    assert.equal(srv.requests.length, 3);
    await client.close();
    await srv.close();
  });

  it("an idle connection the server closes is dropped from the pool, not written to", async () => {
    const srv = await rawServer((socket) => {
      socket.write(OK);
      setTimeout(() => socket.end(), 50);
    });
    assert.equal(await (await c.fetch(`${srv.url}/1`)).text(), "ok");
    await until(
      () => (srv.sockets[0] as net.Socket).destroyed || srv.sockets[0]?.writableEnded === true,
      1000,
      "end",
    );
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(await (await c.fetch(`${srv.url}/2`)).text(), "ok");
    assert.equal(srv.requests.length, 2); // no request was lost to the dead socket
    assert.equal(srv.sockets.length, 2);
    await srv.close();
  });

  it("does not reuse a connection after TE+CL, Connection: close, HTTP/1.0, or extra bytes", async () => {
    const responses = [
      "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
      "HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
      `${OK}HTTP/1.1 200 OK\r\n`,
    ];
    const srv = await rawServer((socket, _req, n) => socket.write(responses[n] ?? OK));
    const client = tcpClient();
    for (let i = 0; i < responses.length; i++) {
      assert.equal(await (await client.fetch(`${srv.url}/${i}`)).text(), "ok");
    }
    assert.equal(client.connects, responses.length);
    // HTTP/1.0 with keep-alive is reused.
    await client.close();
    await srv.close();
    const ka = await rawServer(
      answer("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok"),
    );
    const c2 = tcpClient();
    await (await c2.fetch(`${ka.url}/`)).text();
    await (await c2.fetch(`${ka.url}/`)).text();
    assert.equal(c2.connects, 1);
    await c2.close();
    await ka.close();
  });

  it("a pending body keeps the connection out of the pool; a second request opens another", async () => {
    const srv = await rawServer(answer(OK));
    const client = tcpClient();
    const r1 = await client.fetch(`${srv.url}/1`);
    const r2 = await client.fetch(`${srv.url}/2`);
    assert.equal(client.connects, 2);
    assert.equal(await r1.text(), "ok");
    assert.equal(await r2.text(), "ok");
    await (await client.fetch(`${srv.url}/3`)).text();
    assert.equal(client.connects, 2);
    await client.close();
    await srv.close();
  });
});

describe("incremental parsing", { timeout: 30_000 }, () => {
  /** An in-memory transport that hands out `bytes` in pieces of `step` bytes, then EOF. */
  function scripted(bytes: Uint8Array, step: number) {
    let off = 0;
    let written = 0;
    return {
      get written() {
        return written;
      },
      stream: {
        async read() {
          if (off >= bytes.length) return null;
          const piece = bytes.slice(off, off + step);
          off += step;
          return piece;
        },
        async write(data: Uint8Array) {
          written += data.length;
        },
        async close() {},
      },
    };
  }

  it("parses the same response split at any byte boundary", async () => {
    const text =
      "HTTP/1.1 100 Continue\r\n\r\n" +
      "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" +
      "HTTP/1.1 201 Created Here\r\nx-a: 1\r\nx-a:2\r\nx-b:\t spaced \t\r\ntransfer-encoding: chunked\r\n\r\n" +
      "3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: t\r\n\r\n";
    const bytes = new TextEncoder().encode(text);
    for (const step of [1, 2, 3, 7, 13, 64, bytes.length]) {
      const t = scripted(bytes, step);
      const c = createHttpClient({ connect: async () => t.stream });
      const res = await c.fetch("http://example.test/x", { method: "POST", body: "hi" });
      assert.equal(res.status, 201, `step ${step}`);
      assert.equal(res.statusText, "Created Here");
      assert.equal(res.headers.get("x-a"), "1, 2");
      assert.equal(res.headers.get("x-b"), "spaced");
      assert.equal(await res.text(), "abc0123456789abcdef", `step ${step}`);
      assert.ok(t.written > 0);
      await c.close();
    }
  });
});
