/**
 * ChaCha20-Poly1305 AEAD (RFC 8439) in plain TypeScript, for TLS_CHACHA20_POLY1305_SHA256: WebCrypto
 * has no ChaCha20. Written for speed on the 16 KiB records of TLS:
 * - ChaCha20 keeps its 16 state words in locals, unrolls the quarter rounds and XORs whole 32-bit
 *   words through a Uint32Array view of the output (the output buffer is ours, so always aligned);
 * - Poly1305 keeps the 130-bit accumulator in six 22-bit limbs held as doubles: every partial product
 *   is below 2^50 and every column sum below 2^52, so float arithmetic is exact (26-bit limbs would
 *   overflow 2^53 in JS; 13-bit limbs need three times the multiplications).
 * The data is first copied into the output buffer, encrypted/decrypted there in place, and the MAC reads
 * the aligned ciphertext from it, so no path reads unaligned words.
 *
 * Speed (bench/web-aead.ts, bench/web-aead-chromium.ts): about 230 MB per CPU-second for 16 KiB records
 * in Node 20 and 150-190 MB/s in headless Chromium on a loaded 2-core EPYC, against 400-650 MB/s for
 * AES-GCM through WebCrypto; for 1 KiB records it matches or beats WebCrypto, whose per-call cost
 * dominates there. Fast enough to offer TLS_CHACHA20_POLY1305_SHA256, after the AES-GCM suites.
 *
 * Typed-array word views read little-endian only on little-endian hosts (every browser platform in
 * use); on another host CHACHA20_POLY1305_AVAILABLE is false and the suite must not be offered.
 */
import type { Aead, AeadAlgorithm } from "./aead.js";

/** True where this implementation runs (a little-endian host). */
export const CHACHA20_POLY1305_AVAILABLE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/**
 * XORs the ChaCha20 key stream for (key, nonce, counter...) into `buf32` words [0, nBlocks * 16).
 * `key` is 8 words, `nonce` 3 words.
 */
