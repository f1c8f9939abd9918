import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { Duplex } from "node:stream";
import { after, before, describe, it } from "node:test";
import { createServer as createTlsServer, type Server as TlsServer, connect as tlsConnect } from "node:tls";
import { fileURLToPath } from "node:url";
import { WebSocket } from "ws";
import { createTestPki, type IssuedFiles, type TestPki } from "../../test/fixtures/pki.js";
import { until, within } from "../../test/fixtures/wait.js";
import { isMtlsError } from "../errors.js";
import { type BuiltGateway, buildGateway } from "../gateway/build.js";
import type { RelaySessionAuditFields } from "../gateway/relay.js";
import { createRegistry, silentLogger } from "../observe/index.js";
import { makeSan } from "../pki/names.js";
import { openRelay, RelayError, type RelayWebSocketConstructor } from "./relay.js";
import type { ByteStream } from "./stream.js";

let pki: TestPki;
let gw: BuiltGateway;
let base: string;
let ca: string;
const files: Record<string, IssuedFiles> = {};
const servers: (Server | TlsServer)[] = [];
const ports: Record<string, number> = {};
const sessions: RelaySessionAuditFields[] = [];
let heldTarget: ((s: Socket) => void) | undefined;

/** ws's WebSocket, trusting the test CA: what the page's global WebSocket is in a browser. */
const TestWebSocket = class extends WebSocket {
  constructor(url: string, protocols?: string | string[]) {
    super(url, protocols, { ca });
  }
} as unknown as RelayWebSocketConstructor;

const open = (name: string, timeoutMs?: number) =>
  openRelay(`${base}/.mtls/relay/${name}`, {
    WebSocketImpl: TestWebSocket,
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
  });

const listen = async (name: string, server: Server | TlsServer) => {
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  ports[name] = (server.address() as AddressInfo).port;
};

const bytes = (n: number, seed = 3) => {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 17 + seed) & 0xff;
  return b;
};

/** Reads until `n` bytes came (or EOF). */
async function readBytes(s: ByteStream, n: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let got = 0;
  while (got < n) {
    const c = await s.read();
    if (c === null) break;
    parts.push(c);
    got += c.length;
  }
  return Buffer.concat(parts);
}

/** A Node Duplex over a ByteStream, for Node's TLS client. */
function duplexOf(stream: ByteStream): Duplex {
  return new Duplex({
    read() {
      stream.read().then(
        (c) => this.push(c ? Buffer.from(c) : null),
        (err: Error) => this.destroy(err),
      );
    },
    write(chunk: Buffer, _enc, cb) {
      stream.write(new Uint8Array(chunk)).then(() => cb(), cb);
    },
    final(cb) {
      stream.close().then(() => cb(), cb);
    },
  });
}

before(async () => {
  pki = await createTestPki("mtls-web-relay-");
  files.gw = await pki.issue("server", "gw", {
    sans: [makeSan("dns", "localhost"), makeSan("ip", "127.0.0.1")],
  });
  files.target = await pki.issue("server", "target", { sans: [makeSan("dns", "api.internal")] });
  files.page = await pki.issue("client", "page", { sans: [makeSan("uri", "spiffe://acme.test/page")] });
  ca = readFileSync((files.gw as IssuedFiles).ca, "utf8");
  await listen(
    "echo",
    createServer((s) => {
      s.on("error", () => undefined);
      s.pipe(s);
    }),
  );
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
      },
      (s) => {
        s.on("error", () => undefined);
        s.write(`hello ${s.getPeerCertificate().subjectaltname}\n`);
        s.pipe(s);
      },
    ),
  );
  await listen(
    "bye",
    createServer((s) => {
      s.on("error", () => undefined);
      s.end("goodbye");
    }),
  );
  await listen(
    "held",
    createServer((s) => {
      s.on("error", () => undefined);
      heldTarget?.(s);
    }),
  );
  // Accepts TCP and never answers: a WebSocket to it never opens.
  await listen(
    "silent",
    createServer((s) => s.on("error", () => undefined)),
  );
  const gone = createServer();
  await new Promise<void>((r) => gone.listen(0, "127.0.0.1", () => r()));
  ports.dead = (gone.address() as AddressInfo).port;
  await new Promise<void>((r) => gone.close(() => r()));

  const g = files.gw as IssuedFiles;
  gw = await buildGateway(
    {
      name: "webrelay",
      listen: { host: "127.0.0.1", port: 0 },
      tls: { cert: g.cert, key: g.key, ca: g.ca },
      routes: [{ path: "/", upstream: `http://127.0.0.1:${ports.dead}`, mode: "none", rules: [] }],
      relay: {
        targets: ["echo", "mtls", "bye", "dead", "held"].map((name) => ({
          name,
          target: `127.0.0.1:${ports[name]}`,
        })),
      },
    },
    { logger: silentLogger(), registry: createRegistry() },
  );
  gw.gateway.on("relay", (r: RelaySessionAuditFields) => sessions.push(r));
  base = `wss://127.0.0.1:${((await gw.start()) as AddressInfo).port}`;
});

