/**
 * PKCS#10 certificate requests built in the browser for a key the page cannot read: the key store
 * signs the CertificationRequestInfo, this module only assembles DER. ECDSA P-256 with SHA-256
 * (ecdsa-with-SHA256, parameters absent, signature DER Ecdsa-Sig-Value) as RFC 5758 asks.
 */

import { Attributes, CertificationRequestInfo } from "@peculiar/asn1-csr";
import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import {
  Attribute,
  AttributeTypeAndValue,
  AttributeValue,
  Extension,
  Extensions,
  GeneralName,
  Name,
  RelativeDistinguishedName,
  SubjectAlternativeName,
  SubjectPublicKeyInfo,
} from "@peculiar/asn1-x509";
import { MtlsError } from "../errors.js";
import { derBitString, derPositiveInteger, derSequence } from "../pki/der.js";
import { pemEncode } from "../pki/pem.js";
import { sameBytes } from "./keystore/cert.js";

export interface CsrSans {
  dns?: string[];
  uri?: string[];
  email?: string[];
}

export interface BuildCsrOptions {
  /** Subject CN (UTF8String); the subject is empty without it (the CA names the certificate itself). */
  commonName?: string;
  /** Subject alternative names, requested in a PKCS#9 extensionRequest attribute. */
  sans?: CsrSans;
  /** DER SubjectPublicKeyInfo of the ECDSA P-256 key (KeyInfo.spki). */
  spki: Uint8Array;
  /** Signs with the key: ECDSA P-256 SHA-256, raw r||s as WebCrypto returns it (64 bytes). */
  sign(data: Uint8Array): Promise<Uint8Array>;
}

export interface Csr {
  der: Uint8Array;
  /** "-----BEGIN CERTIFICATE REQUEST-----" ... */
  pem: string;
}

const OID = {
  commonName: "2.5.4.3",
  extensionRequest: "1.2.840.113549.1.9.14",
  subjectAltName: "2.5.29.17",
  ecPublicKey: "1.2.840.10045.2.1",
} as const;

/** DER of the OBJECT IDENTIFIER prime256v1 (1.2.840.10045.3.1.7), the EC key's curve parameter. */
const PRIME256V1_DER = new Uint8Array([0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]);

/** DER of the AlgorithmIdentifier ecdsa-with-SHA256, parameters absent (RFC 5758 §3.2). */
const ECDSA_WITH_SHA256_DER = new Uint8Array([
  0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
]);

const bad = (message: string) => new MtlsError("E_BAD_INPUT", message);
const badSan = (message: string) => new MtlsError("E_BAD_SAN", message);

const LIMIT = { names: 100, chars: 1024, commonName: 64 } as const;

/** IA5String content (dNSName, rfc822Name, URI): printable ASCII only, no spaces. */
function ia5(value: unknown, kind: string): string {
  if (typeof value !== "string" || value.length === 0 || value.length > LIMIT.chars) {
    throw badSan(`a ${kind} name must be a string of 1 to ${LIMIT.chars} characters`);
  }
  if (!/^[\x21-\x7e]+$/.test(value)) {
    throw badSan(
      `the ${kind} name "${value.slice(0, 80)}" must be printable ASCII without spaces (use punycode)`,
    );
  }
  return value;
}

function checkDns(value: string): string {
  const name = value.toLowerCase();
  const label = "(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)";
  const re = new RegExp(`^(?:\\*\\.)?${label}(?:\\.${label})*$`);
  if (name.length > 253 || !re.test(name)) throw badSan(`"${value.slice(0, 80)}" is not a DNS name`);
  return name;
}

function checkEmail(value: string): string {
  if (!/^[^@]+@[^@]+$/.test(value)) throw badSan(`"${value.slice(0, 80)}" is not an email address`);
  return value;
}

function checkUri(value: string): string {
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:/.test(value)) throw badSan(`"${value.slice(0, 80)}" is not a URI`);
  return value;
}

