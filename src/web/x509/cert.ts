/**
 * One parsed certificate: the exact bytes that signatures and name chaining need (strict DER walk)
 * and the extensions path validation uses (decoded with @peculiar/asn1-x509).
 */
import { AsnConvert } from "@peculiar/asn1-schema";
import {
  AuthorityKeyIdentifier,
  BasicConstraints,
  ExtendedKeyUsage,
  id_ce_authorityKeyIdentifier,
  id_ce_basicConstraints,
  id_ce_certificatePolicies,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_nameConstraints,
  id_ce_subjectAltName,
  id_ce_subjectKeyIdentifier,
  SubjectKeyIdentifier,
} from "@peculiar/asn1-x509";
import {
  bitStringBytes,
  children,
  expectTag,
  MalformedDer,
  oidToString,
  plain,
  readOnly,
  smallInteger,
  type Tlv,
} from "./der.js";
import { type PublicKeyInfo, parseSpki, readAlgorithm } from "./spki.js";

export interface NameSubtrees {
  dns: string[];
  /** address followed by mask: 8 bytes for IPv4, 32 for IPv6 */
  ip: Uint8Array[];
}

export interface ParsedCertificate {
  der: Uint8Array;
  tbs: Uint8Array;
  signatureAlgorithm: { oid: string; params?: Tlv };
  signature: Uint8Array;
  issuer: Uint8Array;
  subject: Uint8Array;
  spki: Uint8Array;
  key: PublicKeyInfo;
  version: number;
  notBefore: Date;
  notAfter: Date;
  basicConstraints?: { cA: boolean; pathLen?: number };
  /** KeyUsage bits, bit 0 = digitalSignature ... bit 8 = decipherOnly */
  keyUsage?: number;
  extKeyUsage?: string[];
  san?: { dns: string[]; ip: Uint8Array[]; other: number };
  subjectKeyId?: Uint8Array;
  authorityKeyId?: Uint8Array;
  nameConstraints?: { permitted: NameSubtrees; excluded: NameSubtrees };
  /** critical extensions this verifier does not understand (their OIDs) */
  unknownCritical: string[];
}

export const KU_DIGITAL_SIGNATURE = 1 << 0;
export const KU_KEY_CERT_SIGN = 1 << 5;

/** UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ), as RFC 5280 §4.1.2.5 requires them. */
function readTime(tlv: Tlv): Date {
  const text = String.fromCharCode(...tlv.value);
  const utc = tlv.tag === 0x17 ? /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(text) : null;
  const gen = tlv.tag === 0x18 ? /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(text) : null;
  const m = utc ?? gen;
  if (!m) throw new MalformedDer(`bad certificate time "${text}"`);
  const yy = Number(m[1]);
  const year = utc ? (yy >= 50 ? 1900 + yy : 2000 + yy) : yy;
  const [mo, d, h, mi, s] = [m[2], m[3], m[4], m[5], m[6]].map(Number) as [
    number,
    number,
    number,
    number,
    number,
  ];
  const date = new Date(Date.UTC(year, mo - 1, d, h, mi, s));
  if (
    date.getUTCMonth() !== mo - 1 ||
    date.getUTCDate() !== d ||
    h > 23 ||
    mi > 59 ||
    s > 59 ||
    Number.isNaN(date.getTime())
  ) {
    throw new MalformedDer(`bad certificate time "${text}"`);
  }
  if (year < 100) date.setUTCFullYear(year);
  return date;
}

function readKeyUsage(value: Uint8Array): number {
  const bits = readOnly(value, 0x03).value;
  if (bits.length < 1 || (bits[0] as number) > 7) throw new MalformedDer("bad keyUsage");
  let out = 0;
  for (let bit = 0; bit < 9; bit++) {
    const byte = bits[1 + (bit >> 3)];
    if (byte !== undefined && (byte >> (7 - (bit & 7))) & 1) out |= 1 << bit;
  }
  return out;
}

