/** Minimal DER assembly for the few places where we concatenate already-encoded parts. */

function lengthBytes(length: number): number[] {
  if (length < 0x80) return [length];
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return [0x80 | bytes.length, ...bytes];
}

export function derTlv(tag: number, ...contents: Uint8Array[]): Uint8Array {
  const total = contents.reduce((sum, c) => sum + c.length, 0);
  const head = [tag, ...lengthBytes(total)];
  const out = new Uint8Array(head.length + total);
  out.set(head, 0);
  let offset = head.length;
  for (const c of contents) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

export const derSequence = (...contents: Uint8Array[]): Uint8Array => derTlv(0x30, ...contents);

/** A BIT STRING with no unused bits (signatures, keys). */
export const derBitString = (bytes: Uint8Array): Uint8Array => derTlv(0x03, new Uint8Array([0]), bytes);

/** A positive INTEGER from big-endian magnitude bytes (a 0x00 pad is added when the top bit is set). */
export function derPositiveInteger(magnitude: Uint8Array): Uint8Array {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const trimmed = magnitude.subarray(start);
  if (trimmed.length === 0) return derTlv(0x02, new Uint8Array([0]));
  const pad = (trimmed[0] ?? 0) & 0x80 ? new Uint8Array([0]) : new Uint8Array(0);
  return derTlv(0x02, pad, trimmed);
}

export function derSmallInteger(value: number): Uint8Array {
  const bytes: number[] = [];
  for (let n = value; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return derPositiveInteger(new Uint8Array(bytes.length ? bytes : [0]));
}

const two = (n: number) => String(n).padStart(2, "0");

/** RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; whole seconds, Zulu. */
export function derTime(date: Date): Uint8Array {
  const y = date.getUTCFullYear();
  const rest = `${two(date.getUTCMonth() + 1)}${two(date.getUTCDate())}${two(date.getUTCHours())}${two(date.getUTCMinutes())}${two(date.getUTCSeconds())}Z`;
  if (y < 2050) return derTlv(0x17, Buffer.from(`${two(y % 100)}${rest}`, "ascii"));
  return derTlv(0x18, Buffer.from(`${String(y).padStart(4, "0")}${rest}`, "ascii"));
}

/** Context-specific constructed tag [n] (EXPLICIT). */
export const derExplicit = (n: number, ...contents: Uint8Array[]): Uint8Array =>
  derTlv(0xa0 | n, ...contents);

export const derOctetString = (bytes: Uint8Array): Uint8Array => derTlv(0x04, bytes);

export const derEnumerated = (value: number): Uint8Array => derTlv(0x0a, new Uint8Array([value]));