function chachaXorBlocks(
  key: Uint32Array,
  n0: number,
  n1: number,
  n2: number,
  counter: number,
  buf32: Uint32Array,
  nBlocks: number,
): void {
  const k0 = key[0] as number;
  const k1 = key[1] as number;
  const k2 = key[2] as number;
  const k3 = key[3] as number;
  const k4 = key[4] as number;
  const k5 = key[5] as number;
  const k6 = key[6] as number;
  const k7 = key[7] as number;
  for (let b = 0, o = 0; b < nBlocks; b++, o += 16) {
    const ctr = (counter + b) | 0;
    let x0 = 0x61707865;
    let x1 = 0x3320646e;
    let x2 = 0x79622d32;
    let x3 = 0x6b206574;
    let x4 = k0;
    let x5 = k1;
    let x6 = k2;
    let x7 = k3;
    let x8 = k4;
    let x9 = k5;
    let x10 = k6;
    let x11 = k7;
    let x12 = ctr;
    let x13 = n0;
    let x14 = n1;
    let x15 = n2;
    for (let i = 0; i < 10; i++) {
      // Column rounds.
      x0 = (x0 + x4) | 0;
      x12 ^= x0;
      x12 = (x12 << 16) | (x12 >>> 16);
      x8 = (x8 + x12) | 0;
      x4 ^= x8;
      x4 = (x4 << 12) | (x4 >>> 20);
      x0 = (x0 + x4) | 0;
      x12 ^= x0;
      x12 = (x12 << 8) | (x12 >>> 24);
      x8 = (x8 + x12) | 0;
      x4 ^= x8;
      x4 = (x4 << 7) | (x4 >>> 25);

      x1 = (x1 + x5) | 0;
      x13 ^= x1;
      x13 = (x13 << 16) | (x13 >>> 16);
      x9 = (x9 + x13) | 0;
      x5 ^= x9;
      x5 = (x5 << 12) | (x5 >>> 20);
      x1 = (x1 + x5) | 0;
      x13 ^= x1;
      x13 = (x13 << 8) | (x13 >>> 24);
      x9 = (x9 + x13) | 0;
      x5 ^= x9;
      x5 = (x5 << 7) | (x5 >>> 25);

      x2 = (x2 + x6) | 0;
      x14 ^= x2;
      x14 = (x14 << 16) | (x14 >>> 16);
      x10 = (x10 + x14) | 0;
      x6 ^= x10;
      x6 = (x6 << 12) | (x6 >>> 20);
      x2 = (x2 + x6) | 0;
      x14 ^= x2;
      x14 = (x14 << 8) | (x14 >>> 24);
      x10 = (x10 + x14) | 0;
      x6 ^= x10;
      x6 = (x6 << 7) | (x6 >>> 25);

      x3 = (x3 + x7) | 0;
      x15 ^= x3;
      x15 = (x15 << 16) | (x15 >>> 16);
      x11 = (x11 + x15) | 0;
      x7 ^= x11;
      x7 = (x7 << 12) | (x7 >>> 20);
      x3 = (x3 + x7) | 0;
      x15 ^= x3;
      x15 = (x15 << 8) | (x15 >>> 24);
      x11 = (x11 + x15) | 0;
      x7 ^= x11;
      x7 = (x7 << 7) | (x7 >>> 25);

      // Diagonal rounds.
      x0 = (x0 + x5) | 0;
      x15 ^= x0;
      x15 = (x15 << 16) | (x15 >>> 16);
      x10 = (x10 + x15) | 0;
      x5 ^= x10;
      x5 = (x5 << 12) | (x5 >>> 20);
      x0 = (x0 + x5) | 0;
      x15 ^= x0;
      x15 = (x15 << 8) | (x15 >>> 24);
      x10 = (x10 + x15) | 0;
      x5 ^= x10;
      x5 = (x5 << 7) | (x5 >>> 25);

      x1 = (x1 + x6) | 0;
      x12 ^= x1;
      x12 = (x12 << 16) | (x12 >>> 16);
      x11 = (x11 + x12) | 0;
      x6 ^= x11;
      x6 = (x6 << 12) | (x6 >>> 20);
      x1 = (x1 + x6) | 0;
      x12 ^= x1;
      x12 = (x12 << 8) | (x12 >>> 24);
      x11 = (x11 + x12) | 0;
      x6 ^= x11;
      x6 = (x6 << 7) | (x6 >>> 25);

      x2 = (x2 + x7) | 0;
      x13 ^= x2;
      x13 = (x13 << 16) | (x13 >>> 16);
      x8 = (x8 + x13) | 0;
      x7 ^= x8;
      x7 = (x7 << 12) | (x7 >>> 20);
      x2 = (x2 + x7) | 0;
      x13 ^= x2;
      x13 = (x13 << 8) | (x13 >>> 24);
      x8 = (x8 + x13) | 0;
      x7 ^= x8;
      x7 = (x7 << 7) | (x7 >>> 25);

      x3 = (x3 + x4) | 0;
      x14 ^= x3;
      x14 = (x14 << 16) | (x14 >>> 16);
      x9 = (x9 + x14) | 0;
      x4 ^= x9;
      x4 = (x4 << 12) | (x4 >>> 20);
      x3 = (x3 + x4) | 0;
      x14 ^= x3;
      x14 = (x14 << 8) | (x14 >>> 24);
      x9 = (x9 + x14) | 0;
      x4 ^= x9;
      x4 = (x4 << 7) | (x4 >>> 25);
    }
    buf32[o] = (buf32[o] as number) ^ (x0 + 0x61707865);
    buf32[o + 1] = (buf32[o + 1] as number) ^ (x1 + 0x3320646e);
    buf32[o + 2] = (buf32[o + 2] as number) ^ (x2 + 0x79622d32);
    buf32[o + 3] = (buf32[o + 3] as number) ^ (x3 + 0x6b206574);
    buf32[o + 4] = (buf32[o + 4] as number) ^ (x4 + k0);
    buf32[o + 5] = (buf32[o + 5] as number) ^ (x5 + k1);
    buf32[o + 6] = (buf32[o + 6] as number) ^ (x6 + k2);
    buf32[o + 7] = (buf32[o + 7] as number) ^ (x7 + k3);
    buf32[o + 8] = (buf32[o + 8] as number) ^ (x8 + k4);
    buf32[o + 9] = (buf32[o + 9] as number) ^ (x9 + k5);
    buf32[o + 10] = (buf32[o + 10] as number) ^ (x10 + k6);
    buf32[o + 11] = (buf32[o + 11] as number) ^ (x11 + k7);
    buf32[o + 12] = (buf32[o + 12] as number) ^ (x12 + ctr);
    buf32[o + 13] = (buf32[o + 13] as number) ^ (x13 + n0);
    buf32[o + 14] = (buf32[o + 14] as number) ^ (x14 + n1);
    buf32[o + 15] = (buf32[o + 15] as number) ^ (x15 + n2);
  }
}