function generalNames(sans: CsrSans | undefined): GeneralName[] {
  if (!sans) return [];
  const names: GeneralName[] = [];
  const each = (list: unknown, kind: string, fn: (v: string) => GeneralName) => {
    if (list === undefined) return;
    if (!Array.isArray(list)) throw badSan(`sans.${kind} must be an array of strings`);
    for (const v of list) names.push(fn(ia5(v, kind)));
  };
  each(sans.dns, "dns", (v) => new GeneralName({ dNSName: checkDns(v) }));
  each(sans.email, "email", (v) => new GeneralName({ rfc822Name: checkEmail(v) }));
  each(sans.uri, "uri", (v) => new GeneralName({ uniformResourceIdentifier: checkUri(v) }));
  if (names.length > LIMIT.names) throw badSan(`at most ${LIMIT.names} subject alternative names`);
  return names;
}

/** The SPKI, checked to be an ECDSA P-256 public key (the only key the signature algorithm fits). */
function p256Spki(spki: Uint8Array): SubjectPublicKeyInfo {
  let parsed: SubjectPublicKeyInfo;
  try {
    parsed = AsnConvert.parse(spki, SubjectPublicKeyInfo);
  } catch (err) {
    throw new MtlsError("E_BAD_INPUT", "spki is not a DER SubjectPublicKeyInfo", { cause: err });
  }
  const params = parsed.algorithm.parameters;
  const curve = params ? new Uint8Array(params) : new Uint8Array(0);
  if (parsed.algorithm.algorithm !== OID.ecPublicKey || !sameBytes(curve, PRIME256V1_DER)) {
    throw new MtlsError("E_WEAK_KEY", "buildCsr signs with ECDSA P-256 only; spki is another key type");
  }
  return parsed;
}

/** ECDSA raw r||s (two 32-byte integers) as DER Ecdsa-Sig-Value. */
function rawToDer(raw: Uint8Array): Uint8Array {
  if (!(raw instanceof Uint8Array) || raw.length !== 64) {
    throw new MtlsError("E_KEYSTORE", "the signer returned no raw 64-byte ECDSA P-256 signature");
  }
  return derSequence(derPositiveInteger(raw.subarray(0, 32)), derPositiveInteger(raw.subarray(32)));
}

/** Builds and signs a PKCS#10 request for `spki`; the signature comes from `sign` (the key store). */
export async function buildCsr(options: BuildCsrOptions): Promise<Csr> {
  const spki = p256Spki(options.spki);
  const rdns: RelativeDistinguishedName[] = [];
  if (options.commonName !== undefined) {
    const cn = options.commonName;
    if (typeof cn !== "string" || cn.length === 0 || cn.length > LIMIT.commonName) {
      throw bad(`commonName must be 1 to ${LIMIT.commonName} characters`);
    }
    rdns.push(
      new RelativeDistinguishedName([
        new AttributeTypeAndValue({ type: OID.commonName, value: new AttributeValue({ utf8String: cn }) }),
      ]),
    );
  }
  const attributes = new Attributes();
  const names = generalNames(options.sans);
  if (names.length) {
    const san = new Extension({
      extnID: OID.subjectAltName,
      critical: false,
      extnValue: new OctetString(AsnConvert.serialize(new SubjectAlternativeName(names))),
    });
    attributes.push(
      new Attribute({ type: OID.extensionRequest, values: [AsnConvert.serialize(new Extensions([san]))] }),
    );
  }
  const info = new CertificationRequestInfo({
    version: 0,
    subject: new Name(rdns),
    subjectPKInfo: spki,
    attributes,
  });
  const infoDer = new Uint8Array(AsnConvert.serialize(info));
  const signature = rawToDer(await options.sign(infoDer));
  const der = derSequence(infoDer, ECDSA_WITH_SHA256_DER, derBitString(signature));
  return { der, pem: pemEncode("CERTIFICATE REQUEST", der) };
}