function readSan(value: Uint8Array): { dns: string[]; ip: Uint8Array[]; other: number } {
  const names = children(readOnly(value, 0x30).value);
  if (names.length === 0) throw new MalformedDer("empty subjectAltName");
  const san = { dns: [] as string[], ip: [] as Uint8Array[], other: 0 };
  for (const name of names) {
    if (name.tag === 0x82) {
      if (name.value.some((b) => b > 0x7e || b < 0x21))
        throw new MalformedDer("dNSName with non-printable characters");
      san.dns.push(String.fromCharCode(...name.value));
    } else if (name.tag === 0x87) {
      if (name.value.length !== 4 && name.value.length !== 16)
        throw new MalformedDer("iPAddress of bad length");
      san.ip.push(name.value);
    } else {
      san.other++;
    }
  }
  return san;
}

function readSubtrees(tlv: Tlv | undefined): NameSubtrees {
  const out: NameSubtrees = { dns: [], ip: [] };
  if (!tlv) return out;
  for (const subtree of children(tlv.value)) {
    expectTag(subtree, 0x30);
    const [base, ...bounds] = children(subtree.value);
    if (!base) throw new MalformedDer("empty GeneralSubtree");
    // minimum must be 0 (the default, so absent) and maximum absent (RFC 5280 §4.2.1.10)
    if (bounds.length > 0) throw new MalformedDer("name constraint with minimum/maximum");
    if (base.tag === 0x82) out.dns.push(String.fromCharCode(...base.value));
    else if (base.tag === 0x87 && (base.value.length === 8 || base.value.length === 32))
      out.ip.push(base.value);
    else throw new UnsupportedConstraint();
  }
  return out;
}

/** A name constraint of a form this verifier cannot apply (directoryName, email, URI, ...). */
export class UnsupportedConstraint extends Error {
  override readonly name = "UnsupportedConstraint";
}

const IGNORED_WHEN_CRITICAL = new Set([
  // Policies are not processed (like browsers with anyPolicy acceptable); a critical
  // certificatePolicies extension therefore does not make the certificate unusable.
  id_ce_certificatePolicies,
]);

