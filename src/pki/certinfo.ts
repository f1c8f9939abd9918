import "reflect-metadata";
import { createHash } from "node:crypto";
import {
  AuthorityInfoAccessExtension,
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  CRLDistributionPointsExtension,
  ExtendedKeyUsageExtension,
  KeyUsageFlags,
  KeyUsagesExtension,
  SubjectAlternativeNameExtension,
  SubjectKeyIdentifierExtension,
  X509Certificate,
} from "@peculiar/x509";
import { MtlsError } from "../errors.js";
import { keyTypeOf, publicKeyFromSpki } from "./keys.js";
import type { San } from "./names.js";
import { derBlocks, pemEncode } from "./pem.js";

/** Everything mtls needs to know about a certificate, parsed once. */
export interface CertInfo {
  der: Uint8Array;
  serial: string;
  subject: string;
  /** DER of the subject Name: the issuer name of every certificate this one signs. */
  subjectDer: Uint8Array;
  issuer: string;
  notBefore: Date;
  notAfter: Date;
  sans: San[];
  /** mtls key type, or a description such as "rsa-1024 (too weak)" for keys outside policy. */
  keyType: string;
  spki: Uint8Array;
  /** SHA-256 of the DER, lowercase hex. */
  fingerprint: string;
  isCa: boolean;
  pathLen: number | undefined;
  keyUsage: string[];
  extKeyUsage: string[];
  crlUrls: string[];
  ocspUrls: string[];
  subjectKeyId: string | undefined;
  authorityKeyId: string | undefined;
  selfSigned: boolean;
}

export const sha256Hex = (der: Uint8Array): string => createHash("sha256").update(der).digest("hex");

export const certToPem = (der: Uint8Array): string => pemEncode("CERTIFICATE", der);

const KEY_USAGE_NAMES: [number, string][] = [
  [KeyUsageFlags.digitalSignature, "digitalSignature"],
  [KeyUsageFlags.nonRepudiation, "nonRepudiation"],
  [KeyUsageFlags.keyEncipherment, "keyEncipherment"],
  [KeyUsageFlags.dataEncipherment, "dataEncipherment"],
  [KeyUsageFlags.keyAgreement, "keyAgreement"],
  [KeyUsageFlags.keyCertSign, "keyCertSign"],
  [KeyUsageFlags.cRLSign, "cRLSign"],
  [KeyUsageFlags.encipherOnly, "encipherOnly"],
  [KeyUsageFlags.decipherOnly, "decipherOnly"],
];

const EKU_NAMES: Record<string, string> = {
  "1.3.6.1.5.5.7.3.1": "serverAuth",
  "1.3.6.1.5.5.7.3.2": "clientAuth",
  "1.3.6.1.5.5.7.3.3": "codeSigning",
  "1.3.6.1.5.5.7.3.4": "emailProtection",
  "1.3.6.1.5.5.7.3.8": "timeStamping",
  "1.3.6.1.5.5.7.3.9": "OCSPSigning",
  "2.5.29.37.0": "anyExtendedKeyUsage",
};

function describeKey(spki: Uint8Array): string {
  try {
    return keyTypeOf(publicKeyFromSpki(spki));
  } catch (err) {
    return err instanceof MtlsError ? `unsupported (${err.message})` : "unknown";
  }
}

export function parseCertificate(der: Uint8Array): CertInfo {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(der as BufferSource);
  } catch (err) {
    throw new MtlsError("E_BAD_INPUT", "malformed certificate", { cause: err });
  }
  const spki = new Uint8Array(cert.publicKey.rawData);
  const bc = cert.getExtension(BasicConstraintsExtension);
  const ku = cert.getExtension(KeyUsagesExtension);
  const eku = cert.getExtension(ExtendedKeyUsageExtension);
  const san = cert.getExtension(SubjectAlternativeNameExtension);
  const cdp = cert.getExtension(CRLDistributionPointsExtension);
  const aia = cert.getExtension(AuthorityInfoAccessExtension);
  const ski = cert.getExtension(SubjectKeyIdentifierExtension);
  const aki = cert.getExtension(AuthorityKeyIdentifierExtension);
  const sans: San[] = (san?.names.items ?? []).flatMap((n): San[] => {
    if (n.type === "dns" || n.type === "ip" || n.type === "email") return [{ type: n.type, value: n.value }];
    if (n.type === "url") return [{ type: "uri", value: n.value }];
    return [];
  });
  return {
    der,
    serial: cert.serialNumber.toLowerCase(),
    subject: cert.subject,
    subjectDer: new Uint8Array(cert.subjectName.toArrayBuffer()),
    issuer: cert.issuer,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    sans,
    keyType: describeKey(spki),
    spki,
    fingerprint: sha256Hex(der),
    isCa: bc?.ca ?? false,
    pathLen: bc?.pathLength,
    keyUsage: ku ? KEY_USAGE_NAMES.filter(([flag]) => ku.usages & flag).map(([, n]) => n) : [],
    extKeyUsage: [...(eku?.usages ?? [])].map((oid) => EKU_NAMES[String(oid)] ?? String(oid)),
    crlUrls: [...(cdp?.distributionPoints ?? [])].flatMap((dp) =>
      (dp.distributionPoint?.fullName ?? []).flatMap((gn) =>
        gn.uniformResourceIdentifier ? [gn.uniformResourceIdentifier] : [],
      ),
    ),
    ocspUrls: [...(aia?.ocsp ?? [])].flatMap((gn) => (gn.type === "url" ? [gn.value] : [])),
    subjectKeyId: ski?.keyId,
    authorityKeyId: aki?.keyId,
    selfSigned: cert.subject === cert.issuer,
  };
}

/** Every certificate in PEM or DER input, in order. */
export function parseCertificates(data: Uint8Array | string): CertInfo[] {
  return derBlocks(data, ["CERTIFICATE", "TRUSTED CERTIFICATE"], "certificate").map(parseCertificate);
}
