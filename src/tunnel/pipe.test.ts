import assert from "node:assert/strict";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { after, describe, it } from "node:test";
import { connect as tlsConnect } from "node:tls";
import { createTestPki } from "../../test/fixtures/pki.js";
import { within } from "../../test/fixtures/wait.js";
import type { ConnectionAuditFields } from "../observe/index.js";
import { Registry } from "../observe/index.js";
import { makeSan } from "../pki/names.js";
import { compilePolicy, rulesFromFlags } from "../policy/index.js";
import { loadTlsMaterial, verifyPeer } from "../tls/index.js";
import { pipeSockets } from "./pipe.js";
import { TunnelServer } from "./server.js";

/** A listening server on 127.0.0.1 that hands its accepted sockets out one by one. */
async function acceptor(): Promise<{ server: Server; port: number; next: () => Promise<Socket> }> {
  const queue: Socket[] = [];
  const waiters: ((s: Socket) => void)[] = [];
  const server = createServer({ allowHalfOpen: true }, (s) => {
    const w = waiters.shift();
    if (w) w(s);
    else queue.push(s);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return {
    server,
    port: (server.address() as AddressInfo).port,
    next: () => {
      const s = queue.shift();
      return s ? Promise.resolve(s) : new Promise((resolve) => waiters.push(resolve));
    },
  };
}

/**
 * client ──▶ [a | pipe | b] ──▶ backend: `client` is the user's end, `backend` the service's end,
 * `a` and `b` the tunnel's two sockets.
 */
async function setup() {
  const front = await acceptor();
  const back = await acceptor();
  const client = connect({ port: front.port, host: "127.0.0.1", allowHalfOpen: true });
  const a = await front.next();
  const b = connect({ port: back.port, host: "127.0.0.1", allowHalfOpen: true });
  const backend = await back.next();
  await once(b, "connect");
  const close = () => {
    for (const s of [client, a, b, backend]) s.destroy();
    front.server.close();
    back.server.close();
  };
  return { client, a, b, backend, close };
}

function collect(s: Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = "";
    s.setEncoding("utf8");
    s.on("data", (d) => {
      text += d;
    });
    s.on("end", () => resolve(text));
  });
}

/** Fails the test instead of hanging when something never happens. */
const cleanups: (() => void)[] = [];
after(() => {
  for (const c of cleanups) c();
});

