/**
 * The TLS 1.3 record layer (RFC 8446 section 5): framing over a ByteStream, the 2^14 plaintext and
 * 2^14+256 ciphertext limits, AEAD protection with per-record nonces (IV xor sequence number), the inner
 * content type and padding. Reading buffers partial records across transport chunks; writing splits
 * into full-size records and seals a batch of them concurrently before one transport write.
 */
import type { ByteStream } from "../stream.js";
import type { Aead } from "./aead.js";
import { Alert, fatal } from "./alerts.js";
import { concat } from "./bytes.js";

export const ContentType = {
  change_cipher_spec: 20,
  alert: 21,
  handshake: 22,
  application_data: 23,
} as const;

export const MAX_PLAINTEXT = 16384;
const MAX_CIPHERTEXT = MAX_PLAINTEXT + 256;
const HEADER = 5;
/** Records sealed concurrently and sent in one transport write. */
const BATCH_RECORDS = 32;

export interface TlsRecord {
  type: number;
  fragment: Uint8Array;
}

/** One direction's AEAD state: key, static IV and the record sequence number. */
export class RecordProtection {
  seq = 0;

  constructor(
    readonly aead: Aead,
    private readonly iv: Uint8Array,
    readonly tagLength: number,
  ) {}

  nonce(seq: number): Uint8Array {
    const n = this.iv.slice();
    let hi = Math.floor(seq / 0x100000000);
    let lo = seq >>> 0;
    for (let i = 11; i >= 8; i--) {
      n[i] = (n[i] as number) ^ (lo & 0xff);
      lo >>>= 8;
    }
    for (let i = 7; i >= 4; i--) {
      n[i] = (n[i] as number) ^ (hi & 0xff);
      hi >>>= 8;
    }
    return n;
  }
}

function header(type: number, length: number): Uint8Array {
  return new Uint8Array([type, 0x03, 0x03, length >>> 8, length & 0xff]);
}

interface RawRecord {
  type: number;
  hdr: Uint8Array;
  body: Uint8Array;
  /** Decryption started ahead of time under `under`; redone if the key changed meanwhile. */
  plain: Promise<Uint8Array | null> | null;
  under: RecordProtection | null;
}

/** Complete protected records already buffered are decrypted concurrently, up to this many. */
const READ_AHEAD = 16;

export class RecordReader {
  private buf: Uint8Array = new Uint8Array(0);
  private off = 0;
  private protection: RecordProtection | null = null;
  private ahead: RawRecord[] = [];

  constructor(private readonly transport: ByteStream) {}

  /** New read key: records decrypted ahead under the old key are decrypted again when reached. */
  setProtection(p: RecordProtection): void {
    this.protection = p;
  }

  /** Makes at least n bytes available; false at a clean EOF with nothing buffered. */
  private async fill(n: number): Promise<boolean> {
    const have = this.buf.length - this.off;
    if (have >= n) return true;
    const parts: Uint8Array[] = have > 0 ? [this.buf.subarray(this.off)] : [];
    let total = have;
    while (total < n) {
      const chunk = await this.transport.read();
      if (chunk === null) {
        this.buf = concat(parts);
        this.off = 0;
        if (total === 0) return false;
        throw fatal(Alert.decode_error, "the connection closed in the middle of a record");
      }
      if (chunk.length === 0) continue;
      parts.push(chunk);
      total += chunk.length;
    }
    this.buf = parts.length === 1 ? (parts[0] as Uint8Array) : concat(parts);
    this.off = 0;
    return true;
  }

  /** Header fields of the record at the read position, checked against the size limits. */
  private header(): { type: number; length: number } {
    const b = this.buf;
    const type = b[this.off] as number;
    const length = ((b[this.off + 3] as number) << 8) | (b[this.off + 4] as number);
    const limit = this.protection && type === ContentType.application_data ? MAX_CIPHERTEXT : MAX_PLAINTEXT;
    if (length > limit) throw fatal(Alert.record_overflow, `record of ${length} bytes is over the limit`);
    return { type, length };
  }

  private take(type: number, length: number): RawRecord {
    const hdr = this.buf.subarray(this.off, this.off + HEADER);
    const body = this.buf.subarray(this.off + HEADER, this.off + HEADER + length);
    this.off += HEADER + length;
    const rec: RawRecord = { type, hdr, body, plain: null, under: null };
    const p = this.protection;
    if (p && type === ContentType.application_data && length >= p.tagLength + 1) {
      rec.under = p;
      rec.plain = p.aead.open(p.nonce(p.seq++), hdr, body);
    }
    return rec;
  }

