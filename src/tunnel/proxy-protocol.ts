import { X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import { MtlsError } from "../errors.js";

/**
 * PROXY protocol version 2 (HAProxy's proxy-protocol.txt, section 2.2): a binary header sent to the
 * target before any payload, so the service learns who really connected and over what TLS.
 *
 *   12 bytes  signature \r\n\r\n\0\r\nQUIT\n
 *    1 byte   version (2) << 4 | command (0 LOCAL, 1 PROXY)             → 0x21 for PROXY
 *    1 byte   address family << 4 | transport (AF_INET 1, AF_INET6 2, AF_UNIX 3; STREAM 1)
 *    2 bytes  length of what follows (addresses + TLVs), big endian
 *   addresses: AF_INET 4+4+2+2, AF_INET6 16+16+2+2, AF_UNIX 108+108 bytes (src then dst)
 *   TLVs: type (1), length (2, big endian), value
 *
 * PP2_TYPE_SSL (0x20) holds: client (1 byte of PP2_CLIENT_* bits), verify (4 bytes, 0 = the client
 * certificate verified), then sub-TLVs (version, CN, cipher, signature and key algorithms).
 *
 * The client certificate itself: HAProxy's spec has no TLV for it. ghostunnel's `tls-full` mode
 * (proxy/proxy_protocol.go, --proxy-protocol-mode=tls-full) puts the DER of the leaf in a sub-TLV
 * of PP2_TYPE_SSL with type 0x28, PP2_SUBTYPE_SSL_CLIENT_CERT, as defined by the go-proxyproto
 * library (after PP2_SUBTYPE_SSL_GROUP 0x26 and PP2_SUBTYPE_SSL_SIG_SCHEME 0x27). We follow it, so
 * a backend written for ghostunnel reads our header unchanged. One difference: ghostunnel writes the
 * version as Go names it ("TLS 1.3"); we write OpenSSL's name ("TLSv1.3") as HAProxy does.
 */
export const PP2_SIGNATURE = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);

export const PP2_TYPE = {
  ALPN: 0x01,
  AUTHORITY: 0x02,
  CRC32C: 0x03,
  NOOP: 0x04,
  UNIQUE_ID: 0x05,
  SSL: 0x20,
  NETNS: 0x30,
} as const;

export const PP2_SUBTYPE_SSL = {
  VERSION: 0x21,
  CN: 0x22,
  CIPHER: 0x23,
  SIG_ALG: 0x24,
  KEY_ALG: 0x25,
  /** ghostunnel / go-proxyproto extension: the client certificate, DER. */
  CLIENT_CERT: 0x28,
} as const;

export const PP2_CLIENT = {
  /** The client connected over SSL/TLS. */
  SSL: 0x01,
  /** The client presented a certificate on this connection. */
  CERT_CONN: 0x02,
  /** The client presented a certificate at least once in this TLS session (a resumed one included). */
  CERT_SESS: 0x04,
} as const;

export type ProxyEndpoint =
  | { family: "inet" | "inet6"; address: string; port: number }
  | { family: "unix"; path: string };

export interface ProxySsl {
  /** PP2_CLIENT_* bits. */
  client: number;
  /** 0 when the client certificate was verified. */
  verify: number;
  version?: string;
  cn?: string;
  cipher?: string;
  sigAlg?: string;
  keyAlg?: string;
  clientCert?: Uint8Array;
}

export interface Tlv {
  type: number;
  value: Uint8Array;
}

export interface ProxyHeader {
  command: "proxy" | "local";
  /** Both, or neither (then the family is AF_UNSPEC and the receiver uses the real endpoints). */
  source?: ProxyEndpoint;
  destination?: ProxyEndpoint;
  alpn?: string;
  /** The server name the client asked for (SNI). */
  authority?: string;
  ssl?: ProxySsl;
  /** Other TLVs, written after the known ones (and, when parsing, the ones not understood). */
  tlvs?: Tlv[];
}

const FAM = { unspec: 0x00, inet: 0x10, inet6: 0x20, unix: 0x30 } as const;
const STREAM = 0x01;
const UNIX_PATH_LEN = 108;

/** An endpoint from a socket's address and port; IPv4-mapped IPv6 (::ffff:a.b.c.d) becomes IPv4. */
export function endpointOf(address: string | undefined, port: number | undefined): ProxyEndpoint | undefined {
  if (!address) return undefined;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return { family: "inet", address: mapped[1] as string, port: port ?? 0 };
  const plain = address.replace(/%.*$/, "");
  const v = isIP(plain);
  if (v === 4) return { family: "inet", address: plain, port: port ?? 0 };
  if (v === 6) return { family: "inet6", address: plain, port: port ?? 0 };
  return undefined;
}

