/**
 * Negative tests of the TS TLS 1.3 client against an independent test server (test/fixtures/tls13-server.ts,
 * node:crypto, proven against OpenSSL by its own test) that injects one fault per connection: the client
 * must reject with a TlsAlertError naming the right alert, and the server must have received exactly that
 * alert before the client closed the transport. Certificates come from the test PKI (test/fixtures/pki.ts).
 * A few honest handshakes first show the failures are the faults' doing, not a broken handshake.
 */
import assert from "node:assert/strict";
import { sign } from "node:crypto";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { connectByteStream } from "../../../test/fixtures/byte-stream.js";
import { createTestPki, type IssuedFiles, type TestPki } from "../../../test/fixtures/pki.js";
import {
  type Misbehavior,
  pemBlocks,
  type ServerConnection,
  serverFiles,
  startTls13Server,
  type Tls13Server,
  type Tls13ServerOptions,
} from "../../../test/fixtures/tls13-server.js";
import { within } from "../../../test/fixtures/wait.js";
import { MtlsError } from "../../errors.js";
import { makeSan } from "../../pki/names.js";
import {
  type ClientIdentity,
  connectTls,
  TlsAlertError,
  type TlsClientOptions,
  type TlsConnection,
} from "./index.js";

const STEP_MS = 5000;

let pki: TestPki;
let server: IssuedFiles;
let caPem: string;
let identity: ClientIdentity;
const certs: Record<"otherCa" | "wrongName" | "expired", IssuedFiles> = {} as never;

before(async () => {
  pki = await createTestPki("mtls-web-tls-neg-");
  server = await pki.issue("server", "srv", { sans: [makeSan("dns", "localhost")] });
  const alice = await pki.issue("client", "alice");
  caPem = readFileSync(server.ca, "utf8");
  const aliceKey = readFileSync(alice.key, "utf8");
  identity = {
    chain: pemBlocks(readFileSync(alice.cert, "utf8")).map((b) => new Uint8Array(b)),
    scheme: 0x0403,
    sign: async (data) => new Uint8Array(sign("sha256", data, { key: aliceKey, dsaEncoding: "ieee-p1363" })),
  };
  certs.otherCa = await pki.issue("server", "evil", { sans: [makeSan("dns", "localhost")], other: true });
  certs.wrongName = await pki.issue("server", "wrong-name", {
    sans: [makeSan("dns", "elsewhere.acme.test")],
  });
  certs.expired = await pki.issue("server", "expired", {
    sans: [makeSan("dns", "localhost")],
    at: new Date(Date.now() - 2 * 3_600_000),
    ttlMs: 3_600_000,
  });
});
after(() => pki.close());

function clientOptions(extra: Partial<TlsClientOptions> = {}): TlsClientOptions {
  return {
    serverName: "localhost",
    trustAnchors: pemBlocks(caPem).map((b) => new Uint8Array(b)),
    identity,
    handshakeTimeoutMs: 4000,
    ...extra,
  };
}

/** Runs `body` against a fresh server with `opts`; returns the server's record of the one connection. */
async function withServer(
  opts: Partial<Tls13ServerOptions>,
  body: (port: number, srv: Tls13Server) => Promise<void>,
  files: IssuedFiles = server,
): Promise<ServerConnection> {
  const srv = await startTls13Server({ ...serverFiles(files), clientCa: caPem, ...opts });
  try {
    await body(srv.port, srv);
    const conn = await srv.connection(0, STEP_MS);
    await within(conn.closed, STEP_MS, "server side of the connection closed");
    return conn;
  } finally {
    await srv.close();
  }
}

/** connectTls must fail; returns the error (never hangs past STEP_MS). */
async function handshakeError(port: number, extra: Partial<TlsClientOptions> = {}): Promise<unknown> {
  const stream = await connectByteStream(port);
  try {
    const conn = await within(connectTls(stream, clientOptions(extra)), STEP_MS, "connectTls");
    await conn.close();
  } catch (err) {
    return err;
  }
  assert.fail("connectTls accepted the faulty server");
}

