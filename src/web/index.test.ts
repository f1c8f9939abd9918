/**
 * createMtlsClient / mtlsFetch: relay -> TLS 1.3 -> HTTP/1.1 wired together, against Node's HTTPS server
 * asking for a client certificate, reached through a minimal WebSocket relay (ws), so the whole path
 * the page takes runs here: the server sees the page's certificate, keep-alive reuses the one relay
 * session, close() ends it, and a wrong CA or a plain-http URL fail cleanly.
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:https";
import { type AddressInfo, connect, type Socket } from "node:net";
import { after, before, describe, it } from "node:test";
import type { TLSSocket } from "node:tls";
import { type WebSocket, WebSocketServer, WebSocket as WsClient } from "ws";
import { until } from "../../test/fixtures/wait.js";
import { createWebTlsPki, type WebTlsPki } from "../../test/fixtures/web-tls-pki.js";
import { isMtlsError } from "../errors.js";
import {
  configureMtlsFetch,
  createMtlsClient,
  type MtlsClient,
  type MtlsClientOptions,
  mtlsFetch,
  type RelayWebSocketConstructor,
} from "./index.js";

let pki: WebTlsPki;
let https: Server;
let httpsPort: number;
let relay: WebSocketServer;
let relayUrl: string;
/** Relay sessions currently open, and all ever opened. */
const live = new Set<WebSocket>();
let sessions = 0;
const targets = new Set<Socket>();

const WsImpl = WsClient as unknown as RelayWebSocketConstructor;

before(async () => {
  pki = await createWebTlsPki();
  https = createServer(
    {
      key: pki.ecServer.key,
      cert: pki.ecServer.cert,
      ca: pki.caPem,
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: "TLSv1.3",
      keepAliveTimeout: 5000,
    },
    (req, res) => {
      const socket = req.socket as TLSSocket;
      const peer = socket.getPeerCertificate();
      let size = 0;
      req.on("data", (c: Buffer) => {
        size += c.length;
      });
      req.on("end", () => {
        res.setHeader("content-type", "application/json");
        res.end(
          JSON.stringify({
            path: req.url,
            method: req.method,
            bodyBytes: size,
            authorized: socket.authorized,
            cn: peer && "subject" in peer ? peer.subject?.CN : null,
            alpn: socket.alpnProtocol,
          }),
        );
      });
    },
  );
  https.on("tlsClientError", () => {});
  await new Promise<void>((r) => https.listen(0, "127.0.0.1", r));
  httpsPort = (https.address() as AddressInfo).port;

  // The relay: one TCP connection to the HTTPS server per WebSocket, binary frames both ways.
  relay = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  relay.on("connection", (ws) => {
    sessions++;
    live.add(ws);
    const tcp = connect(httpsPort, "127.0.0.1");
    targets.add(tcp);
    tcp.on("data", (d) => ws.send(d));
    tcp.on("close", () => {
      targets.delete(tcp);
      ws.close(1000);
    });
    tcp.on("error", () => ws.close(1011));
    ws.on("message", (d: Buffer) => tcp.write(d));
    ws.on("close", () => {
      live.delete(ws);
      tcp.end();
    });
  });
  await new Promise<void>((r) => relay.on("listening", () => r()));
  relayUrl = `ws://127.0.0.1:${(relay.address() as AddressInfo).port}/.mtls/relay/api`;
});

after(async () => {
  for (const ws of live) ws.terminate();
  for (const s of targets) s.destroy();
  await new Promise<void>((r) => relay.close(() => r()));
  https.closeAllConnections();
  await new Promise<void>((r) => https.close(() => r()));
  pki.close();
});

const options = (extra: Partial<MtlsClientOptions> = {}): MtlsClientOptions => ({
  relay: relayUrl,
  trustAnchors: pki.caPem,
  identity: pki.client.identity,
  WebSocketImpl: WsImpl,
  tls: { handshakeTimeoutMs: 10_000 },
  relayTimeoutMs: 5000,
  ...extra,
});

