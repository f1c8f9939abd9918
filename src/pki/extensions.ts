import "reflect-metadata";
import { createHash } from "node:crypto";
import { isIPv4, isIPv6 } from "node:net";
import {
  AuthorityInfoAccessExtension,
  BasicConstraintsExtension,
  CRLDistributionPointsExtension,
  ExtendedKeyUsageExtension,
  Extension,
  KeyUsageFlags,
  KeyUsagesExtension,
} from "@peculiar/x509";
import { MtlsError } from "../errors.js";
import { derOctetString, derSequence, derTlv } from "./der.js";
import type { San } from "./names.js";

/** The DER of one X.509 extension, ready to go into a TBSCertificate. */
export type ExtensionDer = Uint8Array;

export const EKU = {
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
  ocspSigning: "1.3.6.1.5.5.7.3.9",
} as const;

export const KEY_USAGE = KeyUsageFlags;

const der = (ext: Extension): ExtensionDer => new Uint8Array(ext.rawData);

/** RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING's bytes, as hex. */
export function keyIdentifier(spki: Uint8Array): string {
  return createHash("sha1").update(spkiKeyBits(spki)).digest("hex");
}

/** The subjectPublicKey BIT STRING's bytes, read straight from the SPKI DER (SEQ { SEQ alg, BIT STRING }). */
export function spkiKeyBits(spki: Uint8Array): Uint8Array {
  const outer = readHeader(spki, 0, 0x30);
  const alg = readHeader(spki, outer.contentStart, 0x30);
  const bits = readHeader(spki, alg.end, 0x03);
  if (bits.end !== outer.end || outer.end !== spki.length)
    throw new MtlsError("E_BAD_INPUT", "malformed public key");
  return spki.subarray(bits.contentStart + 1, bits.end);
}

function readHeader(buf: Uint8Array, pos: number, tag: number): { contentStart: number; end: number } {
  if (buf[pos] !== tag) throw new MtlsError("E_BAD_INPUT", "malformed public key");
  let len = buf[pos + 1] ?? 0;
  let p = pos + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (buf[p + i] ?? 0);
    p += n;
  }
  if (p + len > buf.length) throw new MtlsError("E_BAD_INPUT", "malformed public key");
  return { contentStart: p, end: p + len };
}

// These depend only on their arguments and are the same for every leaf of a profile: encode once.
const memo = new Map<string, ExtensionDer>();
const once = (key: string, make: () => ExtensionDer): ExtensionDer => {
  let v = memo.get(key);
  if (!v) {
    v = make();
    memo.set(key, v);
  }
  return v;
};

export const basicConstraints = (ca: boolean, pathLen?: number): ExtensionDer =>
  once(`bc:${ca}:${pathLen}`, () => der(new BasicConstraintsExtension(ca, pathLen, true)));

export const keyUsage = (flags: number): ExtensionDer =>
  once(`ku:${flags}`, () => der(new KeyUsagesExtension(flags, true)));

export const extendedKeyUsage = (oids: string[]): ExtensionDer =>
  once(`eku:${oids.join(",")}`, () => der(new ExtendedKeyUsageExtension(oids, false)));

// Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }
const OID_SKI = new Uint8Array([0x06, 0x03, 0x55, 0x1d, 0x0e]);
const OID_AKI = new Uint8Array([0x06, 0x03, 0x55, 0x1d, 0x23]);
const OID_SAN = new Uint8Array([0x06, 0x03, 0x55, 0x1d, 0x11]);
const CRITICAL = new Uint8Array([0x01, 0x01, 0xff]);

export const subjectKeyIdentifier = (spki: Uint8Array): ExtensionDer =>
  derSequence(OID_SKI, derOctetString(derOctetString(Buffer.from(keyIdentifier(spki), "hex"))));

/** AuthorityKeyIdentifier with keyIdentifier [0] only. */
export const authorityKeyIdentifier = (issuerSpki: Uint8Array): ExtensionDer =>
  derSequence(
    OID_AKI,
    derOctetString(derSequence(derTlv(0x80, Buffer.from(keyIdentifier(issuerSpki), "hex")))),
  );

/** GeneralName CHOICE tags (context-specific, primitive): rfc822Name [1], dNSName [2], URI [6], iPAddress [7]. */
const GENERAL_NAME_TAG = { email: 0x81, dns: 0x82, uri: 0x86, ip: 0x87 } as const;

/** SAN is critical only when the subject is empty (RFC 5280 §4.2.1.6). */
export function subjectAltName(sans: San[], subjectEmpty = false): ExtensionDer {
  const names = sans.map((s) =>
    derTlv(GENERAL_NAME_TAG[s.type], s.type === "ip" ? ipBytes(s.value) : Buffer.from(s.value, "ascii")),
  );
  return derSequence(OID_SAN, ...(subjectEmpty ? [CRITICAL] : []), derOctetString(derSequence(...names)));
}

/** An IPv4 or IPv6 address as its 4 or 16 octets. */
export function ipBytes(ip: string): Uint8Array {
  if (isIPv4(ip)) return new Uint8Array(ip.split(".").map(Number));
  if (!isIPv6(ip)) throw new MtlsError("E_BAD_SAN", `invalid IP address "${ip}"`);
  let text = ip;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1]) {
    const [a, b, c, d] = v4[1].split(".").map(Number) as [number, number, number, number];
    text = `${text.slice(0, -v4[1].length)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill("0"), ...t];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = Number.parseInt(g, 16);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  });
  return out;
}

export const crlDistributionPoints = (urls: string[]): ExtensionDer =>
  once(`cdp:${urls.join(" ")}`, () => der(new CRLDistributionPointsExtension(urls)));

export const authorityInfoAccess = (ocsp: string[], caIssuers: string[]): ExtensionDer =>
  once(`aia:${ocsp.join(" ")}|${caIssuers.join(" ")}`, () =>
    der(new AuthorityInfoAccessExtension({ ocsp, caIssuers })),
  );

/** id-pkix-ocsp-nocheck (RFC 6960 §4.2.2.2.1): the OCSP responder's own certificate is not checked. */
export const ocspNoCheck = (): ExtensionDer =>
  der(new Extension("1.3.6.1.5.5.7.48.1.5", false, new Uint8Array([0x05, 0x00])));