function assertSent(err: unknown, alert: number, name: string): void {
  assert.ok(err instanceof TlsAlertError, `expected a TlsAlertError, got ${String(err)}`);
  assert.equal(err.alertName, name, err.message);
  assert.equal(err.alert, alert);
  assert.equal(err.direction, "sent");
}

/** The server received exactly this one alert, and the client then closed the transport. */
function assertServerGot(conn: ServerConnection, name: string): void {
  assert.deepEqual(
    conn.alertsReceived.map((a) => a.name),
    [name],
  );
  assert.equal(conn.alertsReceived[0]?.level, 2, "the alert is fatal");
  assert.equal(conn.peerClosed, true, "the client closed the transport");
  assert.equal(conn.handshakeComplete, false);
}

describe("control: honest handshakes with the same server succeed", () => {
  const cases: [string, Partial<Tls13ServerOptions>, Partial<TlsClientOptions>][] = [
    ["defaults", {}, {}],
    ["forced HelloRetryRequest", { forceHelloRetry: true }, {}],
    [
      "ChaCha20-Poly1305, P-256, 100-byte records",
      { maxFragment: 100 },
      {
        groups: ["secp256r1"],
        cipherSuites: ["TLS_CHACHA20_POLY1305_SHA256"],
      },
    ],
    ["AES-256-GCM", {}, { cipherSuites: ["TLS_AES_256_GCM_SHA384"] }],
    ["HelloRetryRequest with a cookie", { forceHelloRetry: true, helloRetryCookie: true }, {}],
  ];
  for (const [name, opts, extra] of cases) {
    test(name, { timeout: 10_000 }, async () => {
      let tls: TlsConnection | undefined;
      const conn = await withServer(opts, async (port) => {
        tls = await within(
          connectTls(await connectByteStream(port), clientOptions(extra)),
          STEP_MS,
          "connectTls",
        );
        await tls.write(new TextEncoder().encode("ping"));
        const got = await within(tls.read(), STEP_MS, "echo");
        assert.equal(new TextDecoder().decode(got ?? new Uint8Array()), "ping");
        await tls.keyUpdate(true);
        await tls.write(new TextEncoder().encode("pong"));
        assert.equal(
          new TextDecoder().decode((await within(tls.read(), STEP_MS, "echo")) ?? new Uint8Array()),
          "pong",
        );
        await tls.close();
      });
      assert.equal(conn.handshakeComplete, true);
      assert.equal(conn.error, null);
      assert.equal(conn.keyUpdatesReceived, 1);
      assert.deepEqual(
        conn.alertsReceived.map((a) => a.name),
        ["close_notify"],
      );
      assert.equal(tls?.helloRetried, opts.forceHelloRetry === true);
      assert.equal(tls?.group, conn.group);
      assert.equal(tls?.cipherSuite, conn.cipherSuite);
      assert.deepEqual(new Uint8Array(conn.clientCertificates[0] ?? []), identity.chain[0]);
    });
  }
});

describe("server certificates: the client refuses with the right alert", () => {
  const cases: [keyof typeof certs, number, string][] = [
    ["otherCa", 48, "unknown_ca"],
    ["wrongName", 42, "bad_certificate"],
    ["expired", 45, "certificate_expired"],
  ];
  for (const [which, alert, name] of cases) {
    test(`${which} -> ${name}`, { timeout: 10_000 }, async () => {
      let err: unknown;
      const conn = await withServer(
        {},
        async (port) => {
          err = await handshakeError(port);
        },
        certs[which],
      );
      assertSent(err, alert, name);
      assert.equal((err as MtlsError).code, "E_TLS_CERT");
      assertServerGot(conn, name);
    });
  }
});

