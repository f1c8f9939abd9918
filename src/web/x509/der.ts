/**
 * A strict DER reader for the parts of certificates whose exact bytes matter (the signed TBS, names
 * compared byte for byte, key identifiers, ECDSA signature values). Definite, minimal lengths only;
 * anything else is refused with a MalformedDer error.
 */

export class MalformedDer extends Error {
  override readonly name = "MalformedDer";
}

export interface Tlv {
  tag: number;
  /** The whole element: tag, length and contents. */
  raw: Uint8Array;
  /** The contents octets. */
  value: Uint8Array;
}

/** Reads one element at `offset`; returns it and the offset after it. */
export function readTlv(bytes: Uint8Array, offset = 0): { tlv: Tlv; next: number } {
  if (offset + 2 > bytes.length) throw new MalformedDer("truncated DER element");
  const tag = bytes[offset] as number;
  if ((tag & 0x1f) === 0x1f) throw new MalformedDer("high-tag-number form is not supported");
  let pos = offset + 1;
  const first = bytes[pos++] as number;
  let length: number;
  if (first < 0x80) {
    length = first;
  } else {
    const count = first & 0x7f;
    if (count === 0) throw new MalformedDer("indefinite length is not DER");
    if (count > 4) throw new MalformedDer("DER length too large");
    if (pos + count > bytes.length) throw new MalformedDer("truncated DER length");
    if (bytes[pos] === 0) throw new MalformedDer("DER length with a leading zero byte");
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + (bytes[pos++] as number);
    if (length < 0x80) throw new MalformedDer("DER length not in its shortest form");
  }
  const end = pos + length;
  if (end > bytes.length) throw new MalformedDer("DER element runs past its container");
  return { tlv: { tag, raw: bytes.subarray(offset, end), value: bytes.subarray(pos, end) }, next: end };
}

/** Exactly one element filling `bytes`, with the expected tag. */
export function readOnly(bytes: Uint8Array, tag: number): Tlv {
  const { tlv, next } = readTlv(bytes, 0);
  if (next !== bytes.length) throw new MalformedDer("trailing bytes after a DER element");
  expectTag(tlv, tag);
  return tlv;
}

export function expectTag(tlv: Tlv, tag: number): void {
  if (tlv.tag !== tag) {
    throw new MalformedDer(`unexpected DER tag 0x${tlv.tag.toString(16)} (expected 0x${tag.toString(16)})`);
  }
}

/** The elements inside a constructed value. */
export function children(value: Uint8Array): Tlv[] {
  const out: Tlv[] = [];
  let offset = 0;
  while (offset < value.length) {
    const { tlv, next } = readTlv(value, offset);
    out.push(tlv);
    offset = next;
  }
  return out;
}

/** An OBJECT IDENTIFIER's contents in dotted form (strict: no 0x80 padding, arcs below 2^53). */
export function oidToString(value: Uint8Array): string {
  if (value.length === 0) throw new MalformedDer("empty OBJECT IDENTIFIER");
  const arcs: number[] = [];
  let n = 0;
  let started = false;
  for (let i = 0; i < value.length; i++) {
    const b = value[i] as number;
    if (!started && b === 0x80) throw new MalformedDer("OBJECT IDENTIFIER arc with a leading 0x80");
    started = true;
    n = n * 128 + (b & 0x7f);
    if (n > Number.MAX_SAFE_INTEGER / 128) throw new MalformedDer("OBJECT IDENTIFIER arc too large");
    if ((b & 0x80) === 0) {
      arcs.push(n);
      n = 0;
      started = false;
    } else if (i === value.length - 1) {
      throw new MalformedDer("truncated OBJECT IDENTIFIER");
    }
  }
  const first = arcs[0] as number;
  const head = first < 40 ? [0, first] : first < 80 ? [1, first - 40] : [2, first - 80];
  return [...head, ...arcs.slice(1)].join(".");
}

/** A non-negative INTEGER's contents as its big-endian magnitude (strict DER: minimal, not negative). */
export function unsignedInteger(value: Uint8Array): Uint8Array {
  if (value.length === 0) throw new MalformedDer("empty INTEGER");
  const first = value[0] as number;
  if (first & 0x80) throw new MalformedDer("negative INTEGER");
  if (value.length > 1 && first === 0 && ((value[1] as number) & 0x80) === 0) {
    throw new MalformedDer("INTEGER not in its shortest form");
  }
  return first === 0 && value.length > 1 ? value.subarray(1) : value;
}

/** A small non-negative INTEGER as a number. */
export function smallInteger(value: Uint8Array): number {
  const magnitude = unsignedInteger(value);
  if (magnitude.length > 6) throw new MalformedDer("INTEGER too large");
  let n = 0;
  for (const b of magnitude) n = n * 256 + b;
  return n;
}

/** The bytes of a BIT STRING with no unused bits (keys, signatures). */
export function bitStringBytes(value: Uint8Array): Uint8Array {
  if (value.length === 0 || value[0] !== 0) throw new MalformedDer("BIT STRING with unused bits");
  return value.subarray(1);
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Builds one element from a tag and its contents (short helpers for the few encodings we emit). */
export function encodeTlv(tag: number, value: Uint8Array): Uint8Array {
  const len = value.length;
  const head =
    len < 0x80
      ? [tag, len]
      : len < 0x100
        ? [tag, 0x81, len]
        : len < 0x10000
          ? [tag, 0x82, len >> 8, len & 0xff]
          : [tag, 0x83, len >> 16, (len >> 8) & 0xff, len & 0xff];
  const out = new Uint8Array(head.length + len);
  out.set(head, 0);
  out.set(value, head.length);
  return out;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** A copy backed by a plain ArrayBuffer, as WebCrypto's BufferSource type wants. */
export function plain(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(bytes);
}