export function buildProxyHeaderV2(h: ProxyHeader): Buffer {
  let src = h.source;
  let dst = h.destination;
  let family: number = FAM.unspec;
  let addr = Buffer.alloc(0);
  if (h.command === "proxy" && src && dst) {
    if (src.family === "unix" || dst.family === "unix") {
      if (src.family === "unix" && dst.family === "unix") {
        family = FAM.unix;
        addr = Buffer.concat([unixPath(src.path), unixPath(dst.path)]);
      }
    } else {
      // One IPv4 and one IPv6 end: both as IPv6 (IPv4-mapped).
      if (src.family !== dst.family) {
        src = asV6(src);
        dst = asV6(dst);
      }
      const s = src as { family: "inet" | "inet6"; address: string; port: number };
      const d = dst as { family: "inet" | "inet6"; address: string; port: number };
      const bytes = s.family === "inet" ? ipv4Bytes : ipv6Bytes;
      family = s.family === "inet" ? FAM.inet : FAM.inet6;
      addr = Buffer.concat([bytes(s.address), bytes(d.address), u16(s.port), u16(d.port)]);
    }
  }
  const tlvs: Buffer[] = [];
  if (h.alpn) tlvs.push(tlv(PP2_TYPE.ALPN, Buffer.from(h.alpn)));
  if (h.authority) tlvs.push(tlv(PP2_TYPE.AUTHORITY, Buffer.from(h.authority)));
  if (h.ssl) {
    const s = h.ssl;
    const head = Buffer.alloc(5);
    head.writeUInt8(s.client & 0xff, 0);
    head.writeUInt32BE(s.verify >>> 0, 1);
    const subs: Buffer[] = [head];
    if (s.version) subs.push(tlv(PP2_SUBTYPE_SSL.VERSION, Buffer.from(s.version)));
    if (s.cn) subs.push(tlv(PP2_SUBTYPE_SSL.CN, Buffer.from(s.cn)));
    if (s.cipher) subs.push(tlv(PP2_SUBTYPE_SSL.CIPHER, Buffer.from(s.cipher)));
    if (s.sigAlg) subs.push(tlv(PP2_SUBTYPE_SSL.SIG_ALG, Buffer.from(s.sigAlg)));
    if (s.keyAlg) subs.push(tlv(PP2_SUBTYPE_SSL.KEY_ALG, Buffer.from(s.keyAlg)));
    if (s.clientCert) subs.push(tlv(PP2_SUBTYPE_SSL.CLIENT_CERT, Buffer.from(s.clientCert)));
    tlvs.push(tlv(PP2_TYPE.SSL, Buffer.concat(subs)));
  }
  for (const t of h.tlvs ?? []) tlvs.push(tlv(t.type, Buffer.from(t.value)));
  const body = Buffer.concat([addr, ...tlvs]);
  if (body.length > 0xffff) {
    throw new MtlsError("E_BAD_INPUT", `PROXY protocol header too long (${body.length} bytes)`);
  }
  const fixed = Buffer.alloc(4);
  fixed.writeUInt8(h.command === "proxy" ? 0x21 : 0x20, 0);
  fixed.writeUInt8(family === FAM.unspec ? 0x00 : family | STREAM, 1);
  fixed.writeUInt16BE(body.length, 2);
  return Buffer.concat([PP2_SIGNATURE, fixed, body]);
}

/**
 * Parses a PROXY v2 header at the start of `buf`. Returns undefined while `buf` is too short to
 * hold the whole header; throws E_BAD_INPUT when it is not one.
 */
