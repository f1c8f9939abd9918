/**
 * Handshake messages (RFC 8446 section 4): framing and reassembly across records, the ClientHello the
 * client sends, and strict decoders for everything a server sends. Extension checks follow section 4.2:
 * a response to something not offered is unsupported_extension, a known extension in the wrong message
 * illegal_parameter, a duplicate illegal_parameter.
 */
import { Alert, fatal } from "./alerts.js";
import { concat, equalBytes, Reader, utf8, Writer } from "./bytes.js";

export const HandshakeType = {
  client_hello: 1,
  server_hello: 2,
  new_session_ticket: 4,
  end_of_early_data: 5,
  encrypted_extensions: 8,
  certificate: 11,
  certificate_request: 13,
  certificate_verify: 15,
  finished: 20,
  key_update: 24,
  message_hash: 254,
} as const;

export const Ext = {
  server_name: 0,
  max_fragment_length: 1,
  status_request: 5,
  supported_groups: 10,
  signature_algorithms: 13,
  alpn: 16,
  signed_certificate_timestamp: 18,
  padding: 21,
  record_size_limit: 28,
  pre_shared_key: 41,
  early_data: 42,
  supported_versions: 43,
  cookie: 44,
  psk_key_exchange_modes: 45,
  certificate_authorities: 47,
  oid_filters: 48,
  post_handshake_auth: 49,
  signature_algorithms_cert: 50,
  key_share: 51,
} as const;

const KNOWN_EXTENSIONS: ReadonlySet<number> = new Set(Object.values(Ext));

export const TLS13 = 0x0304;

/** SHA-256("HelloRetryRequest"), the random of a HelloRetryRequest. */
export const HRR_RANDOM = new Uint8Array([
  0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91, 0xc2, 0xa2,
  0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
]);

/** "DOWNGRD" + 01 (TLS 1.2) or 00 (TLS 1.1 and below) as the last 8 bytes of a server random. */
export function hasDowngradeSentinel(random: Uint8Array): boolean {
  const tail = random.subarray(24);
  const sentinel = [0x44, 0x4f, 0x57, 0x4e, 0x47, 0x52, 0x44];
  for (let i = 0; i < 7; i++) if (tail[i] !== sentinel[i]) return false;
  return tail[7] === 0 || tail[7] === 1;
}

export interface HandshakeMessage {
  type: number;
  body: Uint8Array;
  /** The whole message with its 4-byte header, as it goes into the transcript. */
  raw: Uint8Array;
}

export function handshakeMessage(type: number, body: Uint8Array): Uint8Array {
  return new Writer(body.length + 4)
    .u8(type)
    .vector(3, (w) => w.bytes(body))
    .finish();
}

/** Largest handshake message accepted (a long certificate chain fits). */
const MAX_HANDSHAKE_MESSAGE = 1 << 18;

/** Reassembles handshake messages from record fragments. */
export class HandshakeBuffer {
  private parts: Uint8Array[] = [];
  private length = 0;

  push(fragment: Uint8Array): void {
    if (fragment.length === 0) throw fatal(Alert.unexpected_message, "empty handshake record");
    this.parts.push(fragment);
    this.length += fragment.length;
  }

  /** True if part of a message is waiting for more records. */
  get pending(): boolean {
    return this.length > 0;
  }

  /** Byte i of the buffered data, across fragments. */
  private peek(i: number): number {
    for (const part of this.parts) {
      if (i < part.length) return part[i] as number;
      i -= part.length;
    }
    return 0;
  }

  next(): HandshakeMessage | null {
    if (this.length < 4) return null;
    const len = (this.peek(1) << 16) | (this.peek(2) << 8) | this.peek(3);
    if (len > MAX_HANDSHAKE_MESSAGE)
      throw fatal(Alert.decode_error, `handshake message of ${len} bytes is too large`);
    if (this.length < 4 + len) return null;
    // Joined only once the whole message is here, so many small fragments cost linear time.
    const all = this.parts.length === 1 ? (this.parts[0] as Uint8Array) : concat(this.parts);
    const raw = all.subarray(0, 4 + len);
    const rest = all.subarray(4 + len);
    this.parts = rest.length > 0 ? [rest] : [];
    this.length = rest.length;
    return { type: all[0] as number, body: raw.subarray(4), raw };
  }
}