/** 16 zeroed words for a partial final block (key stream XORed into zeros = the key stream itself). */
const tailWords = new Uint32Array(16);
const tailBytes = new Uint8Array(tailWords.buffer);

/**
 * XORs the ChaCha20 key stream, starting at block `counter`, into `buf` in place. `buf` must start at a
 * 4-byte aligned offset.
 */
function chachaXorInPlace(key: Uint32Array, nonce: Uint32Array, counter: number, buf: Uint8Array): void {
  const n0 = nonce[0] as number;
  const n1 = nonce[1] as number;
  const n2 = nonce[2] as number;
  const full = buf.length >>> 6;
  if (full > 0) {
    chachaXorBlocks(key, n0, n1, n2, counter, new Uint32Array(buf.buffer, buf.byteOffset, full * 16), full);
  }
  const rest = buf.length - full * 64;
  if (rest > 0) {
    tailWords.fill(0);
    chachaXorBlocks(key, n0, n1, n2, counter + full, tailWords, 1);
    for (let i = 0, j = full * 64; i < rest; i++, j++) buf[j] = (buf[j] as number) ^ (tailBytes[i] as number);
    tailWords.fill(0); // leave no key stream behind
  }
}

/** The first 32 bytes of ChaCha20 block 0 under (key, nonce), the one-time Poly1305 key, into `block`. */
function polyKey(key: Uint32Array, nonce: Uint32Array, block: Uint32Array): Uint32Array {
  block.fill(0);
  chachaXorBlocks(key, nonce[0] as number, nonce[1] as number, nonce[2] as number, 0, block, 1);
  return block.subarray(0, 8);
}

const LIMB = 4194304; // 2^22
const INV_LIMB = 1 / LIMB;
const MASK = 0x3fffff;

/**
 * Poly1305 over data that is processed as whole 16-byte blocks (the AEAD construction pads every part
 * to 16 bytes). State: h (6 limbs) and r, s20 = 20 * r (2^132 = 20 mod 2^130 - 5) in one Float64Array.
 */
class Poly1305 {
  private readonly st = new Float64Array(17); // h0..h5, r0..r5, s1..s5 (20 * r)
  private readonly pad = new Uint32Array(4); // s, the 4 words added at the end
  private readonly scratch = new Uint32Array(4);
  private readonly scratchBytes = new Uint8Array(this.scratch.buffer);

  /** Starts a new MAC with the one-time key `k` (8 words: r, then s). The object is reused. */
  init(k: Uint32Array): this {
    const t0 = (k[0] as number) & 0x0fffffff;
    const t1 = (k[1] as number) & 0x0ffffffc;
    const t2 = (k[2] as number) & 0x0ffffffc;
    const t3 = (k[3] as number) & 0x0ffffffc;
    const st = this.st;
    st.fill(0, 0, 6);
    st[6] = t0 & MASK;
    st[7] = ((t0 >>> 22) | (t1 << 10)) & MASK;
    st[8] = ((t1 >>> 12) | (t2 << 20)) & MASK;
    st[9] = (t2 >>> 2) & MASK;
    st[10] = ((t2 >>> 24) | (t3 << 8)) & MASK;
    st[11] = t3 >>> 14;
    for (let j = 1; j < 6; j++) st[11 + j] = 20 * (st[6 + j] as number);
    this.pad.set(k.subarray(4, 8));
    return this;
  }