describe("protocol faults: the client refuses with the right alert", () => {
  const cases: [Misbehavior, number, string][] = [
    ["tampered-finished", 51, "decrypt_error"],
    ["bad-certificate-verify", 51, "decrypt_error"],
    ["oversized-plaintext", 22, "record_overflow"],
    ["oversized-padded-plaintext", 22, "record_overflow"],
    ["oversized-ciphertext", 22, "record_overflow"],
    ["finished-before-certificate", 10, "unexpected_message"],
    ["second-server-hello", 10, "unexpected_message"],
    ["tls12-server-hello", 70, "protocol_version"],
    ["downgrade-sentinel", 47, "illegal_parameter"],
    ["hrr-twice", 10, "unexpected_message"],
    ["hrr-unoffered-group", 47, "illegal_parameter"],
    ["unknown-content-type", 10, "unexpected_message"],
    ["unknown-inner-content-type", 10, "unexpected_message"],
    ["bad-handshake-length", 50, "decode_error"],
    ["sh-unoffered-suite", 47, "illegal_parameter"],
    ["sh-session-id-mismatch", 47, "illegal_parameter"],
    ["sh-key-share-group-mismatch", 47, "illegal_parameter"],
    ["hrr-no-change", 47, "illegal_parameter"],
    ["ee-forbidden-extension", 47, "illegal_parameter"],
    ["empty-certificate", 50, "decode_error"],
    ["app-data-before-finished", 10, "unexpected_message"],
    ["ticket-in-finished-record", 10, "unexpected_message"],
    ["cv-unoffered-scheme", 47, "illegal_parameter"],
    ["encrypted-ccs", 10, "unexpected_message"],
    ["ccs-bad-value", 10, "unexpected_message"],
  ];
  for (const [misbehave, alert, name] of cases) {
    test(`${misbehave} -> ${name}`, { timeout: 10_000 }, async () => {
      let err: unknown;
      const conn = await withServer({ misbehave }, async (port) => {
        err = await handshakeError(port);
      });
      assertSent(err, alert, name);
      assertServerGot(conn, name);
    });
  }

  test("downgrade-sentinel-tls12 -> protocol_version or illegal_parameter", { timeout: 10_000 }, async () => {
    let err: unknown;
    const conn = await withServer({ misbehave: "downgrade-sentinel-tls12" }, async (port) => {
      err = await handshakeError(port);
    });
    assert.ok(err instanceof TlsAlertError, String(err));
    assert.ok([47, 70].includes(err.alert), err.message);
    assertServerGot(conn, err.alertName);
  });

  test("truncated record then close -> a clean E_TLS error, no hang", { timeout: 10_000 }, async () => {
    let err: unknown;
    const started = Date.now();
    await withServer({ misbehave: "truncated-record" }, async (port) => {
      err = await handshakeError(port);
    });
    assert.ok(err instanceof MtlsError, String(err));
    assert.equal(err.code, "E_TLS");
    assert.doesNotMatch(err.message, /did not finish within/, "failed by the handshake timeout, not the EOF");
    assert.ok(Date.now() - started < 3000);
  });

  test("oversized application data record after the handshake -> record_overflow", {
    timeout: 10_000,
  }, async () => {
    let err: unknown;
    const conn = await withServer({ misbehave: "oversized-application-data" }, async (port) => {
      const tls = await within(
        connectTls(await connectByteStream(port), clientOptions()),
        STEP_MS,
        "connectTls",
      );
      await tls.write(new TextEncoder().encode("ping"));
      err = await within(tls.read(), STEP_MS, "read").then(
        () => undefined,
        (e: unknown) => e,
      );
      await tls.close().catch(() => undefined);
    });
    assertSent(err, 22, "record_overflow");
    assert.deepEqual(
      conn.alertsReceived.map((a) => a.name),
      ["record_overflow"],
    );
    assert.equal(conn.alertsReceived[0]?.encrypted, true);
    assert.equal(conn.peerClosed, true);
  });
});