  /** Starts decrypting further protected records that are already complete in the buffer. */
  private readAhead(): void {
    while (this.protection && this.ahead.length < READ_AHEAD && this.buf.length - this.off >= HEADER) {
      const b = this.buf;
      const type = b[this.off] as number;
      const length = ((b[this.off + 3] as number) << 8) | (b[this.off + 4] as number);
      // Anything unusual is left for next() to judge in order.
      if (type !== ContentType.application_data || length > MAX_CIPHERTEXT) return;
      if (this.buf.length - this.off < HEADER + length) return;
      this.ahead.push(this.take(type, length));
    }
  }

  /** The next record (decrypted if protection is on), or null at EOF on a record boundary. */
  async next(): Promise<TlsRecord | null> {
    let rec = this.ahead.shift();
    if (!rec) {
      if (!(await this.fill(HEADER))) return null;
      const { type, length } = this.header();
      await this.fill(HEADER + length);
      rec = this.take(type, length);
    }
    this.readAhead();
    return this.open(rec);
  }

  private async open(rec: RawRecord): Promise<TlsRecord> {
    const { type, body } = rec;
    if (type === ContentType.change_cipher_spec) return { type, fragment: body };
    const p = this.protection;
    if (p === null) {
      if (type === ContentType.alert || type === ContentType.handshake) return { type, fragment: body };
      throw fatal(Alert.unexpected_message, `unexpected unprotected record of type ${type}`);
    }
    if (type !== ContentType.application_data) {
      throw fatal(Alert.unexpected_message, `unprotected record of type ${type} after keys were set`);
    }
    if (body.length > MAX_CIPHERTEXT)
      throw fatal(Alert.record_overflow, `record of ${body.length} bytes is over the limit`);
    if (body.length < p.tagLength + 1) throw fatal(Alert.bad_record_mac, "protected record too short");
    if (rec.under !== p || rec.plain === null) rec.plain = p.aead.open(p.nonce(p.seq++), rec.hdr, body);
    const plain = await rec.plain;
    if (plain === null) throw fatal(Alert.bad_record_mac, "record failed authentication");
    // TLSInnerPlaintext (content, type and padding) may not exceed 2^14 + 1 bytes.
    if (plain.length > MAX_PLAINTEXT + 1)
      throw fatal(Alert.record_overflow, "decrypted record is over 2^14 + 1 bytes");
    let end = plain.length;
    while (end > 0 && plain[end - 1] === 0) end--;
    if (end === 0) throw fatal(Alert.unexpected_message, "protected record has no content type");
    const inner = plain[end - 1] as number;
    if (
      inner !== ContentType.alert &&
      inner !== ContentType.handshake &&
      inner !== ContentType.application_data
    ) {
      throw fatal(Alert.unexpected_message, `protected record of inner type ${inner}`);
    }
    return { type: inner, fragment: plain.subarray(0, end - 1) };
  }
}

export class RecordWriter {
  private protection: RecordProtection | null = null;

  constructor(private readonly transport: ByteStream) {}

  setProtection(p: RecordProtection): void {
    this.protection = p;
  }

  /** Records written under the current write key. */
  get sequence(): number {
    return this.protection?.seq ?? 0;
  }

  /**
   * Writes `data` as records of `type`, split at 2^14; protected once keys are set, except
   * change_cipher_spec, which is never protected.
   */
  async write(type: number, data: Uint8Array): Promise<void> {
    const p = this.protection;
    if (p === null || type === ContentType.change_cipher_spec) {
      const out: Uint8Array[] = [];
      for (let at = 0; at < data.length || at === 0; at += MAX_PLAINTEXT) {
        const part = data.subarray(at, Math.min(data.length, at + MAX_PLAINTEXT));
        out.push(header(type, part.length), part);
        if (data.length === 0) break;
      }
      await this.transport.write(concat(out));
      return;
    }
    let at = 0;
    do {
      const sealing: Promise<Uint8Array>[] = [];
      for (let i = 0; i < BATCH_RECORDS && (at < data.length || (at === 0 && data.length === 0)); i++) {
        const part = data.subarray(at, Math.min(data.length, at + MAX_PLAINTEXT));
        at += MAX_PLAINTEXT;
        sealing.push(this.seal(p, type, part));
        if (data.length === 0) break;
      }
      await this.transport.write(concat(await Promise.all(sealing)));
    } while (at < data.length);
  }

  /** The whole record: header || AEAD(part || type). */
  private async seal(p: RecordProtection, type: number, part: Uint8Array): Promise<Uint8Array> {
    const inner = new Uint8Array(part.length + 1);
    inner.set(part);
    inner[part.length] = type;
    const hdr = header(ContentType.application_data, inner.length + p.tagLength);
    const seq = p.seq++;
    const sealed = await p.aead.seal(p.nonce(seq), hdr, inner);
    const rec = new Uint8Array(HEADER + sealed.length);
    rec.set(hdr);
    rec.set(sealed, HEADER);
    return rec;
  }
}