function parseExtensions(r: Reader, what: string): Map<number, Uint8Array> {
  const out = new Map<number, Uint8Array>();
  const block = r.sub(2, `${what} extensions`);
  while (block.remaining > 0) {
    const type = block.u16();
    const data = block.vector(2);
    if (out.has(type)) throw fatal(Alert.illegal_parameter, `${what} repeats extension ${type}`);
    out.set(type, data);
  }
  return out;
}

/** Rejects extensions in a server response that were not offered or do not belong in this message. */
function checkResponseExtensions(
  exts: Map<number, Uint8Array>,
  offered: ReadonlySet<number>,
  allowed: ReadonlySet<number>,
  what: string,
): void {
  for (const type of exts.keys()) {
    if (!offered.has(type) && !(allowed.has(type) && type === Ext.cookie)) {
      throw fatal(Alert.unsupported_extension, `${what} carries extension ${type} the client did not offer`);
    }
    if (!allowed.has(type))
      throw fatal(Alert.illegal_parameter, `extension ${type} is not allowed in ${what}`);
  }
}

export function isIpLiteral(name: string): boolean {
  return name.includes(":") || /^\d{1,3}(\.\d{1,3}){3}$/.test(name);
}

export interface ClientHelloParams {
  random: Uint8Array;
  sessionId: Uint8Array;
  cipherSuites: number[];
  serverName: string;
  groups: number[];
  keyShare: { group: number; publicKey: Uint8Array };
  signatureSchemes: number[];
  alpn?: string[] | undefined;
  cookie?: Uint8Array | undefined;
}

/** The ClientHello (with handshake header) and the set of extension types it offered. */
export function encodeClientHello(p: ClientHelloParams): { message: Uint8Array; offered: Set<number> } {
  const offered = new Set<number>();
  const w = new Writer(512);
  w.u16(0x0303).bytes(p.random);
  w.vector(1, (v) => v.bytes(p.sessionId));
  w.vector(2, (v) => {
    for (const s of p.cipherSuites) v.u16(s);
  });
  w.vector(1, (v) => v.u8(0));
  w.vector(2, (ext) => {
    const add = (type: number, body: (v: Writer) => void) => {
      offered.add(type);
      ext.u16(type).vector(2, body);
    };
    const host = p.serverName.replace(/\.$/, "");
    if (host && !isIpLiteral(host)) {
      add(Ext.server_name, (v) =>
        v.vector(2, (list) => list.u8(0).vector(2, (n) => n.bytes(utf8.encode(host.toLowerCase())))),
      );
    }
    add(Ext.supported_versions, (v) => v.vector(1, (l) => l.u16(TLS13)));
    add(Ext.supported_groups, (v) =>
      v.vector(2, (l) => {
        for (const g of p.groups) l.u16(g);
      }),
    );
    add(Ext.signature_algorithms, (v) =>
      v.vector(2, (l) => {
        for (const s of p.signatureSchemes) l.u16(s);
      }),
    );
    if (p.alpn && p.alpn.length > 0) {
      const names = p.alpn;
      add(Ext.alpn, (v) =>
        v.vector(2, (l) => {
          for (const name of names) l.vector(1, (n) => n.bytes(utf8.encode(name)));
        }),
      );
    }
    if (p.cookie) {
      const cookie = p.cookie;
      add(Ext.cookie, (v) => v.vector(2, (c) => c.bytes(cookie)));
    }
    add(Ext.key_share, (v) =>
      v.vector(2, (l) => l.u16(p.keyShare.group).vector(2, (k) => k.bytes(p.keyShare.publicKey))),
    );
  });
  return { message: handshakeMessage(HandshakeType.client_hello, w.finish()), offered };
}

export interface ServerHello {
  isHelloRetryRequest: boolean;
  random: Uint8Array;
  cipherSuite: number;
  /** From supported_versions, or null if the server did not send it (TLS 1.2 or below). */
  version: number | null;
  /** ServerHello: the server's key share; HelloRetryRequest: the selected group only. */
  keyShareGroup: number | null;
  keyShare: Uint8Array | null;
  cookie: Uint8Array | null;
  hasKeyShare: boolean;
}

const SH_ALLOWED: ReadonlySet<number> = new Set([Ext.supported_versions, Ext.key_share, Ext.pre_shared_key]);
const HRR_ALLOWED: ReadonlySet<number> = new Set([Ext.supported_versions, Ext.key_share, Ext.cookie]);

