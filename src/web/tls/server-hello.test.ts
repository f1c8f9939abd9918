/**
 * The client's checks on the first server flight, against a scripted server on an in-memory pipe:
 * what the ClientHello offers, HelloRetryRequest rules, downgrade protection, and the alert each
 * violation sends (seen on the wire) and throws.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type MemoryEnd, memoryPipe } from "../../../test/fixtures/byte-stream.js";
import { MtlsError } from "../../errors.js";
import { Reader, Writer } from "./bytes.js";
import { connectTls, TlsAlertError } from "./index.js";
import { HRR_RANDOM } from "./messages.js";

interface Hello {
  sessionId: Uint8Array;
  suites: number[];
  exts: Map<number, Uint8Array>;
}

/** Reads one plaintext ClientHello record from the pipe. */
async function readClientHello(server: MemoryEnd, pending: { buf: Uint8Array }): Promise<Hello> {
  while (
    pending.buf.length < 5 ||
    pending.buf.length < 5 + ((pending.buf[3] as number) << 8) + (pending.buf[4] as number)
  ) {
    const c = await server.read();
    if (!c) throw new Error("EOF before ClientHello");
    pending.buf = Buffer.concat([pending.buf, c]);
  }
  const len = ((pending.buf[3] as number) << 8) + (pending.buf[4] as number);
  const rec = pending.buf.subarray(5, 5 + len);
  pending.buf = pending.buf.subarray(5 + len);
  const r = new Reader(rec);
  assert.equal(r.u8(), 1);
  const body = r.sub(3);
  body.u16();
  body.bytes(32);
  const sessionId = body.vector(1).slice();
  const suites: number[] = [];
  const sr = body.sub(2);
  while (sr.remaining) suites.push(sr.u16());
  body.vector(1);
  const exts = new Map<number, Uint8Array>();
  const er = body.sub(2);
  while (er.remaining) {
    const t = er.u16();
    exts.set(t, er.vector(2).slice());
  }
  return { sessionId, suites, exts };
}

function serverHello(o: {
  random?: Uint8Array;
  sessionId: Uint8Array;
  suite?: number;
  exts: Array<[number, Uint8Array]>;
  legacyVersion?: number;
}): Uint8Array {
  const body = new Writer()
    .u16(o.legacyVersion ?? 0x0303)
    .bytes(o.random ?? new Uint8Array(32).fill(0x55))
    .vector(1, (w) => w.bytes(o.sessionId))
    .u16(o.suite ?? 0x1301)
    .u8(0)
    .vector(2, (w) => {
      for (const [t, d] of o.exts) w.u16(t).vector(2, (x) => x.bytes(d));
    })
    .finish();
  const msg = new Writer()
    .u8(2)
    .vector(3, (w) => w.bytes(body))
    .finish();
  return new Writer()
    .u8(22)
    .u16(0x0303)
    .vector(2, (w) => w.bytes(msg))
    .finish();
}

const u16 = (...v: number[]) => {
  const w = new Writer();
  for (const x of v) w.u16(x);
  return w.finish();
};
const SV13: [number, Uint8Array] = [43, u16(0x0304)];
const x25519Share = (): [number, Uint8Array] => [
  51,
  new Writer()
    .u16(0x1d)
    .vector(2, (w) => w.bytes(new Uint8Array(32).fill(9)))
    .finish(),
];