after(async () => {
  await gw?.stop(1000);
  for (const s of servers) s.close();
  await pki?.close();
});

describe("openRelay (mtls/web)", () => {
  it("writes and reads bytes through the gateway's relay, in order, and closes", async () => {
    const s = await open("echo");
    const data = bytes(200_000);
    const n = sessions.length;
    for (let i = 0; i < data.length; i += 30_000) await s.write(data.subarray(i, i + 30_000));
    assert.deepEqual(new Uint8Array(await readBytes(s, data.length)), data);
    await within(s.close(), 5_000, "close");
    await s.close();
    await assert.rejects(s.write(bytes(1)), (e: unknown) => isMtlsError(e, "E_RELAY"));
    assert.equal(await s.read(), null);
    await until(() => sessions.length > n, 5_000, "the session's audit");
    const r = sessions[n] as RelaySessionAuditFields;
    assert.equal(r.relay, "echo");
    assert.equal(r.bytesToTarget, data.length);
    assert.equal(r.result, "closed");
    assert.equal(r.closeCode, 1000);
  });

  it("carries mutual TLS end to end: Node's TLS client over the ByteStream reaches an mTLS server", async () => {
    const s = await open("mtls");
    const p = files.page as IssuedFiles;
    const tls = tlsConnect({
      socket: duplexOf(s),
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
    await within(new Promise((r) => tls.once("secureConnect", r)), 5_000, "the handshake");
    assert.equal(tls.getProtocol(), "TLSv1.3");
    await until(() => got.includes("\n"), 5_000, "the greeting");
    assert.equal(got, "hello URI:spiffe://acme.test/page\n");
    tls.write("over the relay");
    await until(() => got.endsWith("over the relay"), 5_000, "the echo");
    tls.end();
  });

  it("offers WebSocket subprotocols (the relay takes the first)", async () => {
    const s = await openRelay(`${base}/.mtls/relay/echo`, {
      WebSocketImpl: TestWebSocket,
      protocols: ["mtls-relay.v1", "other"],
    });
    await s.write(bytes(5));
    assert.deepEqual(new Uint8Array(await readBytes(s, 5)), bytes(5));
    await s.close();
  });

  it("read() gives what the target sent, then null when the target closed (1000)", async () => {
    const s = await open("bye");
    assert.equal(Buffer.from(await readBytes(s, 1000)).toString(), "goodbye");
    assert.equal(await s.read(), null);
    await s.close();
  });

  it("a target that is down: read() rejects with E_RELAY and the close code 1011", async () => {
    const s = await open("dead");
    const err = await s.read().then(
      () => assert.fail("read should fail"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof RelayError);
    assert.equal(err.code, "E_RELAY");
    assert.equal(err.closeCode, 1011);
    assert.match(err.message, /ECONNREFUSED/);
    await assert.rejects(s.write(bytes(10)), (e: unknown) => isMtlsError(e, "E_RELAY"));
    await s.close();
  });

  it("rejects with E_RELAY when the relay refuses the session or does not open in time", async () => {
    await assert.rejects(open("nope"), (e: unknown) => e instanceof RelayError && e.closeCode === 1006);
    const t0 = Date.now();
    await assert.rejects(
      openRelay(`ws://127.0.0.1:${ports.silent}/.mtls/relay/x`, {
        WebSocketImpl: TestWebSocket,
        timeoutMs: 300,
      }),
      (e: unknown) => isMtlsError(e, "E_RELAY") && /300 ms/.test((e as Error).message),
    );
    assert.ok(Date.now() - t0 < 2_000);
  });

  it("write() waits while the WebSocket's queue is full (the target does not read), then all bytes arrive", async () => {
    let target: Socket | undefined;
    heldTarget = (sock) => {
      target = sock;
      sock.pause();
    };
    const s = await open("held");
    await s.write(bytes(1));
    await until(() => target !== undefined, 5_000, "the target connection");
    const chunk = bytes(64 * 1024);
    const total = 40 * 1024 * 1024;
    let written = 0;
    let failed: unknown;
    const pump = (async () => {
      while (written < total) {
        await s.write(chunk);
        written += chunk.length;
      }
    })().catch((e: unknown) => {
      failed = e;
    });
    await new Promise((r) => setTimeout(r, 500));
    // Socket buffers on the way hold ~10 MB; without back-pressure every write resolves at once.
    assert.ok(written < 28 * 1024 * 1024, `${written} bytes written unhindered`);
    let received = 0;
    const t = target as Socket;
    t.on("data", (d: Buffer) => {
      received += d.length;
    });
    t.resume();
    await within(pump, 15_000, "all writes");
    assert.equal(failed, undefined);
    await until(() => received >= total + 1, 15_000, "all bytes at the target");
    await s.close();
    heldTarget = undefined;
  });

  it("uses no node:* module, Buffer or process (it runs in browsers)", () => {
    const src = readFileSync(fileURLToPath(new URL("./relay.ts", import.meta.url)), "utf8");
    assert.doesNotMatch(src, /from "node:|require\(|\bBuffer\.|\bprocess\./);
  });
});