describe("pipe", () => {
  it("carries a half-close through: the client ends its writes and still reads the answer", async () => {
    const t = await setup();
    cleanups.push(t.close);
    const pipe = pipeSockets(t.a, t.b);
    const atBackend = collect(t.backend);
    const atClient = collect(t.client);
    t.client.end("hello");
    assert.equal(await within(atBackend, 2000, "backend sees FIN"), "hello");
    // The backend learned of the FIN and still writes; the client still reads.
    t.backend.write("wor");
    await new Promise((r) => setTimeout(r, 20));
    t.backend.end("ld");
    assert.equal(await within(atClient, 2000, "client sees the rest"), "world");
    const r = await within(pipe.done, 2000, "pipe done");
    assert.deepEqual(r, { bytesIn: 5, bytesOut: 5, reason: "closed" });
    assert.ok(t.a.destroyed && t.b.destroyed);
  });

  it("destroys both sides when one resets", async () => {
    const t = await setup();
    cleanups.push(t.close);
    const pipe = pipeSockets(t.a, t.b);
    t.client.write("x");
    await new Promise((r) => setTimeout(r, 20));
    t.backend.resetAndDestroy();
    const r = await within(pipe.done, 2000, "pipe done");
    assert.ok(r.reason === "reset" || r.reason === "error", r.reason);
    t.client.resume();
    await within(once(t.client, "end"), 2000, "client sees the close");
  });

  it("closes both sides after the idle timeout", async () => {
    const t = await setup();
    cleanups.push(t.close);
    const pipe = pipeSockets(t.a, t.b, { idleTimeoutMs: 150 });
    t.client.write("ping");
    const started = Date.now();
    const r = await within(pipe.done, 2000, "idle timeout");
    assert.equal(r.reason, "idle_timeout");
    assert.ok(Date.now() - started >= 140);
    t.client.resume();
    await within(once(t.client, "end"), 2000, "client sees the close");
  });

  it("traffic in either direction alone keeps it from the idle timeout", async () => {
    for (const talker of ["client", "backend"] as const) {
      const t = await setup();
      cleanups.push(t.close);
      const pipe = pipeSockets(t.a, t.b, { idleTimeoutMs: 200 });
      t.client.resume();
      t.backend.resume();
      const writer = setInterval(() => t[talker].write("x"), 50);
      await new Promise((r) => setTimeout(r, 600));
      clearInterval(writer);
      assert.equal(pipe.closed, false, `${talker} writing every 50 ms`);
      const stopped = Date.now();
      const r = await within(pipe.done, 2000, "idle timeout after the traffic stops");
      assert.equal(r.reason, "idle_timeout");
      assert.ok(Date.now() - stopped >= 150);
      assert.ok((talker === "client" ? r.bytesIn : r.bytesOut) >= 10);
    }
  });

  it("close(reason) ends it with that reason", async () => {
    const t = await setup();
    cleanups.push(t.close);
    const pipe = pipeSockets(t.a, t.b);
    pipe.close("revoked");
    pipe.close("later reasons lose");
    assert.equal((await pipe.done).reason, "revoked");
  });

  it("a FIN that came before the pipe (its 'end' already emitted) still closes both sides", async () => {
    // A health check that connects and closes while the tunnel is still verifying or connecting to
    // the target: Node sockets read from accept on, so 'end' has fired before pipe() subscribes.
    const t = await setup();
    cleanups.push(t.close);
    t.client.end();
    await within(once(t.a, "end"), 2000, "the tunnel's socket reads the FIN");
    assert.ok(t.a.readableEnded);
    const pipe = pipeSockets(t.a, t.b);
    // The FIN is passed on: the backend sees its end, answers and closes; all is torn down.
    t.backend.resume();
    await within(once(t.backend, "end"), 1000, "backend sees the FIN");
    t.backend.end("bye");
    const atClient = collect(t.client);
    assert.equal(await within(atClient, 1000, "client sees the answer and the close"), "bye");
    const r = await within(pipe.done, 1000, "pipe done");
    assert.deepEqual(r, { bytesIn: 0, bytesOut: 3, reason: "closed" });
  });

  it("FINs from both sides before the pipe: done at once, both sockets closed", async () => {
    const t = await setup();
    cleanups.push(t.close);
    t.client.end();
    t.backend.end();
    await within(Promise.all([once(t.a, "end"), once(t.b, "end")]), 2000, "both FINs read");
    const pipe = pipeSockets(t.a, t.b);
    const r = await within(pipe.done, 1000, "pipe done");
    assert.equal(r.reason, "closed");
    t.client.resume();
    t.backend.resume();
    await within(Promise.all([once(t.client, "close"), once(t.backend, "close")]), 1000, "both closed");
  });

  it("a socket already destroyed (or errored) before the pipe ends it at once, the other side too", async () => {
    const t = await setup();
    cleanups.push(t.close);
    t.a.destroy();
    await once(t.a, "close");
    const pipe = pipeSockets(t.a, t.b);
    const r = await within(pipe.done, 1000, "pipe done");
    assert.equal(r.reason, "reset");
    assert.ok(t.b.destroyed);

    const u = await setup();
    cleanups.push(u.close);
    u.b.on("error", () => undefined);
    u.b.destroy(new Error("boom"));
    // (events.once would reject with the 'error' that comes first.)
    await new Promise((resolve) => u.b.once("close", resolve));
    const pipe2 = pipeSockets(u.a, u.b);
    const r2 = await within(pipe2.done, 1000, "pipe done");
    assert.equal(r2.reason, "error");
    assert.equal(r2.error?.message, "boom");
    assert.ok(u.a.destroyed);
  });

  it("respects backpressure: 200 MB into a slow reader stay within a few MB of buffers", async (tc) => {
    const t = await setup();
    cleanups.push(t.close);
    const TOTAL = 200 * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 7);
    let counted = 0;
    const pipe = pipeSockets(t.a, t.b, {
      onData: (dir, n) => {
        if (dir === "in") counted += n;
      },
    });
    let maxBuffered = 0;
    const sample = () => {
      const buffered = t.a.readableLength + t.a.writableLength + t.b.readableLength + t.b.writableLength;
      maxBuffered = Math.max(maxBuffered, buffered);
    };
    const sampler = setInterval(sample, 2);
    const rssBefore = process.memoryUsage().rss;
    let maxRss = rssBefore;
    const rssSampler = setInterval(() => {
      maxRss = Math.max(maxRss, process.memoryUsage().rss);
    }, 20);

    // The writer writes as fast as the tunnel lets it.
    let written = 0;
    const writer = (async () => {
      while (written < TOTAL) {
        written += chunk.length;
        if (!t.client.write(chunk)) await once(t.client, "drain");
      }
      t.client.end();
    })();

    // The reader does not read at all for 500 ms: the writer must stall.
    t.backend.pause();
    await new Promise((r) => setTimeout(r, 500));
    sample();
    const writtenWhileStalled = written;
    assert.ok(
      writtenWhileStalled < 32 * 1024 * 1024,
      `the writer got ${writtenWhileStalled} bytes in while nothing was read`,
    );
    // Then it reads slowly: a pause of 2 ms after every MB.
    let received = 0;
    let sinceRest = 0;
    t.backend.on("data", (d: Buffer) => {
      received += d.length;
      sinceRest += d.length;
      if (sinceRest >= 1024 * 1024) {
        sinceRest = 0;
        t.backend.pause();
        setTimeout(() => t.backend.resume(), 2);
      }
    });
    t.backend.resume();
    await within(once(t.backend, "end"), 60_000, "200 MB through");
    await writer;
    clearInterval(sampler);
    clearInterval(rssSampler);
    t.backend.end();
    const r = await within(pipe.done, 5000, "pipe done");
    assert.equal(received, TOTAL);
    assert.equal(r.bytesIn, TOTAL);
    assert.equal(counted, TOTAL);
    tc.diagnostic(
      `stalled writer got ${(writtenWhileStalled / 1048576).toFixed(1)} MB in; max buffered in the tunnel ${(maxBuffered / 1048576).toFixed(2)} MB; RSS +${((maxRss - rssBefore) / 1048576).toFixed(1)} MB`,
    );
    assert.ok(maxBuffered < 4 * 1024 * 1024, `the tunnel buffered up to ${maxBuffered} bytes`);
    assert.ok(maxRss - rssBefore < 100 * 1024 * 1024, `RSS grew by ${maxRss - rssBefore} bytes`);
  });
});