/** Runs a client against `script`; returns the error thrown and the alert record the server received. */
async function run(
  script: (server: MemoryEnd, hello: Hello, pending: { buf: Uint8Array }) => Promise<void>,
): Promise<{ error: TlsAlertError; alertOnWire: number[] }> {
  const [clientEnd, serverEnd] = memoryPipe();
  const connecting = connectTls(clientEnd, {
    serverName: "localhost",
    trustAnchors: [],
    handshakeTimeoutMs: 3000,
  });
  const pending = { buf: new Uint8Array(0) as Uint8Array };
  const hello = await readClientHello(serverEnd, pending);
  await script(serverEnd, hello, pending);
  const error = await connecting.then(
    () => assert.fail("handshake succeeded"),
    (e: unknown) => e,
  );
  assert.ok(error instanceof TlsAlertError, String(error));
  let rest = pending.buf;
  for (let c = await serverEnd.read(); c; c = await serverEnd.read()) rest = Buffer.concat([rest, c]);
  assert.ok(clientEnd.closed, "the client closed its transport");
  return { error, alertOnWire: [...rest.subarray(0, 7)] };
}

function expectSent(r: { error: TlsAlertError; alertOnWire: number[] }, alert: number): void {
  assert.equal(r.error.alert, alert, r.error.message);
  assert.equal(r.error.direction, "sent");
  assert.deepEqual(r.alertOnWire, [21, 3, 3, 0, 2, 2, alert]);
}