  /**
   * Absorbs `words` [0, nBlocks * 4) as nBlocks blocks; `hibit` is 0x40000 (bit 128 = bit 18 of limb 5)
   * for every full 16-byte block, 0 for a short final block that carries its own 0x01 byte.
   */
  blocks(words: Uint32Array, nBlocks: number, hibit = 0x40000): void {
    const st = this.st;
    let h0 = st[0] as number;
    let h1 = st[1] as number;
    let h2 = st[2] as number;
    let h3 = st[3] as number;
    let h4 = st[4] as number;
    let h5 = st[5] as number;
    const r0 = st[6] as number;
    const r1 = st[7] as number;
    const r2 = st[8] as number;
    const r3 = st[9] as number;
    const r4 = st[10] as number;
    const r5 = st[11] as number;
    const s1 = st[12] as number;
    const s2 = st[13] as number;
    const s3 = st[14] as number;
    const s4 = st[15] as number;
    const s5 = st[16] as number;
    for (let b = 0, o = 0; b < nBlocks; b++, o += 4) {
      const w0 = words[o] as number;
      const w1 = words[o + 1] as number;
      const w2 = words[o + 2] as number;
      const w3 = words[o + 3] as number;
      h0 += w0 & MASK;
      h1 += ((w0 >>> 22) | (w1 << 10)) & MASK;
      h2 += ((w1 >>> 12) | (w2 << 20)) & MASK;
      h3 += (w2 >>> 2) & MASK;
      h4 += ((w2 >>> 24) | (w3 << 8)) & MASK;
      h5 += (w3 >>> 14) | hibit;
      // h * r mod 2^130 - 5, columns of 22-bit limbs; products of limbs past the sixth wrap with * 20.
      const d0 = h0 * r0 + h1 * s5 + h2 * s4 + h3 * s3 + h4 * s2 + h5 * s1;
      let d1 = h0 * r1 + h1 * r0 + h2 * s5 + h3 * s4 + h4 * s3 + h5 * s2;
      let d2 = h0 * r2 + h1 * r1 + h2 * r0 + h3 * s5 + h4 * s4 + h5 * s3;
      let d3 = h0 * r3 + h1 * r2 + h2 * r1 + h3 * r0 + h4 * s5 + h5 * s4;
      let d4 = h0 * r4 + h1 * r3 + h2 * r2 + h3 * r1 + h4 * r0 + h5 * s5;
      let d5 = h0 * r5 + h1 * r4 + h2 * r3 + h3 * r2 + h4 * r1 + h5 * r0;
      let c = Math.trunc(d0 * INV_LIMB);
      h0 = d0 - c * LIMB;
      d1 += c;
      c = Math.trunc(d1 * INV_LIMB);
      h1 = d1 - c * LIMB;
      d2 += c;
      c = Math.trunc(d2 * INV_LIMB);
      h2 = d2 - c * LIMB;
      d3 += c;
      c = Math.trunc(d3 * INV_LIMB);
      h3 = d3 - c * LIMB;
      d4 += c;
      c = Math.trunc(d4 * INV_LIMB);
      h4 = d4 - c * LIMB;
      d5 += c;
      c = Math.trunc(d5 * INV_LIMB);
      h5 = d5 - c * LIMB;
      h0 += c * 20;
      c = Math.trunc(h0 * INV_LIMB);
      h0 -= c * LIMB;
      h1 += c;
    }
    st[0] = h0;
    st[1] = h1;
    st[2] = h2;
    st[3] = h3;
    st[4] = h4;
    st[5] = h5;
  }

  /** Absorbs `bytes` zero-padded to a multiple of 16 (any alignment). */
  padded(bytes: Uint8Array): void {
    const full = bytes.length >>> 4;
    if (full > 0) {
      if ((bytes.byteOffset & 3) === 0) {
        this.blocks(new Uint32Array(bytes.buffer, bytes.byteOffset, full * 4), full);
      } else {
        for (let i = 0; i < full; i++) {
          this.scratchBytes.set(bytes.subarray(i * 16, i * 16 + 16));
          this.blocks(this.scratch, 1);
        }
      }
    }
    const rest = bytes.length - full * 16;
    if (rest > 0) {
      this.scratch.fill(0);
      this.scratchBytes.set(bytes.subarray(full * 16));
      this.blocks(this.scratch, 1);
    }
  }

  /** The AEAD's final length block, then the tag into `out` at `at`. */
  finish(aadLength: number, ctLength: number, out: Uint8Array, at: number): void {
    const w = this.scratch;
    w[0] = aadLength >>> 0;
    w[1] = Math.floor(aadLength / 0x100000000);
    w[2] = ctLength >>> 0;
    w[3] = Math.floor(ctLength / 0x100000000);
    this.blocks(w, 1);
    this.tag(out, at);
  }

