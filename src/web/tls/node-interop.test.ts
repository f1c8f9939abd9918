/**
 * The TS TLS 1.3 client against Node's own TLS server (OpenSSL): every group x suite with ECDSA and RSA
 * server certificates, HelloRetryRequest, mutual authentication as the server sees it, the server's
 * refusal without a client certificate, close_notify both ways, and 100 MB each way with KeyUpdates.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { createServer, type Server, type TLSSocket } from "node:tls";
import { connectByteStream } from "../../../test/fixtures/byte-stream.js";
import { createWebTlsPki, type ServerFiles, type WebTlsPki } from "../../../test/fixtures/web-tls-pki.js";
import { connectTlsWithLimits } from "./client.js";
import { connectTls, TlsAlertError, type TlsClientOptions, type TlsConnection } from "./index.js";

let pki: WebTlsPki;

interface Seen {
  authorized: boolean;
  peerCN: string | undefined;
  cipher: string;
}

interface NodeServer {
  port: number;
  seen: Seen[];
  server: Server;
  close(): Promise<void>;
}

async function startServer(
  files: ServerFiles,
  opts: { ecdhCurve?: string; ciphersuites?: string; rejectUnauthorized?: boolean; alpn?: string[] },
  handler: (socket: TLSSocket) => void,
): Promise<NodeServer> {
  const seen: Seen[] = [];
  const server = createServer(
    {
      key: files.key,
      cert: files.cert,
      ca: pki.caPem,
      requestCert: true,
      rejectUnauthorized: opts.rejectUnauthorized ?? false,
      minVersion: "TLSv1.3",
      ...(opts.ecdhCurve ? { ecdhCurve: opts.ecdhCurve } : {}),
      ...(opts.ciphersuites ? { ciphers: opts.ciphersuites } : {}),
      ...(opts.alpn ? { ALPNProtocols: opts.alpn } : {}),
    },
    (socket) => {
      const peer = socket.getPeerCertificate();
      seen.push({
        authorized: socket.authorized,
        peerCN: peer && "subject" in peer ? (peer.subject?.CN as string | undefined) : undefined,
        cipher: socket.getCipher().name,
      });
      socket.on("error", () => {});
      handler(socket);
    },
  );
  server.on("tlsClientError", () => {});
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const sockets = new Set<TLSSocket>();
  server.on("secureConnection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    server,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

function echo(socket: TLSSocket): void {
  socket.pipe(socket);
}

async function client(port: number, extra: Partial<TlsClientOptions> = {}): Promise<TlsConnection> {
  const stream = await connectByteStream(port);
  return connectTls(stream, {
    serverName: "localhost",
    trustAnchors: [pki.caDer],
    identity: pki.client.identity,
    handshakeTimeoutMs: 5000,
    ...extra,
  });
}

async function readExactly(conn: TlsConnection, n: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let got = 0;
  while (got < n) {
    const chunk = await conn.read();
    if (chunk === null) throw new Error(`EOF after ${got} of ${n} bytes`);
    parts.push(chunk);
    got += chunk.length;
  }
  return Buffer.concat(parts);
}

const text = (s: string) => new TextEncoder().encode(s);

before(async () => {
  pki = await createWebTlsPki();
});

after(() => pki.close());

describe("TS TLS client vs Node tls server", { timeout: 60_000 }, () => {
  const GROUPS = [
    { group: "x25519", node: "X25519" },
    { group: "secp256r1", node: "P-256" },
  ] as const;
  const SUITES = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
  ] as const;
  for (const { group, node } of GROUPS) {
    for (const suite of SUITES) {
      for (const kind of ["ecdsa", "rsa"] as const) {
        it(`${group} + ${suite} with an ${kind} server certificate, mutual auth`, async () => {
          const files = kind === "ecdsa" ? pki.ecServer : pki.rsaServer;
          const srv = await startServer(files, { ecdhCurve: node, ciphersuites: suite }, echo);
          try {
            const other = group === "x25519" ? "secp256r1" : "x25519";
            const conn = await client(srv.port, { groups: [group, other] });
            assert.equal(conn.cipherSuite, suite);
            assert.equal(conn.group, group);
            assert.equal(conn.helloRetried, false);
            assert.equal(conn.serverCertificates.length, 2);
            await conn.write(text(`ping ${group} ${suite}`));
            assert.equal(
              new TextDecoder().decode(await readExactly(conn, 5 + group.length + 1 + suite.length)),
              `ping ${group} ${suite}`,
            );
            await conn.close();
            assert.deepEqual(srv.seen, [{ authorized: true, peerCN: "alice", cipher: suite }]);
          } finally {
            await srv.close();
          }
        });
      }
    }
  }

  it("answers a HelloRetryRequest when the server wants P-256 and the client sent X25519 first", async () => {
    const srv = await startServer(pki.ecServer, { ecdhCurve: "P-256" }, echo);
    try {
      const conn = await client(srv.port);
      assert.equal(conn.helloRetried, true);
      assert.equal(conn.group, "secp256r1");
      await conn.write(text("after retry"));
      assert.equal(new TextDecoder().decode(await readExactly(conn, 11)), "after retry");
      await conn.close();
      assert.equal(srv.seen[0]?.authorized, true);
      assert.equal(srv.seen[0]?.peerCN, "alice");
    } finally {
      await srv.close();
    }
  });

  it("negotiates ALPN", async () => {
    const srv = await startServer(pki.ecServer, { alpn: ["h2", "http/1.1"] }, echo);
    try {
      const conn = await client(srv.port, { alpn: ["http/1.1"] });
      assert.equal(conn.alpn, "http/1.1");
      await conn.close();
    } finally {
      await srv.close();
    }
  });

  it("receives certificate_required when it has no identity and the server insists", async () => {
    const srv = await startServer(pki.ecServer, { rejectUnauthorized: true }, echo);
    try {
      const started = await client(srv.port, { identity: undefined }).then(
        async (conn) => conn.read(),
        (err: unknown) => Promise.reject(err),
      );
      assert.fail(`expected an alert, got ${String(started)}`);
    } catch (err) {
      assert.ok(err instanceof TlsAlertError, String(err));
      assert.equal(err.alert, 116);
      assert.equal(err.alertName, "certificate_required");
      assert.equal(err.direction, "received");
    } finally {
      await srv.close();
    }
  });

  it("refuses a server certificate from another CA with unknown_ca", async () => {
    const srv = await startServer(pki.otherServer, {}, echo);
    try {
      await assert.rejects(client(srv.port), (err: unknown) => {
        assert.ok(err instanceof TlsAlertError, String(err));
        assert.equal(err.alert, 48);
        assert.equal(err.direction, "sent");
        assert.equal(err.code, "E_TLS_CERT");
        return true;
      });
    } finally {
      await srv.close();
    }
  });

  it("read() returns null after the server's close_notify", async () => {
    // Node sends no close_notify for an end() right in secureConnection; end once the client spoke.
    const srv = await startServer(pki.ecServer, {}, (socket) => socket.once("data", () => socket.end("bye")));
    try {
      const conn = await client(srv.port);
      await conn.write(text("?"));
      assert.equal(new TextDecoder().decode(await readExactly(conn, 3)), "bye");
      assert.equal(await conn.read(), null);
      assert.equal(await conn.read(), null);
      await conn.close();
    } finally {
      await srv.close();
    }
  });

  it("close() sends close_notify: the server sees a clean end after all data", async () => {
    let received = "";
    let ended: () => void = () => {};
    const endSeen = new Promise<void>((r) => {
      ended = r;
    });
    const srv = await startServer(pki.ecServer, {}, (socket) => {
      socket.setEncoding("utf8");
      socket.on("data", (d: string) => {
        received += d;
      });
      socket.on("end", () => ended());
    });
    try {
      const conn = await client(srv.port);
      await conn.write(text("last words"));
      await conn.close();
      await Promise.race([
        endSeen,
        new Promise((_, rej) => setTimeout(() => rej(new Error("no end")), 5000)),
      ]);
      assert.equal(received, "last words");
      await assert.rejects(conn.write(text("x")));
    } finally {
      await srv.close();
    }
  });

  it("moves 100 MB each way through an echo server with KeyUpdates (explicit and automatic)", async () => {
    const srv = await startServer(pki.ecServer, {}, echo);
    const total = 100 * 1024 * 1024;
    const chunk = new Uint8Array(1024 * 1024);
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 131 + 7) & 0xff;
    try {
      const stream = await connectByteStream(srv.port);
      // Automatic write-key update every 2000 records (~32 MB) on top of the explicit one.
      const conn = await connectTlsWithLimits(
        stream,
        { serverName: "localhost", trustAnchors: [pki.caDer], identity: pki.client.identity },
        { keyUpdateAfterRecords: 2000 },
      );
      const started = performance.now();
      const sentHash = createHash("sha256");
      const writing = (async () => {
        for (let sent = 0, n = 0; sent < total; sent += chunk.length, n++) {
          chunk[0] = n & 0xff;
          sentHash.update(chunk);
          await conn.write(chunk);
          if (sent === total / 2) await conn.keyUpdate(true);
        }
      })();
      const gotHash = createHash("sha256");
      let got = 0;
      while (got < total) {
        const c = await conn.read();
        if (c === null) throw new Error(`EOF after ${got}`);
        gotHash.update(c);
        got += c.length;
      }
      await writing;
      const seconds = (performance.now() - started) / 1000;
      assert.equal(got, total);
      assert.equal(gotHash.digest("hex"), sentHash.digest("hex"));
      console.log(
        `# 100 MB each way in ${seconds.toFixed(2)} s: ${(100 / seconds).toFixed(1)} MB/s per direction (${(200 / seconds).toFixed(1)} MB/s total)`,
      );
      await conn.close();
    } finally {
      await srv.close();
    }
  });
});
