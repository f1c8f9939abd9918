import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { memoryPipe } from "../../../test/fixtures/byte-stream.js";
import { AES_128_GCM } from "./aead.js";
import { TlsAlertError } from "./alerts.js";
import { ContentType, RecordProtection, RecordReader, RecordWriter } from "./record.js";

const KEY = new Uint8Array(16).fill(7);
const IV = new Uint8Array(12).fill(9);

async function protection(): Promise<RecordProtection> {
  return new RecordProtection(await AES_128_GCM.create(KEY), IV, 16);
}

async function collect(end: { read(): Promise<Uint8Array | null> }): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for (let c = await end.read(); c; c = await end.read()) parts.push(c);
  return Buffer.concat(parts);
}

function alertOf(err: unknown): number {
  assert.ok(err instanceof TlsAlertError, String(err));
  assert.equal(err.direction, "sent");
  return err.alert;
}

/** Feeds `bytes` to a RecordReader in chunks of `step` bytes, then EOF. */
async function readerOver(bytes: Uint8Array, step: number, protect: boolean): Promise<RecordReader> {
  const [a, b] = memoryPipe();
  for (let i = 0; i < bytes.length; i += step) await a.write(bytes.subarray(i, i + step));
  await a.close();
  const r = new RecordReader(b);
  if (protect) r.setProtection(await protection());
  return r;
}

describe("record layer", () => {
  it("nonce is the IV xor the 64-bit sequence number", async () => {
    const p = await protection();
    assert.deepEqual([...p.nonce(0)], [...IV]);
    const seq = [0, 0, 0, 1, 2, 3, 4, 5];
    assert.deepEqual([...p.nonce(0x0102030405)], [...IV.subarray(0, 4), ...seq.map((x) => 9 ^ x)]);
  });

  it("splits writes at 2^14, protects them, and reassembles from 1-byte transport chunks", async () => {
    const [a, b] = memoryPipe();
    const w = new RecordWriter(a);
    w.setProtection(await protection());
    const data = new Uint8Array(40_000).map((_, i) => i & 0xff);
    await w.write(ContentType.application_data, data);
    await w.write(ContentType.handshake, new Uint8Array([24, 0, 0, 1, 0]));
    assert.equal(w.sequence, 4);
    await a.close();
    const wire = await collect(b);
    assert.equal(wire.length, 3 * (5 + 17) + 40_000 + 5 + 5 + 17);
    assert.equal(wire[0], 23);
    const r = await readerOver(wire, 1, true);
    const got: number[] = [];
    for (let rec = await r.next(); rec; rec = await r.next()) {
      if (rec.type === ContentType.application_data) got.push(...rec.fragment);
      else assert.deepEqual([rec.type, ...rec.fragment], [22, 24, 0, 0, 1, 0]);
    }
    assert.deepEqual(Buffer.from(got), Buffer.from(data));
  });

  it("strips padding to find the inner content type", async () => {
    const p = await protection();
    const inner = new Uint8Array([1, 2, 3, ContentType.application_data, 0, 0, 0, 0]);
    const hdr = new Uint8Array([23, 3, 3, 0, inner.length + 16]);
    const sealed = await p.aead.seal(p.nonce(0), hdr, inner);
    const r = await readerOver(Buffer.concat([hdr, sealed]), 3, true);
    const rec = await r.next();
    assert.deepEqual(rec && [rec.type, ...rec.fragment], [23, 1, 2, 3]);
  });

  it("refuses all-zero inner plaintext (no content type) with unexpected_message", async () => {
    const p = await protection();
    const hdr = new Uint8Array([23, 3, 3, 0, 4 + 16]);
    const sealed = await p.aead.seal(p.nonce(0), hdr, new Uint8Array(4));
    const r = await readerOver(Buffer.concat([hdr, sealed]), 100, true);
    await assert.rejects(r.next(), (e) => alertOf(e) === 10);
  });

  it("refuses a tampered record with bad_record_mac", async () => {
    const [a, b] = memoryPipe();
    const w = new RecordWriter(a);
    w.setProtection(await protection());
    await w.write(ContentType.application_data, new Uint8Array(100));
    await a.close();
    const wire = await collect(b);
    wire[50] = (wire[50] as number) ^ 1;
    const r = await readerOver(wire, 1000, true);
    await assert.rejects(r.next(), (e) => alertOf(e) === 20);
  });

  it("refuses oversized records with record_overflow", async () => {
    const plain = Buffer.concat([Buffer.from([22, 3, 3, 0x40, 0x01]), Buffer.alloc(16385)]);
    await assert.rejects((await readerOver(plain, 5000, false)).next(), (e) => alertOf(e) === 22);
    const prot = Buffer.concat([Buffer.from([23, 3, 3, 0x41, 0x01]), Buffer.alloc(16384 + 257)]);
    await assert.rejects((await readerOver(prot, 5000, true)).next(), (e) => alertOf(e) === 22);
  });

  it("refuses a decrypted record over 2^14 + 1 bytes with record_overflow", async () => {
    const p = await protection();
    const inner = new Uint8Array(16384 + 2);
    inner[0] = 1;
    inner[16385] = 23;
    const len = inner.length + 16;
    const hdr = new Uint8Array([23, 3, 3, len >> 8, len & 0xff]);
    const sealed = await p.aead.seal(p.nonce(0), hdr, inner);
    await assert.rejects(
      (await readerOver(Buffer.concat([hdr, sealed]), 5000, true)).next(),
      (e) => alertOf(e) === 22,
    );
  });

  it("a record cut off by EOF is a decode_error; EOF on a boundary is null", async () => {
    await assert.rejects(
      (await readerOver(Buffer.from([22, 3, 3, 0, 10, 1, 2]), 2, false)).next(),
      (e) => alertOf(e) === 50,
    );
    assert.equal(await (await readerOver(Buffer.alloc(0), 1, false)).next(), null);
  });

  it("refuses unprotected application data and unprotected handshake records after keys", async () => {
    await assert.rejects(
      (await readerOver(Buffer.from([23, 3, 3, 0, 1, 0]), 9, false)).next(),
      (e) => alertOf(e) === 10,
    );
    await assert.rejects(
      (await readerOver(Buffer.from([22, 3, 3, 0, 1, 0]), 9, true)).next(),
      (e) => alertOf(e) === 10,
    );
  });
});