/**
 * Decodes a ServerHello or HelloRetryRequest, checking legacy fields, the session id echo and the
 * extensions. Version and downgrade checks come first so a TLS 1.2 answer ends in protocol_version.
 */
export function decodeServerHello(
  body: Uint8Array,
  sessionId: Uint8Array,
  offered: ReadonlySet<number>,
): ServerHello {
  const r = new Reader(body, "ServerHello");
  const legacyVersion = r.u16();
  const random = r.bytes(32);
  const echo = r.vector(1, 0, 32);
  const cipherSuite = r.u16();
  const compression = r.u8();
  const exts = r.remaining > 0 ? parseExtensions(r, "ServerHello") : new Map<number, Uint8Array>();
  r.done();
  const isHelloRetryRequest = equalBytes(random, HRR_RANDOM);
  const what = isHelloRetryRequest ? "HelloRetryRequest" : "ServerHello";
  let version: number | null = null;
  const sv = exts.get(Ext.supported_versions);
  if (sv) {
    const v = new Reader(sv, "supported_versions");
    version = v.u16();
    v.done();
  }
  if (hasDowngradeSentinel(random))
    throw fatal(Alert.illegal_parameter, "server random carries the TLS 1.2 downgrade sentinel");
  if (version === null) {
    throw fatal(
      Alert.protocol_version,
      `${what} without supported_versions (legacy version 0x${legacyVersion.toString(16)}): TLS 1.3 only`,
    );
  }
  if (version !== TLS13)
    throw fatal(Alert.illegal_parameter, `${what} selects version 0x${version.toString(16)}`);
  if (legacyVersion !== 0x0303) throw fatal(Alert.illegal_parameter, `${what} legacy_version is not 0x0303`);
  if (!equalBytes(echo, sessionId))
    throw fatal(Alert.illegal_parameter, `${what} does not echo legacy_session_id`);
  if (compression !== 0) throw fatal(Alert.illegal_parameter, `${what} selects a compression method`);
  checkResponseExtensions(exts, offered, isHelloRetryRequest ? HRR_ALLOWED : SH_ALLOWED, what);
  let keyShareGroup: number | null = null;
  let keyShare: Uint8Array | null = null;
  const ks = exts.get(Ext.key_share);
  if (ks) {
    const k = new Reader(ks, "key_share");
    keyShareGroup = k.u16();
    if (!isHelloRetryRequest) keyShare = k.vector(2, 1);
    k.done();
  }
  let cookie: Uint8Array | null = null;
  const c = exts.get(Ext.cookie);
  if (c) {
    const cr = new Reader(c, "cookie");
    cookie = cr.vector(2, 1);
    cr.done();
  }
  return {
    isHelloRetryRequest,
    random,
    cipherSuite,
    version,
    keyShareGroup,
    keyShare,
    cookie,
    hasKeyShare: !!ks,
  };
}

const EE_ALLOWED: ReadonlySet<number> = new Set([
  Ext.server_name,
  Ext.supported_groups,
  Ext.alpn,
  Ext.max_fragment_length,
  Ext.record_size_limit,
  Ext.early_data,
]);

export function decodeEncryptedExtensions(
  body: Uint8Array,
  offered: ReadonlySet<number>,
  alpnOffered: readonly string[],
): { alpn: string | null } {
  const r = new Reader(body, "EncryptedExtensions");
  const exts = parseExtensions(r, "EncryptedExtensions");
  r.done();
  checkResponseExtensions(exts, offered, EE_ALLOWED, "EncryptedExtensions");
  const sni = exts.get(Ext.server_name);
  if (sni && sni.length !== 0) throw fatal(Alert.decode_error, "server_name response is not empty");
  const groups = exts.get(Ext.supported_groups);
  if (groups) {
    const g = new Reader(groups, "supported_groups");
    const list = g.sub(2, "supported_groups", 2);
    if (list.remaining % 2 !== 0) throw fatal(Alert.decode_error, "supported_groups list has an odd length");
    g.done();
  }
  let alpn: string | null = null;
  const a = exts.get(Ext.alpn);
  if (a) {
    const ar = new Reader(a, "alpn");
    const list = ar.sub(2, "alpn", 1);
    const name = list.vector(1, 1);
    list.done();
    ar.done();
    alpn = new TextDecoder().decode(name);
    if (!alpnOffered.includes(alpn))
      throw fatal(Alert.illegal_parameter, `server selected ALPN "${alpn}" it was not offered`);
  }
  return { alpn };
}

