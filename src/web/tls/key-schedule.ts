/**
 * The TLS 1.3 key schedule (RFC 8446 section 7): HKDF-Extract, HKDF-Expand-Label, Derive-Secret,
 * traffic keys and IVs, Finished keys and the KeyUpdate successor secret, all over WebCrypto HMAC.
 */
import { bs } from "./aead.js";
import { utf8, Writer } from "./bytes.js";
import type { CipherSuite } from "./cipher-suites.js";

const subtle = () => globalThis.crypto.subtle;

export async function hmac(hash: string, key: Uint8Array, data: Uint8Array): Promise<Uint8Array> {
  const k = await subtle().importKey("raw", bs(key), { name: "HMAC", hash }, false, ["sign"]);
  return new Uint8Array(await subtle().sign("HMAC", k, bs(data)));
}

export async function digest(hash: string, data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await subtle().digest(hash, bs(data)));
}

export function hkdfExtract(hash: string, salt: Uint8Array, ikm: Uint8Array): Promise<Uint8Array> {
  return hmac(hash, salt, ikm);
}

export async function hkdfExpand(
  hash: string,
  prk: Uint8Array,
  info: Uint8Array,
  length: number,
): Promise<Uint8Array> {
  const k = await subtle().importKey("raw", bs(prk), { name: "HMAC", hash }, false, ["sign"]);
  const out = new Uint8Array(length);
  let prev: Uint8Array = new Uint8Array(0);
  let at = 0;
  for (let i = 1; at < length; i++) {
    const input = new Uint8Array(prev.length + info.length + 1);
    input.set(prev);
    input.set(info, prev.length);
    input[input.length - 1] = i;
    prev = new Uint8Array(await subtle().sign("HMAC", k, input));
    out.set(prev.subarray(0, Math.min(prev.length, length - at)), at);
    at += prev.length;
  }
  return out;
}

export function hkdfExpandLabel(
  hash: string,
  secret: Uint8Array,
  label: string,
  context: Uint8Array,
  length: number,
): Promise<Uint8Array> {
  const info = new Writer(64)
    .u16(length)
    .vector(1, (w) => w.bytes(utf8.encode(`tls13 ${label}`)))
    .vector(1, (w) => w.bytes(context))
    .finish();
  return hkdfExpand(hash, secret, info, length);
}

export interface TrafficKeys {
  key: Uint8Array;
  iv: Uint8Array;
}

/** The secrets of one handshake, for one cipher suite. */
export class KeySchedule {
  readonly hash: string;
  readonly hashLength: number;

  constructor(readonly suite: CipherSuite) {
    this.hash = suite.hash;
    this.hashLength = suite.hashLength;
  }

  /** Derive-Secret(secret, label, messages) with the transcript hash already computed. */
  deriveSecret(secret: Uint8Array, label: string, transcriptHash: Uint8Array): Promise<Uint8Array> {
    return hkdfExpandLabel(this.hash, secret, label, transcriptHash, this.hashLength);
  }

  async emptyHash(): Promise<Uint8Array> {
    return digest(this.hash, new Uint8Array(0));
  }

  /** Handshake Secret from the (EC)DHE shared secret, without a PSK. */
  async handshakeSecret(sharedSecret: Uint8Array): Promise<Uint8Array> {
    const zeros = new Uint8Array(this.hashLength);
    const early = await hkdfExtract(this.hash, zeros, zeros);
    const derived = await this.deriveSecret(early, "derived", await this.emptyHash());
    return hkdfExtract(this.hash, derived, sharedSecret);
  }

  async masterSecret(handshakeSecret: Uint8Array): Promise<Uint8Array> {
    const derived = await this.deriveSecret(handshakeSecret, "derived", await this.emptyHash());
    return hkdfExtract(this.hash, derived, new Uint8Array(this.hashLength));
  }

  async trafficKeys(secret: Uint8Array): Promise<TrafficKeys> {
    const key = await hkdfExpandLabel(this.hash, secret, "key", new Uint8Array(0), this.suite.aead.keyLength);
    const iv = await hkdfExpandLabel(this.hash, secret, "iv", new Uint8Array(0), 12);
    return { key, iv };
  }

  finishedKey(baseKey: Uint8Array): Promise<Uint8Array> {
    return hkdfExpandLabel(this.hash, baseKey, "finished", new Uint8Array(0), this.hashLength);
  }

  /** verify_data = HMAC(finished_key, Transcript-Hash). */
  async finishedData(baseKey: Uint8Array, transcriptHash: Uint8Array): Promise<Uint8Array> {
    return hmac(this.hash, await this.finishedKey(baseKey), transcriptHash);
  }

  /** application_traffic_secret_N+1 (section 7.2). */
  nextTrafficSecret(secret: Uint8Array): Promise<Uint8Array> {
    return hkdfExpandLabel(this.hash, secret, "traffic upd", new Uint8Array(0), this.hashLength);
  }
}