describe("a tunnel server and a client that closes before its connection is piped", () => {
  it("a TLS client that sends nothing and closes: both sides closed within a second", async () => {
    const pki = await createTestPki("mtls-pipe-");
    cleanups.push(() => void pki.close());
    const server = await pki.issue("server", "tunnel", { sans: [makeSan("ip", "127.0.0.1")] });
    const alice = await pki.issue("client", "alice");
    const material = await loadTlsMaterial({ cert: server.cert, key: server.key, ca: server.ca });
    cleanups.push(() => material.close());

    // The target records its connections and when each one's end arrived.
    const target = await acceptor();
    cleanups.push(() => target.server.close());
    const tunnel = new TunnelServer({
      name: "early-fin",
      listen: { kind: "tcp", host: "127.0.0.1", port: 0 },
      routes: [
        {
          target: { kind: "tcp", host: "127.0.0.1", port: target.port },
          policy: compilePolicy(rulesFromFlags({ allowCn: ["alice"] })),
        },
      ],
      material,
      registry: new Registry(),
      // A slow verification (an OCSP responder, say): the client's close arrives meanwhile.
      verifyPeer: async (socket, opts) => {
        await new Promise((r) => setTimeout(r, 150));
        return verifyPeer(socket, opts);
      },
    });
    const events: ConnectionAuditFields[] = [];
    tunnel.on("connection", (e: ConnectionAuditFields) => events.push(e));
    const address = await tunnel.start();
    cleanups.push(() => void tunnel.stop(100));
    assert.equal(address.kind, "tcp");

    const client = tlsConnect({
      host: "127.0.0.1",
      port: address.kind === "tcp" ? address.port : 0,
      ca: readFileSync(server.ca),
      cert: readFileSync(alice.cert),
      key: readFileSync(alice.key),
      servername: "localhost",
      checkServerIdentity: () => undefined,
    });
    client.on("error", () => undefined);
    cleanups.push(() => client.destroy());
    await within(once(client, "secureConnect"), 5000, "TLS connect");
    client.resume();
    const clientClosed = once(client, "close");
    const started = Date.now();
    client.end(); // close_notify + FIN, nothing sent

    const atTarget = await within(target.next(), 2000, "the tunnel connects to the target");
    atTarget.resume();
    await within(once(atTarget, "end"), 1000, "the target sees the FIN passed on");
    atTarget.end();
    await within(clientClosed, 1000, "the client's connection is closed");
    await within(
      (async () => {
        while (events.length === 0) await new Promise((r) => setTimeout(r, 10));
      })(),
      1000,
      "the audit line",
    );
    assert.equal(events[0]?.reason, "closed");
    assert.equal(tunnel.openConnections, 0);
    assert.ok(Date.now() - started < 2000);
  });
});