export function parseProxyHeaderV2(buf: Uint8Array): { header: ProxyHeader; length: number } | undefined {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const bad = (why: string): never => {
    throw new MtlsError("E_BAD_INPUT", `not a PROXY protocol v2 header: ${why}`);
  };
  const sigLen = Math.min(b.length, PP2_SIGNATURE.length);
  if (!b.subarray(0, sigLen).equals(PP2_SIGNATURE.subarray(0, sigLen))) bad("bad signature");
  if (b.length < 16) return undefined;
  const verCmd = b.readUInt8(12);
  if (verCmd >> 4 !== 2) bad(`version ${verCmd >> 4}`);
  const cmd = verCmd & 0x0f;
  if (cmd > 1) bad(`command ${cmd}`);
  const famProto = b.readUInt8(13);
  const len = b.readUInt16BE(14);
  if (b.length < 16 + len) return undefined;
  const body = b.subarray(16, 16 + len);
  const header: ProxyHeader = { command: cmd === 1 ? "proxy" : "local" };
  const fam = famProto & 0xf0;
  let off = 0;
  if (fam === FAM.inet) {
    if (body.length < 12) bad("short AF_INET addresses");
    header.source = {
      family: "inet",
      address: [...body.subarray(0, 4)].join("."),
      port: body.readUInt16BE(8),
    };
    header.destination = {
      family: "inet",
      address: [...body.subarray(4, 8)].join("."),
      port: body.readUInt16BE(10),
    };
    off = 12;
  } else if (fam === FAM.inet6) {
    if (body.length < 36) bad("short AF_INET6 addresses");
    header.source = { family: "inet6", address: ipv6Text(body.subarray(0, 16)), port: body.readUInt16BE(32) };
    header.destination = {
      family: "inet6",
      address: ipv6Text(body.subarray(16, 32)),
      port: body.readUInt16BE(34),
    };
    off = 36;
  } else if (fam === FAM.unix) {
    if (body.length < 2 * UNIX_PATH_LEN) bad("short AF_UNIX addresses");
    header.source = { family: "unix", path: cString(body.subarray(0, UNIX_PATH_LEN)) };
    header.destination = { family: "unix", path: cString(body.subarray(UNIX_PATH_LEN, 2 * UNIX_PATH_LEN)) };
    off = 2 * UNIX_PATH_LEN;
  } else if (fam !== FAM.unspec) {
    bad(`address family 0x${fam.toString(16)}`);
  }
  for (const t of splitTlvs(body.subarray(off), bad)) {
    if (t.type === PP2_TYPE.ALPN) header.alpn = Buffer.from(t.value).toString();
    else if (t.type === PP2_TYPE.AUTHORITY) header.authority = Buffer.from(t.value).toString();
    else if (t.type === PP2_TYPE.SSL) header.ssl = parseSsl(Buffer.from(t.value), bad);
    else {
      header.tlvs ??= [];
      header.tlvs.push(t);
    }
  }
  return { header, length: 16 + len };
}

function parseSsl(v: Buffer, bad: (why: string) => never): ProxySsl {
  if (v.length < 5) bad("short PP2_TYPE_SSL");
  const ssl: ProxySsl = { client: v.readUInt8(0), verify: v.readUInt32BE(1) };
  for (const t of splitTlvs(v.subarray(5), bad)) {
    const text = () => Buffer.from(t.value).toString();
    if (t.type === PP2_SUBTYPE_SSL.VERSION) ssl.version = text();
    else if (t.type === PP2_SUBTYPE_SSL.CN) ssl.cn = text();
    else if (t.type === PP2_SUBTYPE_SSL.CIPHER) ssl.cipher = text();
    else if (t.type === PP2_SUBTYPE_SSL.SIG_ALG) ssl.sigAlg = text();
    else if (t.type === PP2_SUBTYPE_SSL.KEY_ALG) ssl.keyAlg = text();
    else if (t.type === PP2_SUBTYPE_SSL.CLIENT_CERT) ssl.clientCert = new Uint8Array(t.value);
  }
  return ssl;
}

function splitTlvs(b: Buffer, bad: (why: string) => never): Tlv[] {
  const out: Tlv[] = [];
  let off = 0;
  while (off < b.length) {
    if (off + 3 > b.length) bad("truncated TLV");
    const type = b.readUInt8(off);
    const len = b.readUInt16BE(off + 1);
    if (off + 3 + len > b.length) bad(`TLV 0x${type.toString(16)} overruns the header`);
    out.push({ type, value: new Uint8Array(b.subarray(off + 3, off + 3 + len)) });
    off += 3 + len;
  }
  return out;
}

function tlv(type: number, value: Buffer): Buffer {
  if (value.length > 0xffff)
    throw new MtlsError("E_BAD_INPUT", `PROXY protocol TLV 0x${type.toString(16)} too long`);
  const h = Buffer.alloc(3);
  h.writeUInt8(type, 0);
  h.writeUInt16BE(value.length, 1);
  return Buffer.concat([h, value]);
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n & 0xffff, 0);
  return b;
}

function unixPath(path: string): Buffer {
  const b = Buffer.alloc(UNIX_PATH_LEN);
  const p = Buffer.from(path);
  if (p.length >= UNIX_PATH_LEN) throw new MtlsError("E_BAD_INPUT", `Unix socket path too long: ${path}`);
  p.copy(b);
  return b;
}

function cString(b: Buffer): string {
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString();
}

function asV6(e: ProxyEndpoint): ProxyEndpoint {
  return e.family === "inet" ? { family: "inet6", address: `::ffff:${e.address}`, port: e.port } : e;
}

function ipv4Bytes(address: string): Buffer {
  if (isIP(address) !== 4) throw new MtlsError("E_BAD_INPUT", `not an IPv4 address: ${address}`);
  return Buffer.from(address.split(".").map(Number));
}