describe("post-handshake messages from the server", () => {
  test("TCP close without close_notify after data -> read rejects with E_TLS (truncation), not EOF", {
    timeout: 10_000,
  }, async () => {
    let err: unknown;
    await withServer({ misbehave: "close-without-notify" }, async (port) => {
      const tls = await within(
        connectTls(await connectByteStream(port), clientOptions()),
        STEP_MS,
        "connectTls",
      );
      await tls.write(new TextEncoder().encode("ping"));
      assert.equal(
        new TextDecoder().decode((await within(tls.read(), STEP_MS, "echo")) ?? new Uint8Array()),
        "ping",
      );
      err = await within(tls.read(), STEP_MS, "read after the close").then(
        (chunk) => new Error(`read resolved with ${chunk === null ? "EOF" : "data"}`),
        (e: unknown) => e,
      );
      await tls.close();
    });
    assert.ok(err instanceof MtlsError, String(err));
    assert.equal(err.code, "E_TLS");
  });

  test("NewSessionTicket and KeyUpdate(update_requested): the client answers with its own KeyUpdate", {
    timeout: 10_000,
  }, async () => {
    const conn = await withServer({ sendTicket: true, keyUpdateAfterHandshake: true }, async (port) => {
      const tls = await within(
        connectTls(await connectByteStream(port), clientOptions()),
        STEP_MS,
        "connectTls",
      );
      for (const word of ["one", "two"]) {
        await tls.write(new TextEncoder().encode(word));
        const got = await within(tls.read(), STEP_MS, "echo");
        assert.equal(new TextDecoder().decode(got ?? new Uint8Array()), word);
      }
      await tls.close();
    });
    assert.equal(conn.error, null);
    assert.equal(conn.keyUpdatesReceived, 1, "KeyUpdate(update_not_requested) in answer");
    assert.deepEqual(
      conn.alertsReceived.map((a) => a.name),
      ["close_notify"],
    );
  });
});

describe("the server refuses the client: the client surfaces the server's alert", () => {
  /**
   * The handshake completes on the client's side before the server judges the client's certificate
   * (TLS 1.3), so the alert ends the first read. With `writeFirst`, the application writes once the
   * server has sent its alert and closed (what an HTTP client does): the write fails on the closed
   * transport, and the error must still be the server's alert, which arrived before the close.
   */
  async function refusedWith(
    opts: Partial<Tls13ServerOptions>,
    extra: Partial<TlsClientOptions>,
    writeFirst: boolean,
  ) {
    let err: unknown;
    let writeError: unknown;
    const conn = await withServer(opts, async (port, srv) => {
      const stream = await connectByteStream(port);
      err = await within(
        connectTls(stream, clientOptions(extra)).then(async (tls) => {
          if (writeFirst) {
            await within((await srv.connection(0)).closed, STEP_MS, "server closed");
            writeError = await tls.write(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n")).then(
              () => undefined,
              (e: unknown) => e,
            );
          }
          await tls.read();
        }),
        STEP_MS,
        "refused connection",
      ).then(
        () => undefined,
        (e: unknown) => e,
      );
    });
    // The contract: every error of mtls/web is an MtlsError (a failed write included).
    if (writeError !== undefined)
      assert.ok(writeError instanceof MtlsError, `write rejected with ${String(writeError)}`);
    return { err, conn };
  }

  for (const writeFirst of [false, true]) {
    const how = writeFirst ? "write after the server closed, then read" : "read";
    test(`client certificate from a CA the server does not trust -> unknown_ca received (${how})`, {
      timeout: 10_000,
    }, async () => {
      const other = readFileSync(certs.otherCa.ca, "utf8");
      const { err, conn } = await refusedWith({ clientCa: other }, {}, writeFirst);
      assert.deepEqual(
        conn.alertsSent.map((a) => a.name),
        ["unknown_ca"],
      );
      assert.ok(err instanceof TlsAlertError, String(err));
      assert.equal(err.alert, 48);
      assert.equal(err.direction, "received");
    });

    test(`no client identity -> certificate_required received (${how})`, { timeout: 10_000 }, async () => {
      const { err, conn } = await refusedWith({}, { identity: undefined }, writeFirst);
      assert.deepEqual(
        conn.alertsSent.map((a) => a.name),
        ["certificate_required"],
      );
      assert.deepEqual(conn.clientCertificates, []);
      assert.ok(err instanceof TlsAlertError, String(err));
      assert.equal(err.alert, 116);
      assert.equal(err.direction, "received");
    });
  }
});