describe("client vs scripted ServerHello", () => {
  it("offers TLS 1.3 only, both groups, one X25519 key share, SNI and a 32-byte session id", async () => {
    const r = await run(async (server, hello) => {
      assert.equal(hello.sessionId.length, 32);
      assert.deepEqual(hello.suites, [0x1301, 0x1302, 0x1303]);
      assert.deepEqual([...(hello.exts.get(43) as Uint8Array)], [2, 3, 4]);
      assert.deepEqual([...(hello.exts.get(10) as Uint8Array)], [0, 4, 0, 0x1d, 0, 0x17]);
      const ks = new Reader(hello.exts.get(51) as Uint8Array).sub(2);
      assert.equal(ks.u16(), 0x1d);
      assert.equal(ks.vector(2).length, 32);
      assert.equal(ks.remaining, 0);
      assert.match(Buffer.from(hello.exts.get(0) as Uint8Array).toString("latin1"), /localhost$/);
      assert.ok(hello.exts.has(13));
      await server.write(serverHello({ sessionId: hello.sessionId, exts: [], legacyVersion: 0x0303 }));
    });
    expectSent(r, 70);
  });

  it("a TLS 1.2 ServerHello is protocol_version; the downgrade sentinel is illegal_parameter", async () => {
    expectSent(await run(async (s, h) => s.write(serverHello({ sessionId: h.sessionId, exts: [] }))), 70);
    const random = new Uint8Array(32).fill(1);
    random.set([0x44, 0x4f, 0x57, 0x4e, 0x47, 0x52, 0x44, 0x01], 24);
    expectSent(
      await run(async (s, h) => s.write(serverHello({ random, sessionId: h.sessionId, exts: [] }))),
      47,
    );
    expectSent(
      await run(async (s, h) => s.write(serverHello({ sessionId: h.sessionId, exts: [[43, u16(0x0303)]] }))),
      47,
    );
  });

  it("checks the session id echo, the cipher suite and the extensions", async () => {
    expectSent(
      await run(async (s) =>
        s.write(serverHello({ sessionId: new Uint8Array(32), exts: [SV13, x25519Share()] })),
      ),
      47,
    );
    expectSent(
      await run(
        async (s, h) =>
          s.write(serverHello({ sessionId: h.sessionId, suite: 0x1304, exts: [SV13, x25519Share()] })), // AES-CCM: not offered
      ),
      47,
    );
    expectSent(
      await run(async (s, h) => s.write(serverHello({ sessionId: h.sessionId, exts: [SV13] }))),
      109,
    );
    expectSent(
      await run(async (s, h) =>
        s.write(
          serverHello({ sessionId: h.sessionId, exts: [SV13, x25519Share(), [23, new Uint8Array(0)]] }),
        ),
      ),
      110,
    );
    expectSent(
      await run(async (s, h) =>
        s.write(serverHello({ sessionId: h.sessionId, exts: [SV13, x25519Share(), [0, new Uint8Array(0)]] })),
      ),
      47,
    );
    const badShare: [number, Uint8Array] = [
      51,
      new Writer()
        .u16(0x17)
        .vector(2, (w) => w.bytes(new Uint8Array(65).fill(4)))
        .finish(),
    ];
    expectSent(
      await run(async (s, h) => s.write(serverHello({ sessionId: h.sessionId, exts: [SV13, badShare] }))),
      47,
    );
    expectSent(
      await run(async (s, h) =>
        s.write(
          serverHello({ sessionId: h.sessionId, exts: [SV13, [51, new Uint8Array([0, 0x1d, 0, 1, 7])]] }),
        ),
      ),
      47,
    );
  });

  it("HelloRetryRequest: refuses the group already sent, answers with cookie and a P-256 share, refuses a second HRR", async () => {
    const hrr = (sessionId: Uint8Array, group: number, cookie?: Uint8Array) =>
      serverHello({
        random: HRR_RANDOM,
        sessionId,
        exts: [
          SV13,
          [51, u16(group)],
          ...(cookie
            ? [[44, new Writer().vector(2, (w) => w.bytes(cookie)).finish()] as [number, Uint8Array]]
            : []),
        ],
      });
    expectSent(await run(async (s, h) => s.write(hrr(h.sessionId, 0x1d))), 47);
    expectSent(await run(async (s, h) => s.write(hrr(h.sessionId, 0x18))), 47);
    const r = await run(async (s, h, pending) => {
      await s.write(hrr(h.sessionId, 0x17, new Uint8Array([1, 2, 3])));
      const h2 = await readClientHello(s, pending);
      assert.deepEqual([...h2.sessionId], [...h.sessionId]);
      assert.deepEqual([...(h2.exts.get(44) as Uint8Array)], [0, 3, 1, 2, 3]);
      const ks = new Reader(h2.exts.get(51) as Uint8Array).sub(2);
      assert.equal(ks.u16(), 0x17);
      assert.equal(ks.vector(2).length, 65);
      await s.write(hrr(h.sessionId, 0x17));
    });
    expectSent(r, 10);
  });

  it("refuses a bad ChangeCipherSpec and plaintext application data; reports a received alert", async () => {
    expectSent(await run(async (s) => s.write(new Uint8Array([20, 3, 3, 0, 1, 2]))), 10);
    expectSent(await run(async (s) => s.write(new Uint8Array([23, 3, 3, 0, 1, 2]))), 10);
    expectSent(await run(async (s) => s.write(new Uint8Array([22, 3, 3, 0x40, 0x01]))), 22);
    const [clientEnd, serverEnd] = memoryPipe();
    const connecting = connectTls(clientEnd, {
      serverName: "localhost",
      trustAnchors: [],
      handshakeTimeoutMs: 3000,
    });
    await serverEnd.read();
    await serverEnd.write(new Uint8Array([21, 3, 3, 0, 2, 2, 40]));
    await assert.rejects(connecting, (e: unknown) => {
      assert.ok(e instanceof TlsAlertError);
      assert.equal(e.alert, 40);
      assert.equal(e.alertName, "handshake_failure");
      assert.equal(e.direction, "received");
      return true;
    });
  });

  it("gives up after handshakeTimeoutMs when the server never answers, and closes the transport", async () => {
    const [clientEnd, serverEnd] = memoryPipe();
    const started = Date.now();
    const connecting = connectTls(clientEnd, {
      serverName: "localhost",
      trustAnchors: [],
      handshakeTimeoutMs: 200,
    });
    assert.ok(await serverEnd.read());
    await assert.rejects(connecting, (e: unknown) => {
      assert.ok(e instanceof MtlsError && e.code === "E_TLS" && /did not finish/.test(e.message), String(e));
      return true;
    });
    assert.ok(Date.now() - started < 2000);
    assert.ok(clientEnd.closed);
  });
});
