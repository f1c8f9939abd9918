/**
 * Bounded reading and writing of TLS wire structures. Every read is checked against the end of its
 * vector; running past it or leaving bytes unread is a decode_error.
 */
import { Alert, fatal } from "./alerts.js";

export class Reader {
  private pos: number;

  constructor(
    private readonly buf: Uint8Array,
    private readonly what = "message",
    start = 0,
    private readonly end = buf.length,
  ) {
    this.pos = start;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  private need(n: number): number {
    if (n > this.end - this.pos) throw fatal(Alert.decode_error, `${this.what} is truncated`);
    const at = this.pos;
    this.pos += n;
    return at;
  }

  u8(): number {
    return this.buf[this.need(1)] as number;
  }

  u16(): number {
    const at = this.need(2);
    return ((this.buf[at] as number) << 8) | (this.buf[at + 1] as number);
  }

  u24(): number {
    const at = this.need(3);
    return (
      ((this.buf[at] as number) << 16) | ((this.buf[at + 1] as number) << 8) | (this.buf[at + 2] as number)
    );
  }

  u32(): number {
    return this.u16() * 65536 + this.u16();
  }

  /** The next n bytes (a view, not a copy). */
  bytes(n: number): Uint8Array {
    const at = this.need(n);
    return this.buf.subarray(at, at + n);
  }

  /** A vector with a 1-, 2- or 3-byte length prefix, as raw bytes. */
  vector(lengthBytes: 1 | 2 | 3, min = 0, max = Number.MAX_SAFE_INTEGER): Uint8Array {
    const n = lengthBytes === 1 ? this.u8() : lengthBytes === 2 ? this.u16() : this.u24();
    if (n < min || n > max) throw fatal(Alert.decode_error, `${this.what}: vector length ${n} out of range`);
    return this.bytes(n);
  }

  /** A vector with a length prefix, as a Reader over its contents. */
  sub(lengthBytes: 1 | 2 | 3, what = this.what, min = 0): Reader {
    const v = this.vector(lengthBytes, min);
    return new Reader(v, what);
  }

  /** Throws decode_error if bytes are left over. */
  done(): void {
    if (this.pos !== this.end)
      throw fatal(Alert.decode_error, `${this.what} has ${this.end - this.pos} trailing bytes`);
  }
}

export class Writer {
  private buf: Uint8Array;
  private len = 0;

  constructor(initial = 256) {
    this.buf = new Uint8Array(initial);
  }

  /** Reserves n bytes and returns their offset; may replace this.buf, so read this.buf only after. */
  private room(n: number): number {
    if (this.len + n > this.buf.length) {
      const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
      next.set(this.buf.subarray(0, this.len));
      this.buf = next;
    }
    const at = this.len;
    this.len += n;
    return at;
  }

  u8(v: number): this {
    const at = this.room(1);
    this.buf[at] = v & 0xff;
    return this;
  }

  u16(v: number): this {
    const at = this.room(2);
    this.buf[at] = (v >>> 8) & 0xff;
    this.buf[at + 1] = v & 0xff;
    return this;
  }

  u24(v: number): this {
    const at = this.room(3);
    this.buf[at] = (v >>> 16) & 0xff;
    this.buf[at + 1] = (v >>> 8) & 0xff;
    this.buf[at + 2] = v & 0xff;
    return this;
  }

  bytes(b: Uint8Array): this {
    const at = this.room(b.length);
    this.buf.set(b, at);
    return this;
  }

  /** Writes a length-prefixed vector whose body `body` fills in. */
  vector(lengthBytes: 1 | 2 | 3, body: (w: Writer) => void): this {
    const at = this.room(lengthBytes);
    body(this);
    const n = this.len - at - lengthBytes;
    const max = lengthBytes === 1 ? 0xff : lengthBytes === 2 ? 0xffff : 0xffffff;
    if (n > max) throw new RangeError(`vector of ${n} bytes does not fit a ${lengthBytes}-byte length`);
    for (let i = 0; i < lengthBytes; i++) this.buf[at + i] = (n >>> (8 * (lengthBytes - 1 - i))) & 0xff;
    return this;
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Compares in time that depends only on the lengths. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= (a[i] as number) ^ (b[i] as number);
  return diff === 0;
}

export function randomBytes(n: number): Uint8Array {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

export const utf8 = new TextEncoder();