function u16List(data: Uint8Array, what: string): number[] {
  const r = new Reader(data, what);
  const list = r.sub(2, what, 2);
  r.done();
  if (list.remaining % 2 !== 0) throw fatal(Alert.decode_error, `${what} has an odd length`);
  const out: number[] = [];
  while (list.remaining > 0) out.push(list.u16());
  return out;
}

export interface CertificateRequest {
  context: Uint8Array;
  signatureSchemes: number[];
}

export function decodeCertificateRequest(body: Uint8Array): CertificateRequest {
  const r = new Reader(body, "CertificateRequest");
  const context = r.vector(1);
  const exts = parseExtensions(r, "CertificateRequest");
  r.done();
  const sa = exts.get(Ext.signature_algorithms);
  if (!sa) throw fatal(Alert.missing_extension, "CertificateRequest without signature_algorithms");
  return { context, signatureSchemes: u16List(sa, "signature_algorithms") };
}

export function decodeCertificate(body: Uint8Array): { context: Uint8Array; certificates: Uint8Array[] } {
  const r = new Reader(body, "Certificate");
  const context = r.vector(1);
  const list = r.sub(3, "certificate_list");
  r.done();
  const certificates: Uint8Array[] = [];
  while (list.remaining > 0) {
    certificates.push(list.vector(3, 1).slice());
    const exts = parseExtensions(list, "CertificateEntry");
    for (const type of exts.keys()) {
      throw fatal(
        KNOWN_EXTENSIONS.has(type) && type !== Ext.status_request && type !== Ext.signed_certificate_timestamp
          ? Alert.illegal_parameter
          : Alert.unsupported_extension,
        `CertificateEntry carries extension ${type} the client did not offer`,
      );
    }
  }
  return { context, certificates };
}

export function encodeCertificate(context: Uint8Array, chain: readonly Uint8Array[]): Uint8Array {
  const w = new Writer(256);
  w.vector(1, (v) => v.bytes(context));
  w.vector(3, (list) => {
    for (const cert of chain) list.vector(3, (c) => c.bytes(cert)).u16(0);
  });
  return handshakeMessage(HandshakeType.certificate, w.finish());
}

export function decodeCertificateVerify(body: Uint8Array): { scheme: number; signature: Uint8Array } {
  const r = new Reader(body, "CertificateVerify");
  const scheme = r.u16();
  const signature = r.vector(2, 1);
  r.done();
  return { scheme, signature };
}

export function encodeCertificateVerify(scheme: number, signature: Uint8Array): Uint8Array {
  const w = new Writer(signature.length + 8).u16(scheme).vector(2, (v) => v.bytes(signature));
  return handshakeMessage(HandshakeType.certificate_verify, w.finish());
}

/** The content a CertificateVerify signs: 64 spaces, the context string, a zero byte, the transcript hash. */
export function certificateVerifyContent(side: "server" | "client", transcriptHash: Uint8Array): Uint8Array {
  const label = utf8.encode(`TLS 1.3, ${side} CertificateVerify`);
  const out = new Uint8Array(64 + label.length + 1 + transcriptHash.length);
  out.fill(0x20, 0, 64);
  out.set(label, 64);
  out[64 + label.length] = 0;
  out.set(transcriptHash, 64 + label.length + 1);
  return out;
}

export function encodeFinished(verifyData: Uint8Array): Uint8Array {
  return handshakeMessage(HandshakeType.finished, verifyData);
}

/** Validates a NewSessionTicket's structure; the client keeps no tickets. */
export function checkNewSessionTicket(body: Uint8Array): void {
  const r = new Reader(body, "NewSessionTicket");
  r.u32();
  r.u32();
  r.vector(1);
  r.vector(2, 1);
  parseExtensions(r, "NewSessionTicket");
  r.done();
}

export function decodeKeyUpdate(body: Uint8Array): boolean {
  const r = new Reader(body, "KeyUpdate");
  const request = r.u8();
  r.done();
  if (request > 1) throw fatal(Alert.illegal_parameter, `KeyUpdate request_update ${request}`);
  return request === 1;
}

export function encodeKeyUpdate(requestPeer: boolean): Uint8Array {
  return handshakeMessage(HandshakeType.key_update, new Uint8Array([requestPeer ? 1 : 0]));
}