/** 16 bytes of an IPv6 address in any textual form (with "::", an IPv4 tail or a zone). */
export function ipv6Bytes(text: string): Buffer {
  const address = text.replace(/%.*$/, "");
  if (isIP(address) !== 6) throw new MtlsError("E_BAD_INPUT", `not an IPv6 address: ${text}`);
  let groups: number[] = [];
  const parseGroups = (part: string): number[] => {
    if (part === "") return [];
    return part.split(":").flatMap((g) => {
      if (g.includes(".")) {
        const [a, b, c, d] = g.split(".").map(Number) as [number, number, number, number];
        return [(a << 8) | b, (c << 8) | d];
      }
      return [Number.parseInt(g, 16)];
    });
  };
  const dbl = address.indexOf("::");
  if (dbl >= 0) {
    const head = parseGroups(address.slice(0, dbl));
    const tail = parseGroups(address.slice(dbl + 2));
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    groups = parseGroups(address);
  }
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => {
    b.writeUInt16BE(g, i * 2);
  });
  return b;
}

/** The RFC 5952 text of 16 address bytes (longest run of zero groups as "::", IPv4-mapped as ::ffff:a.b.c.d). */
export function ipv6Text(b: Uint8Array): string {
  const buf = Buffer.from(b);
  if (buf.subarray(0, 10).every((x) => x === 0) && buf.readUInt16BE(10) === 0xffff) {
    return `::ffff:${[...buf.subarray(12)].join(".")}`;
  }
  const groups = Array.from({ length: 8 }, (_, i) => buf.readUInt16BE(i * 2));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

/** HAProxy's names for the client certificate's algorithms: "ecdsa-with-SHA256", "EC256", "RSA2048". */
export function certificateAlgorithms(der: Uint8Array): { sigAlg?: string; keyAlg?: string } {
  const out: { sigAlg?: string; keyAlg?: string } = {};
  const oid = signatureAlgorithmOid(der);
  if (oid) out.sigAlg = SIG_ALG_NAMES[oid] ?? oid;
  try {
    const key = new X509Certificate(der).publicKey;
    const d = key.asymmetricKeyDetails;
    if (key.asymmetricKeyType === "ec") {
      const bits = { prime256v1: 256, secp384r1: 384, secp521r1: 521 }[d?.namedCurve ?? ""];
      out.keyAlg = `EC${bits ?? ""}`;
    } else if (key.asymmetricKeyType === "rsa" || key.asymmetricKeyType === "rsa-pss") {
      out.keyAlg = `RSA${d?.modulusLength ?? ""}`;
    } else if (key.asymmetricKeyType) {
      out.keyAlg = key.asymmetricKeyType.toUpperCase();
    }
  } catch {
    // Unparseable key: leave it out.
  }
  return out;
}

const SIG_ALG_NAMES: Record<string, string> = {
  "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
  "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
  "1.2.840.10045.4.3.4": "ecdsa-with-SHA512",
  "1.2.840.113549.1.1.11": "RSA-SHA256",
  "1.2.840.113549.1.1.12": "RSA-SHA384",
  "1.2.840.113549.1.1.13": "RSA-SHA512",
  "1.2.840.113549.1.1.10": "RSASSA-PSS",
  "1.3.101.112": "ED25519",
  "1.3.101.113": "ED448",
};

/** Certificate ::= SEQUENCE { tbs SEQUENCE, signatureAlgorithm SEQUENCE { OID, ... }, sig BIT STRING } */
function signatureAlgorithmOid(der: Uint8Array): string | undefined {
  try {
    const outer = readTlv(der, 0);
    if (outer.tag !== 0x30) return undefined;
    const tbs = readTlv(der, outer.contentStart);
    const alg = readTlv(der, tbs.end);
    if (alg.tag !== 0x30) return undefined;
    const oid = readTlv(der, alg.contentStart);
    if (oid.tag !== 0x06) return undefined;
    return decodeOid(der.subarray(oid.contentStart, oid.end));
  } catch {
    return undefined;
  }
}

function readTlv(b: Uint8Array, off: number): { tag: number; contentStart: number; end: number } {
  const tag = b[off] as number;
  let len = b[off + 1] as number;
  let start = off + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new Error("bad DER length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (b[start + i] as number);
    start += n;
  }
  if (start + len > b.length) throw new Error("DER overrun");
  return { tag, contentStart: start, end: start + len };
}

function decodeOid(b: Uint8Array): string {
  const parts: number[] = [];
  let v = 0;
  for (const byte of b) {
    v = v * 128 + (byte & 0x7f);
    if (!(byte & 0x80)) {
      parts.push(v);
      v = 0;
    }
  }
  const first = parts.shift() ?? 0;
  const head = first < 80 ? [Math.floor(first / 40), first % 40] : [2, first - 80];
  return [...head, ...parts].join(".");
}