/** Parses a DER certificate strictly; throws MalformedDer. */
export function parseCertificate(der: Uint8Array): ParsedCertificate {
  const top = children(readOnly(der, 0x30).value);
  const [tbsTlv, algTlv, sigTlv] = top;
  if (!tbsTlv || !algTlv || !sigTlv || top.length !== 3)
    throw new MalformedDer("a Certificate has three parts");
  expectTag(tbsTlv, 0x30);
  expectTag(sigTlv, 0x03);
  const fields = children(tbsTlv.value);
  let i = 0;
  let version = 1;
  if (fields[0]?.tag === 0xa0) {
    version = smallInteger(readOnly((fields[0] as Tlv).value, 0x02).value) + 1;
    if (version < 2 || version > 3) throw new MalformedDer(`unknown certificate version ${version}`);
    i = 1;
  }
  const [serial, innerAlg, issuer, validity, subject, spki, ...rest] = fields.slice(i);
  if (!serial || !innerAlg || !issuer || !validity || !subject || !spki)
    throw new MalformedDer("TBSCertificate too short");
  expectTag(serial, 0x02);
  expectTag(issuer, 0x30);
  expectTag(validity, 0x30);
  expectTag(subject, 0x30);
  expectTag(spki, 0x30);
  const [nb, na, ...more] = children(validity.value);
  if (!nb || !na || more.length) throw new MalformedDer("bad Validity");
  const signatureAlgorithm = readAlgorithm(algTlv);
  readAlgorithm(innerAlg);
  let same = innerAlg.raw.length === algTlv.raw.length;
  for (let k = 0; same && k < algTlv.raw.length; k++) same = innerAlg.raw[k] === algTlv.raw[k];
  if (!same) throw new MalformedDer("signature algorithm inside and outside the TBSCertificate differ");

  const cert: ParsedCertificate = {
    der,
    tbs: tbsTlv.raw,
    signatureAlgorithm,
    signature: bitStringBytes(sigTlv.value),
    issuer: issuer.raw,
    subject: subject.raw,
    spki: spki.raw,
    key: parseSpki(spki.raw),
    version,
    notBefore: readTime(nb),
    notAfter: readTime(na),
    unknownCritical: [],
  };

  let lastTag = 0;
  for (const field of rest) {
    if (field.tag <= lastTag || ![0x81, 0x82, 0xa3].includes(field.tag))
      throw new MalformedDer("bad TBSCertificate field");
    lastTag = field.tag;
    if (field.tag !== 0xa3) continue;
    if (version !== 3) throw new MalformedDer("extensions in a certificate older than v3");
    const extensions = children(readOnly(field.value, 0x30).value);
    if (extensions.length === 0) throw new MalformedDer("empty extensions");
    const seen = new Set<string>();
    for (const ext of extensions) {
      expectTag(ext, 0x30);
      const parts = children(ext.value);
      const [oidTlv] = parts;
      if (!oidTlv) throw new MalformedDer("empty Extension");
      expectTag(oidTlv, 0x06);
      let critical = false;
      let valueTlv = parts[1];
      if (valueTlv?.tag === 0x01) {
        if (valueTlv.value.length !== 1 || valueTlv.value[0] !== 0xff) {
          throw new MalformedDer("critical flag must be TRUE when present (DER)");
        }
        critical = true;
        valueTlv = parts[2];
      }
      if (!valueTlv || parts.length !== (critical ? 3 : 2)) throw new MalformedDer("bad Extension");
      expectTag(valueTlv, 0x04);
      const oid = oidToString(oidTlv.value);
      if (seen.has(oid)) throw new MalformedDer(`extension ${oid} appears twice`);
      seen.add(oid);
      const value = valueTlv.value;
      switch (oid) {
        case id_ce_basicConstraints: {
          const bc = AsnConvert.parse(plain(value), BasicConstraints);
          cert.basicConstraints =
            bc.pathLenConstraint === undefined ? { cA: bc.cA } : { cA: bc.cA, pathLen: bc.pathLenConstraint };
          break;
        }
        case id_ce_keyUsage:
          cert.keyUsage = readKeyUsage(value);
          break;
        case id_ce_extKeyUsage: {
          const eku = AsnConvert.parse(plain(value), ExtendedKeyUsage);
          cert.extKeyUsage = eku.map((o) => String(o));
          break;
        }
        case id_ce_subjectAltName:
          cert.san = readSan(value);
          break;
        case id_ce_subjectKeyIdentifier:
          cert.subjectKeyId = new Uint8Array(AsnConvert.parse(plain(value), SubjectKeyIdentifier).buffer);
          break;
        case id_ce_authorityKeyIdentifier: {
          const aki = AsnConvert.parse(plain(value), AuthorityKeyIdentifier);
          if (aki.keyIdentifier) cert.authorityKeyId = new Uint8Array(aki.keyIdentifier.buffer);
          break;
        }
        case id_ce_nameConstraints: {
          const nc = children(readOnly(value, 0x30).value);
          const permitted = nc.find((t) => t.tag === 0xa0);
          const excluded = nc.find((t) => t.tag === 0xa1);
          if (nc.length === 0 || nc.length !== Number(!!permitted) + Number(!!excluded)) {
            throw new MalformedDer("bad NameConstraints");
          }
          try {
            cert.nameConstraints = { permitted: readSubtrees(permitted), excluded: readSubtrees(excluded) };
          } catch (err) {
            if (!(err instanceof UnsupportedConstraint)) throw err;
            // A constraint we cannot apply: treat the whole extension as not understood.
            cert.unknownCritical.push(`${oid} (directoryName/email/URI name constraints)`);
          }
          break;
        }
        default:
          if (critical && !IGNORED_WHEN_CRITICAL.has(oid)) cert.unknownCritical.push(oid);
      }
    }
  }
  return cert;
}

/** Parses, turning any decoding failure (ours or the ASN.1 library's) into MalformedDer. */
export function parseCertificateStrict(der: Uint8Array): ParsedCertificate {
  try {
    return parseCertificate(der);
  } catch (err) {
    if (err instanceof MalformedDer) throw err;
    throw new MalformedDer(`cannot decode certificate: ${(err as Error).message}`);
  }
}