  /** Poly1305 of a whole message of any length (RFC 8439 2.5.1), as 16 bytes. */
  message(msg: Uint8Array): Uint8Array {
    const full = msg.length >>> 4;
    this.padded(msg.subarray(0, full * 16));
    const rest = msg.length - full * 16;
    if (rest > 0) {
      this.scratch.fill(0);
      this.scratchBytes.set(msg.subarray(full * 16));
      this.scratchBytes[rest] = 1;
      this.blocks(this.scratch, 1, 0);
    }
    const out = new Uint8Array(TAG_BYTES);
    this.tag(out, 0);
    return out;
  }

  /** (h mod 2^130 - 5) + s mod 2^128, little-endian, into `out` at `at`. */
  private tag(out: Uint8Array, at: number): void {
    const st = this.st;
    const h = [st[0], st[1], st[2], st[3], st[4], st[5]] as number[];
    // Carry fully twice, folding bits 130+ back in with * 5, which leaves h < 2^130.
    for (let pass = 0; pass < 2; pass++) {
      for (let i = 0; i < 5; i++) {
        const c = Math.floor((h[i] as number) * INV_LIMB);
        h[i] = (h[i] as number) - c * LIMB;
        h[i + 1] = (h[i + 1] as number) + c;
      }
      const top = Math.floor((h[5] as number) / 0x100000); // bits 130 and up
      h[5] = (h[5] as number) - top * 0x100000;
      h[0] = (h[0] as number) + top * 5;
    }
    for (let i = 0; i < 5; i++) {
      const c = Math.floor((h[i] as number) * INV_LIMB);
      h[i] = (h[i] as number) - c * LIMB;
      h[i + 1] = (h[i + 1] as number) + c;
    }
    // g = h + 5 - 2^130; if it does not borrow, h >= p and h - p = g is the reduced value.
    const g = new Array<number>(6);
    let c = 5;
    for (let i = 0; i < 5; i++) {
      const v = (h[i] as number) + c;
      c = v >>> 22;
      g[i] = v & MASK;
    }
    const g5 = (h[5] as number) + c - 0x100000;
    const useG = ~(g5 >> 31); // all ones when g5 >= 0, i.e. h >= p
    g[5] = g5 & 0xfffff;
    const f = new Array<number>(6);
    for (let i = 0; i < 6; i++) f[i] = ((g[i] as number) & useG) | ((h[i] as number) & ~useG);
    const [f0, f1, f2, f3, f4, f5] = f as [number, number, number, number, number, number];
    const v0 = (f0 | (f1 << 22)) >>> 0;
    const v1 = ((f1 >>> 10) | (f2 << 12)) >>> 0;
    const v2 = ((f2 >>> 20) | (f3 << 2) | (f4 << 24)) >>> 0;
    const v3 = ((f4 >>> 8) | (f5 << 14)) >>> 0;
    // tag = (h + s) mod 2^128, little-endian.
    let sum = v0 + (this.pad[0] as number);
    writeU32(out, at, sum);
    sum = v1 + (this.pad[1] as number) + (sum > 0xffffffff ? 1 : 0);
    writeU32(out, at + 4, sum);
    sum = v2 + (this.pad[2] as number) + (sum > 0xffffffff ? 1 : 0);
    writeU32(out, at + 8, sum);
    sum = v3 + (this.pad[3] as number) + (sum > 0xffffffff ? 1 : 0);
    writeU32(out, at + 12, sum);
  }
}

function writeU32(out: Uint8Array, at: number, v: number): void {
  out[at] = v & 0xff;
  out[at + 1] = (v >>> 8) & 0xff;
  out[at + 2] = (v >>> 16) & 0xff;
  out[at + 3] = (v >>> 24) & 0xff;
}

function readU32(bytes: Uint8Array, at: number): number {
  return (
    ((bytes[at] as number) |
      ((bytes[at + 1] as number) << 8) |
      ((bytes[at + 2] as number) << 16) |
      ((bytes[at + 3] as number) << 24)) >>>
    0
  );
}

function wordsLE(bytes: Uint8Array, n: number): Uint32Array {
  const w = new Uint32Array(n);
  for (let i = 0; i < n; i++) w[i] = readU32(bytes, i * 4);
  return w;
}

function check(key: Uint8Array, nonce: Uint8Array): void {
  if (!CHACHA20_POLY1305_AVAILABLE) throw new Error("ChaCha20-Poly1305: this host is not little-endian");
  if (key.length !== KEY_BYTES) throw new RangeError("ChaCha20-Poly1305: the key must be 32 bytes");
  if (nonce.length !== NONCE_BYTES) throw new RangeError("ChaCha20-Poly1305: the nonce must be 12 bytes");
}