describe("createMtlsClient", () => {
  it("fetches over the page's own mTLS through the relay, reusing one session", async () => {
    const before = sessions;
    const client = createMtlsClient(options());
    try {
      const res = await client.fetch(`https://localhost:${httpsPort}/hello?x=1`);
      assert.equal(res.status, 200);
      const body = (await res.json()) as Record<string, unknown>;
      assert.equal(body.path, "/hello?x=1");
      assert.equal(body.authorized, true, "the server verified the page's certificate");
      assert.equal(body.cn, pki.client.subject.replace(/^.*CN=/, ""));
      // A body both ways on the same keep-alive connection.
      const payload = new Uint8Array(100_000).fill(7);
      const res2 = await client.fetch(`https://localhost:${httpsPort}/upload`, {
        method: "POST",
        body: payload,
      });
      const body2 = (await res2.json()) as Record<string, unknown>;
      assert.equal(body2.method, "POST");
      assert.equal(body2.bodyBytes, 100_000);
      assert.equal(sessions - before, 1, "both requests went over one relay session");
    } finally {
      await client.close();
    }
    await until(() => live.size === 0, 5000, "close() ends the relay session");
  });

  it("asks a relay function with the request's origin, and accepts DER trust anchors", async () => {
    const seen: string[] = [];
    const client = createMtlsClient(
      options({
        relay: (origin) => {
          seen.push(origin.href);
          return relayUrl;
        },
        trustAnchors: [pki.caDer],
      }),
    );
    try {
      const res = await client.fetch(new URL(`https://localhost:${httpsPort}/a`));
      assert.equal(res.status, 200);
      await res.arrayBuffer();
      assert.deepEqual(seen, [`https://localhost:${httpsPort}/`]);
    } finally {
      await client.close();
    }
  });

  it("asks an identity function for every new connection", async () => {
    let asked = 0;
    const client = createMtlsClient(
      options({
        identity: async () => {
          asked++;
          return pki.client.identity;
        },
      }),
    );
    try {
      const body = (await (await client.fetch(`https://localhost:${httpsPort}/`)).json()) as Record<
        string,
        unknown
      >;
      assert.equal(body.authorized, true);
      assert.equal(asked, 1);
    } finally {
      await client.close();
    }
  });

  it("refuses a server whose certificate does not chain to the trust anchors", async () => {
    const client = createMtlsClient(options({ trustAnchors: pki.otherServer.cert }));
    try {
      await assert.rejects(client.fetch(`https://localhost:${httpsPort}/`), (err: unknown) =>
        isMtlsError(err, "E_TLS_CERT"),
      );
    } finally {
      await client.close();
    }
    await until(() => live.size === 0, 5000, "the relay session of the failed handshake is closed");
  });

  it("refuses a server name the certificate does not carry", async () => {
    const client = createMtlsClient(options({ serverName: "elsewhere.example" }));
    try {
      await assert.rejects(client.fetch(`https://localhost:${httpsPort}/`), (err: unknown) =>
        isMtlsError(err, "E_TLS_CERT"),
      );
    } finally {
      await client.close();
    }
  });

  it("refuses plain http and empty trust anchors", async () => {
    const client = createMtlsClient(options());
    try {
      await assert.rejects(client.fetch(`http://localhost:${httpsPort}/`), (err: unknown) =>
        isMtlsError(err, "E_USAGE"),
      );
    } finally {
      await client.close();
    }
    assert.throws(
      () => createMtlsClient(options({ trustAnchors: "no PEM here" })),
      (err: unknown) => isMtlsError(err),
    );
  });
});

describe("mtlsFetch", () => {
  let client: MtlsClient | undefined;
  after(() => client?.close());

  it("needs configureMtlsFetch first, then fetches through it", async () => {
    await assert.rejects(mtlsFetch(`https://localhost:${httpsPort}/`), (err: unknown) =>
      isMtlsError(err, "E_USAGE"),
    );
    client = configureMtlsFetch(options());
    const res = await mtlsFetch(`https://localhost:${httpsPort}/via-default`);
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(body.path, "/via-default");
    assert.equal(body.authorized, true);
  });
});