/** A ChaCha20-Poly1305 key, expanded once; seal/open are synchronous. */
export interface ChaCha20Poly1305 {
  seal(nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array;
  open(nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array): Uint8Array | null;
}

export function chacha20Poly1305(key: Uint8Array): ChaCha20Poly1305 {
  check(key, new Uint8Array(NONCE_BYTES));
  const k = wordsLE(key, 8);
  // Per-key scratch, reused by every record (seal/open are synchronous, so never shared mid-call).
  const n = new Uint32Array(3);
  const block0 = new Uint32Array(16);
  const mac = new Poly1305();
  const nonceWords = (nonce: Uint8Array): Uint32Array => {
    check(key, nonce);
    for (let i = 0; i < 3; i++) n[i] = readU32(nonce, i * 4);
    return n;
  };
  return {
    seal(nonce, aad, plaintext) {
      nonceWords(nonce);
      const out = new Uint8Array(plaintext.length + TAG_BYTES);
      out.set(plaintext);
      const ct = out.subarray(0, plaintext.length);
      chachaXorInPlace(k, n, 1, ct);
      mac.init(polyKey(k, n, block0));
      mac.padded(aad);
      mac.padded(ct);
      mac.finish(aad.length, ct.length, out, plaintext.length);
      return out;
    },
    open(nonce, aad, sealed) {
      nonceWords(nonce);
      if (sealed.length < TAG_BYTES) return null;
      const length = sealed.length - TAG_BYTES;
      const out = new Uint8Array(length + TAG_BYTES);
      out.set(sealed.subarray(0, length));
      const ct = out.subarray(0, length);
      mac.init(polyKey(k, n, block0));
      mac.padded(aad);
      mac.padded(ct);
      mac.finish(aad.length, length, out, length);
      // Constant-time comparison of the computed tag (in out[length..]) with the received one.
      let diff = 0;
      for (let i = 0; i < TAG_BYTES; i++)
        diff |= (out[length + i] as number) ^ (sealed[length + i] as number);
      if (diff !== 0) {
        out.fill(0);
        return null;
      }
      chachaXorInPlace(k, n, 1, ct);
      return ct;
    },
  };
}

/** RFC 8439 AEAD_CHACHA20_POLY1305 encryption: returns ciphertext || 16-byte tag. */
export function seal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Uint8Array {
  return chacha20Poly1305(key).seal(nonce, aad, plaintext);
}

/** RFC 8439 AEAD_CHACHA20_POLY1305 decryption: the plaintext, or null when the tag does not verify. */
export function open(
  key: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  sealed: Uint8Array,
): Uint8Array | null {
  return chacha20Poly1305(key).open(nonce, aad, sealed);
}

/** The raw ChaCha20 cipher (RFC 8439 2.4): `data` XOR key stream from block `counter`. For tests. */
export function chacha20(key: Uint8Array, nonce: Uint8Array, counter: number, data: Uint8Array): Uint8Array {
  check(key, nonce);
  const out = new Uint8Array(data.length);
  out.set(data);
  chachaXorInPlace(wordsLE(key, 8), wordsLE(nonce, 3), counter, out);
  return out;
}

/** Poly1305 of a whole message (RFC 8439 2.5), any length. For tests. */
export function poly1305(key32: Uint8Array, message: Uint8Array): Uint8Array {
  if (key32.length !== KEY_BYTES) throw new RangeError("Poly1305: the key must be 32 bytes");
  const mac = new Poly1305().init(wordsLE(key32, 8));
  return mac.message(message);
}

/** The TLS 1.3 AEAD plug-in (see aead.ts and registerCipherSuite in cipher-suites.ts). */
export const CHACHA20_POLY1305: AeadAlgorithm = {
  keyLength: KEY_BYTES,
  tagLength: TAG_BYTES,
  async create(key: Uint8Array): Promise<Aead> {
    const cipher = chacha20Poly1305(key);
    return {
      seal: async (nonce, aad, plaintext) => cipher.seal(nonce, aad, plaintext),
      open: async (nonce, aad, sealed) => cipher.open(nonce, aad, sealed),
    };
  },
};
